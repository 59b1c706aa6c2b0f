"""Standalone model directories and timm conversion."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import space_for_model_tests

from pipeline.core.arch import Architecture
from pipeline.core.complexity import count_macs, count_params
from pipeline.core.sampling import sample_architecture
from pipeline.core.space import load_space
from pipeline.model import Supernet, subnet_dir
from pipeline.model.subnet_dir import load_model, save_model
from pipeline.model.timm_convert import to_timm
from pipeline.shared.errors import UserError


def _model(name: str = "digits", seed: int = 0):
    space = space_for_model_tests(name)
    arch = sample_architecture(space, random.Random(seed))
    return space, Supernet(space).extract(arch).eval()


def test_save_load_round_trip(tmp_path: Path) -> None:
    space, model = _model()
    norm = {"mean": [0.25], "std": [0.3]}
    path = save_model(model, tmp_path / "m", normalization=norm, metadata={"search_top1": 0.9})
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["architecture"] == model.arch.to_dict()
    assert config["fixed"] == space.fixed_parts()
    assert (config["image_size"], config["num_classes"]) == (8, 10)
    assert config["normalization"] == norm and config["metadata"] == {"search_top1": 0.9}
    assert (config["params"], config["macs"]) == (count_params(model.arch, space), count_macs(model.arch, space))
    loaded, cfg = load_model(path)
    images = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    assert cfg["architecture"] == model.arch


def test_load_needs_no_supernet_and_no_ray(tmp_path: Path) -> None:
    _, model = _model()
    save_model(model, tmp_path / "m")
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import torch\n"
        "from pipeline.model.subnet_dir import load_model\n"
        f"m, c = load_model({str(tmp_path / 'm')!r})\n"
        "print(m(torch.zeros(1, 1, 8, 8)).shape[-1], 'pipeline.model.supernet' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["10", "False"]


def test_existing_directory_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    _, model = _model(seed=0)
    _, other = _model(seed=1)
    save_model(model, tmp_path / "m")
    with pytest.raises(UserError, match="already exists"):
        save_model(other, tmp_path / "m")
    save_model(other, tmp_path / "m", overwrite=True)
    assert load_model(tmp_path / "m")[1]["architecture"] == other.arch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary directories left behind


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, model = _model()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(subnet_dir, "save_file", broken)
    with pytest.raises(OSError):
        save_model(model, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda c: c.pop("fixed"), "'fixed' must have exactly the keys"),
        (lambda c: c.update(format_version=99), "format_version 99"),
        (lambda c: c.update(normalization={"mean": [0.5, 0.5], "std": [1, 1]}), "one number per input channel"),
        (lambda c: c["architecture"].update(depth=0), "'depth': value 0"),
    ],
)
def test_bad_model_directory_errors(tmp_path: Path, edit, message: str) -> None:
    _, model = _model()
    path = save_model(model, tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=message):
        load_model(path)
    with pytest.raises(UserError, match="no config.json"):
        load_model(tmp_path / "nowhere")


def test_homogeneous_architecture_converts_to_timm() -> None:
    space = load_space("autoformer-tiny").with_overrides(image_size=32, num_classes=10)
    space = type(space)(**{**space.__dict__, "relative_position": False})
    net = Supernet(space).eval()
    for arch in (Architecture(192, 12, [3] * 12, [4.0] * 12), Architecture(216, 13, [4] * 13, [3.5] * 13)):
        if arch.num_heads[0] * 64 != arch.embed_dim:
            continue
        static = net.extract(arch).eval()
        vit = to_timm(static).eval()
        images = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert (static(images) - vit(images)).abs().max().item() <= 1e-6
        assert sum(p.numel() for p in vit.parameters()) == count_params(arch, space)


def test_timm_conversion_refuses_what_timm_cannot_express() -> None:
    space = space_for_model_tests("autoformer-tiny")
    net = Supernet(space)
    with pytest.raises(UserError, match="layers differ.*relative position"):
        to_timm(net.extract(Architecture(192, 12, [3] * 11 + [4], [4.0] * 12)))
    with pytest.raises(UserError, match="Q-K-V dim 256 differs from embed dim 192"):
        to_timm(net.extract(Architecture(192, 12, [4] * 12, [4.0] * 12)))
