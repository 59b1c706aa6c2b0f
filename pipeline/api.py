"""What scripts and notebooks call, re-exported at the package top (``pipeline.load_supernet`` and friends).

Each function is a thin, typed entry to the layer that owns the work: the supernet and model directory
formats (``pipeline.model``), training (``pipeline.training``), the search and the whole pipeline
(``pipeline.run``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.arch import Architecture
from pipeline.core.task import Task
from pipeline.model import subnet_dir, supernet_dir
from pipeline.model.static import StaticViT
from pipeline.model.supernet import Supernet


def load_supernet(path: str | Path) -> Supernet:
    """A trained supernet from its directory (local path or URI), in eval mode; ``supernet(images, arch)``
    gives logits and ``supernet.extract(arch)`` the standalone model with inherited weights."""
    return supernet_dir.load_supernet(path)[0]


def load_model(path: str | Path) -> StaticViT:
    """A standalone model from its directory (written by export, search or run), in eval mode."""
    return subnet_dir.load_model(path)[0]


def export_model(
    supernet: Supernet,
    arch: Architecture,
    out: str | Path,
    task: Task,
    supernet_path: str = "",
    search_row: dict[str, Any] | None = None,
    overwrite: bool = False,
    onnx: bool = False,
) -> Path:
    """Write ``arch`` with its weights inherited from ``supernet`` as a standalone model directory at ``out``,
    with the task's normalisation and where it came from (the supernet, and the search row if any); with
    ``onnx``, also ``model.onnx``."""
    metadata = {
        "source": "autoformer export (inherited supernet weights, no retraining)",
        "supernet": supernet_path,
        "task": task.to_dict(),
        "search": {k: search_row[k] for k in ("top1", "top5", "loss", "latency_ms", "generation", "origin")}
        if search_row
        else None,
    }
    normalization = {"mean": task.data["mean"], "std": task.data["std"]}
    return subnet_dir.save_model(
        supernet.extract(arch), out, normalization=normalization, metadata=metadata, overwrite=overwrite, onnx=onnx
    )
