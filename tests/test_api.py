"""The public API at the package top, as a script or notebook uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

import pipeline


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
