"""The chosen architectures as standalone model directories, each scored once on the test split.

Search ranks candidates on the search split only; the test split is touched here, after the search, once per
exported model, and its number is stored beside the search number (in the model's metadata and in
``pareto.parquet``), so the two can be compared but the test split never steers the search.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from pipeline.arch import Architecture
from pipeline.model.export import save_model
from pipeline.model.supernet import Supernet
from pipeline.search.split_data import SplitArrays, channel_stats, normalized_batches
from pipeline.storage import is_uri, join, upload_directory
from pipeline.task import Task
from pipeline.training.evaluate import autocast_factory, evaluate_sums, finish


def pick_device(gpu: bool) -> torch.device:
    return torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")


def score(model: torch.nn.Module, split: SplitArrays, normalization: dict[str, list[float]], device: torch.device, batch_size: int = 512) -> dict[str, float]:
    """top-1/top-5/loss of a standalone model on a split held as uint8 arrays."""
    mean, std = channel_stats(normalization, device)
    batches = normalized_batches(torch.from_numpy(split.images), torch.from_numpy(split.labels), mean, std, batch_size)
    model = model.to(device).eval()
    return finish(evaluate_sums(lambda x, _: model(x), None, batches, device, autocast_factory(device)()))


def model_dir_name(rank: int, key: str) -> str:
    return f"rank{rank:02d}-{key}"


def export_ranked(
    chosen: list[dict[str, Any]],
    supernet: Supernet,
    supernet_path: str,
    task: Task,
    test: SplitArrays,
    out_base: str,
    device: torch.device,
    search_info: dict[str, Any],
) -> list[dict[str, Any]]:
    """Export each chosen record to ``out_base/models/rankNN-KEY`` and add its test scores to the record."""
    normalization = {"mean": task.data["mean"], "std": task.data["std"]}
    out = []
    for r in chosen:
        arch = Architecture.from_dict(r["arch"])
        model = supernet.extract(arch)
        tested = score(model, test, normalization, device, task.search["batch_size"])
        metadata = {
            "source": "autoformer search (inherited supernet weights, no retraining)",
            "supernet": supernet_path,
            "task": task.to_dict(),
            "search": {k: r[k] for k in ("top1", "top5", "loss", "latency_ms", "generation", "origin")},
            "test": tested,
            "search_run": search_info,
        }
        name = model_dir_name(r["rank"], r["key"])
        target = join(out_base, "models", name)
        if is_uri(target):
            with tempfile.TemporaryDirectory() as tmp:
                save_model(model.cpu(), Path(tmp) / name, normalization=normalization, metadata=metadata)
                upload_directory(Path(tmp) / name, target)
        else:
            save_model(model.cpu(), target, normalization=normalization, metadata=metadata, overwrite=True)
        out.append({**r, "test_top1": tested["top1"], "test_top5": tested["top5"], "model_dir": target})
    return out
