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
from pipeline.shared.arguments import require_path, require_type

SUPERNET = "a Supernet (from pipeline.load_supernet)"
ARCHITECTURE = "an Architecture (pipeline.Architecture.from_dict(genes))"
TASK = "a Task (from pipeline.load_task)"
SEARCH_KEYS = ("top1", "top5", "loss", "latency_ms", "generation", "origin")  # what a model records of its row


def load_supernet(path: str | Path) -> Supernet:
    """A trained supernet from its directory (local path or URI), in eval mode; ``supernet(images, arch)``
    gives logits and ``supernet.extract(arch)`` the standalone model with inherited weights."""
    require_path(path, "load_supernet: path", "a supernet directory")
    return supernet_dir.load_supernet(path)[0]


def load_model(path: str | Path) -> StaticViT:
    """A standalone model from its directory (written by export, search or run), in eval mode."""
    require_path(path, "load_model: path", "a model directory")
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
    _check_export_arguments(supernet, arch, out, task, supernet_path, search_row)
    metadata = {
        "source": "autoformer export (inherited supernet weights, no retraining)",
        "supernet": supernet_path,
        "task": task.to_dict(),
        "search": {k: search_row[k] for k in SEARCH_KEYS} if search_row else None,
    }
    normalization = {"mean": task.data["mean"], "std": task.data["std"]}
    return subnet_dir.save_model(
        supernet.extract(arch), out, normalization=normalization, metadata=metadata, overwrite=overwrite, onnx=onnx
    )


def _check_export_arguments(
    supernet: object, arch: object, out: object, task: object, supernet_path: object, search_row: object
) -> None:
    """Each argument of ``export_model`` of the kind it takes (a TypeError naming it otherwise): a path where
    the supernet goes, or a task name where the task goes, would fail deep inside extraction or metadata."""
    require_type(supernet, Supernet, "export_model: supernet", SUPERNET)
    require_type(arch, Architecture, "export_model: arch", ARCHITECTURE)
    require_path(out, "export_model: out", "the model directory to write")
    require_type(task, Task, "export_model: task", TASK)
    require_type(supernet_path, str, "export_model: supernet_path", "a string (where the supernet came from)")
    require_type(search_row, (dict, type(None)), "export_model: search_row", "a dict (a candidates row) or None")
    missing = [k for k in SEARCH_KEYS if search_row and k not in search_row]
    if missing:
        raise ValueError(
            f"export_model: search_row lacks {missing[0]!r}; a candidates row has {', '.join(SEARCH_KEYS)}"
        )
