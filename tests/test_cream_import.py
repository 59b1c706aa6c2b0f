"""Importing the AutoFormer reference supernets: logit-exact against the reference forward, for many
architectures of each paper space; the options survive extraction and export; bad checkpoints fail cleanly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from cream_reference import REFERENCE_SIZES, reference_logits, to_reference_layout

from pipeline.cli.main import main
from pipeline.core.sampling import largest_architecture, sample_architecture, smallest_architecture
from pipeline.core.space import load_space
from pipeline.model.cream import reference_space
from pipeline.model.subnet_dir import load_model
from pipeline.model.supernet import Supernet
from pipeline.model.supernet_dir import load_supernet
from pipeline.model.timm_convert import to_timm

PAPER_SPACES = ["autoformer-tiny", "autoformer-small", "autoformer-base"]
SIZE = 32  # a 2 x 2 grid keeps the base supernet's forward cheap; the slicing does not depend on it


def _space(name: str):
    return load_space(name).with_overrides(image_size=SIZE)


def _checkpoint(name: str, tmp_path: Path, wrap: bool = True) -> tuple[Path, dict, Supernet]:
    torch.manual_seed(0)
    original = Supernet(reference_space(_space(name))).eval()
    ref = to_reference_layout(original.state_dict(), original.space, REFERENCE_SIZES[name])
    path = tmp_path / f"{name}.pth"
    torch.save({"model": ref} if wrap else ref, path)
    return path, ref, original


def _import(path: Path, name: str, out: Path) -> int:
    return main(["import", "cream", str(path), "--space", str(_space_file(name, out.parent)), "--out", str(out)])


def _space_file(name: str, where: Path) -> Path:
    """The space at 32 px as a file (the CLI takes a name or a path)."""
    import yaml

    data = {k: v for k, v in _space(name).to_dict().items() if k != "name"}
    path = where / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", PAPER_SPACES)
def test_imported_supernet_gives_the_reference_logits(name: str, tmp_path: Path) -> None:
    path, ref, original = _checkpoint(name, tmp_path)
    assert _import(path, name, tmp_path / "imported") == 0
    supernet, config = load_supernet(tmp_path / "imported")
    assert config["training_data"] == "imagenet-1k-train" and config["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert (supernet.space.pooling, supernet.space.layer_norm_eps, supernet.space.qkv_bias_layout) == (
        "mean",
        1e-5,
        "prefix",
    )
    for key, value in original.state_dict().items():
        assert torch.equal(supernet.state_dict()[key], value), key
    space = supernet.space
    rng = random.Random(len(name))
    archs = [smallest_architecture(space), largest_architecture(space)] + [
        sample_architecture(space, rng) for _ in range(6)
    ]
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        for arch in archs:
            expected = reference_logits(ref, arch, images, space)
            assert (supernet(images, arch) - expected).abs().max().item() <= 1e-5, arch.key
            assert (supernet.extract(arch).eval()(images) - expected).abs().max().item() <= 1e-5, arch.key


def test_export_of_an_imported_supernet_keeps_the_options_and_the_logits(tmp_path: Path) -> None:
    name = "autoformer-tiny"
    path, ref, _ = _checkpoint(name, tmp_path)
    assert _import(path, name, tmp_path / "imported") == 0
    supernet, _ = load_supernet(tmp_path / "imported")
    arch = sample_architecture(supernet.space, random.Random(3))
    assert (
        main(
            [
                "export",
                "--supernet",
                str(tmp_path / "imported"),
                "--arch",
                _arch_file(arch, tmp_path),
                "--task",
                "imagenet-tiny",
                "--set",
                f"data.image_size={SIZE}",
                "--set",
                "data.root=/nonexistent",
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 0
    )
    model, config = load_model(tmp_path / "m")
    assert config["fixed"]["pooling"] == "mean" and config["fixed"]["layer_norm_eps"] == 1e-5
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert (model(images) - reference_logits(ref, arch, images, supernet.space)).abs().max().item() <= 1e-5


def _arch_file(arch, where: Path) -> str:
    path = where / "arch.json"
    path.write_text(arch.to_json())
    return str(path)


def test_bare_state_dict_imports_too(tmp_path: Path) -> None:
    path, _, original = _checkpoint("autoformer-tiny", tmp_path, wrap=False)
    assert _import(path, "autoformer-tiny", tmp_path / "imported") == 0
    assert torch.equal(load_supernet(tmp_path / "imported")[0].head.weight, original.head.weight)


def test_pooling_and_eps_options_convert_to_timm() -> None:
    space = load_space("digits")
    space = type(space).from_dict(
        {**space.to_dict(), "relative_position": False, "pooling": "mean", "layer_norm_eps": 1e-5}
    )
    arch = largest_architecture(space)
    arch = type(arch)(arch.embed_dim, arch.depth, (arch.embed_dim // space.head_dim,) * arch.depth, (2.0,) * arch.depth)
    static = Supernet(space).extract(arch).eval()
    images = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(to_timm(static).eval()(images), static(images), atol=1e-5)


def _fails(capsys, path: Path, out: Path, needle: str, name: str = "autoformer-tiny") -> None:
    assert _import(path, name, out) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_bad_checkpoints_fail_with_one_line_and_write_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "imported"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    _fails(capsys, junk, out, "is not a PyTorch checkpoint")

    path, ref, _ = _checkpoint("autoformer-tiny", tmp_path)
    missing = dict(ref)
    del missing["blocks.3.fc1.weight"]
    torch.save({"model": missing}, tmp_path / "missing.pth")
    _fails(capsys, tmp_path / "missing.pth", out, "key 'blocks.3.fc1.weight' is missing")

    torch.save({"model": {**ref, "blocks.0.attn.surprise": torch.zeros(1)}}, tmp_path / "unexpected.pth")
    _fails(capsys, tmp_path / "unexpected.pth", out, "unexpected key 'blocks.0.attn.surprise'")

    small = {**ref, "blocks.0.fc1.weight": torch.zeros(512, 256)}  # narrower than the space's 960-wide MLP
    torch.save({"model": small}, tmp_path / "small.pth")
    _fails(capsys, tmp_path / "small.pth", out, "key 'blocks.0.fc1.weight' has shape (512, 256)")

    torch.save({"model": ref, "extra": Path("needs-code")}, tmp_path / "code.pth")
    _fails(capsys, tmp_path / "code.pth", out, "needs code to load")


def test_published_architectures_have_the_papers_parameter_counts(capsys) -> None:
    for name, params in (("autoformer-t", 5_867_944), ("autoformer-s", 22_891_432), ("autoformer-b", 53_691_688)):
        assert main(["arch", "show", name, "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["params"] == info["published_params"] == params
        assert info["paper_macs"] < info["macs"]
