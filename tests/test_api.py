"""The public API at the package top, as a script or notebook uses it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import pipeline
import pipeline.model
from pipeline.shared.errors import UserError


def test_import_pipeline_loads_neither_torch_nor_ray() -> None:
    code = "import sys, pipeline; print(pipeline.__version__, 'torch' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1:] == ["False", "False"]


def test_load_supernet_export_and_load_model(digits_supernet: Path, tmp_path: Path) -> None:
    supernet = pipeline.load_supernet(digits_supernet)
    assert isinstance(supernet, pipeline.model.Supernet) and not supernet.training
    arch = pipeline.Architecture.from_dict(
        {"embed_dim": 64, "depth": 3, "num_heads": [4, 4, 2], "mlp_ratio": [2, 2, 2]}
    )
    images = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        logits = supernet(images, arch)
    path = pipeline.export_model(
        supernet, arch, tmp_path / "m", pipeline.load_task("digits"), supernet_path=str(digits_supernet)
    )
    model = pipeline.load_model(path)
    assert model.arch == arch
    with torch.no_grad():
        assert torch.allclose(model(images), logits, atol=1e-5)


def test_every_public_name_resolves() -> None:
    for name in pipeline.__all__:
        assert getattr(pipeline, name) is not None


# ---- wrong objects (issue 29, item 8): one TypeError or UserError naming the argument, nothing written ----------

ARCH = {"embed_dim": 64, "depth": 3, "num_heads": [4, 4, 2], "mlp_ratio": [2, 2, 2]}


def _supernet() -> pipeline.model.Supernet:
    return pipeline.model.Supernet(pipeline.load_space("digits")).eval()


@pytest.mark.parametrize(
    "argument,value,message",
    [
        (
            "supernet",
            "runs/digits-supernet/supernet",
            "supernet must be a Supernet (from pipeline.load_supernet), not str",
        ),
        ("supernet", {"space": "digits"}, "supernet must be a Supernet (from pipeline.load_supernet), not dict"),
        ("arch", ARCH, "arch must be an Architecture (pipeline.Architecture.from_dict(genes)), not dict"),
        ("task", "digits", "task must be a Task (from pipeline.load_task), not str"),
        ("out", None, "out must be a path (str or pathlib.Path) to the model directory to write, not NoneType"),
        ("search_row", {"top1": 0.5}, "search_row lacks 'top5'"),
    ],
)
def test_export_model_names_a_wrong_argument(tmp_path: Path, argument: str, value: object, message: str) -> None:
    arguments = {
        "supernet": _supernet(),
        "arch": pipeline.Architecture.from_dict(ARCH),
        "out": tmp_path / "m",
        "task": pipeline.load_task("digits"),
        argument: value,
    }
    with pytest.raises((TypeError, ValueError)) as info:
        pipeline.export_model(**arguments)
    assert str(info.value).startswith(f"export_model: {message}")
    assert list(tmp_path.iterdir()) == []


def test_loaders_take_paths_only(digits_supernet: Path) -> None:
    with pytest.raises(TypeError, match=r"^load_supernet: path must be a path \(str or pathlib.Path\) to a supernet"):
        pipeline.load_supernet(_supernet())
    with pytest.raises(TypeError, match=r"^load_model: path must be a path .* not dict$"):
        pipeline.load_model({"path": str(digits_supernet)})


def test_a_dict_where_an_architecture_goes_is_a_type_error() -> None:
    supernet = _supernet()
    with pytest.raises(
        TypeError, match=r"^arch must be an Architecture \(pipeline.Architecture.from_dict\(genes\)\), not dict$"
    ):
        supernet(torch.randn(2, 1, 8, 8), ARCH)
    with pytest.raises(TypeError, match="arch must be an Architecture"):
        supernet.extract(ARCH)


@pytest.mark.parametrize(
    "images,error,message",
    [
        (torch.randn(2, 1, 16, 16), UserError, "images are 16x16 px; this model takes 8x8"),
        (torch.randn(2, 1, 8, 12), UserError, "images are 8x12 px; this model takes 8x8"),
        (torch.randn(2, 3, 8, 8), UserError, "images have 3 channels; this model takes 1"),
        (torch.randn(1, 8, 8), UserError, r"images must be a batch of shape \(N, C, H, W\), got shape \(1, 8, 8\)"),
        ([[0.0] * 8] * 8, TypeError, r"images must be a torch.Tensor of shape \(N, 1, 8, 8\), not list"),
    ],
)
def test_images_of_another_size_name_both_sizes(images: object, error: type, message: str) -> None:
    supernet = _supernet()
    arch = pipeline.Architecture.from_dict(ARCH)
    model = supernet.extract(arch)
    for call in (lambda: supernet(images, arch), lambda: model(images)):
        with pytest.raises(error, match=f"^{message}$"):
            call()


def test_the_image_check_costs_about_a_microsecond() -> None:
    """It runs on every forward: a shape comparison, never anything that touches the data."""
    from pipeline.model.layers import check_images

    images = torch.randn(64, 3, 224, 224)
    start = time.perf_counter()
    for _ in range(2000):
        check_images(images, 3, 224)
    assert (time.perf_counter() - start) / 2000 < 50e-6  # ~1.5 us measured on the 2-core test machine


def test_overrides_as_one_string_are_refused_not_applied_character_by_character() -> None:
    with pytest.raises(
        TypeError, match=r"^load_task: overrides must be a list of 'section.key=value' strings, not str"
    ):
        pipeline.load_task("digits", "train.epochs=3")
    with pytest.raises(TypeError, match=r"^Task.with_overrides: .* not str; write \['train.epochs=3'\]$"):
        pipeline.load_task("digits").with_overrides("train.epochs=3")
    assert pipeline.load_task("digits", ["train.epochs=3"]).train.epochs == 3


@pytest.mark.parametrize("function", ["train_supernet", "search_supernet", "run_pipeline"])
def test_a_task_name_where_a_task_goes_is_a_type_error(function: str, tmp_path: Path) -> None:
    arguments = ("digits", str(tmp_path)) if function == "search_supernet" else ("digits",)
    with pytest.raises(TypeError, match=rf"^{function}: task must be a Task \(from pipeline.load_task\), not str$"):
        getattr(pipeline, function)(*arguments)
    assert list(tmp_path.iterdir()) == []
