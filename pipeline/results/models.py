"""The chosen architectures as standalone model directories, each scored once on the test split.

Search ranks candidates on the search split only; the test split is touched here, after the search, once per
exported model, and its number is stored beside the search number (in the model's metadata and in
``pareto.parquet``), so the two can be compared but the test split never steers the search.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from pipeline.core.arch import Architecture
from pipeline.core.task import Task
from pipeline.data.arrays import SplitArrays, score
from pipeline.model.subnet_dir import save_model
from pipeline.model.supernet import Supernet
from pipeline.shared.storage import join, write_directory_to

MODELS_DIR = "models"
SOURCE = "autoformer search (inherited supernet weights, no retraining)"
RERANKED_SOURCE = "autoformer search, re-ranked (inherited supernet weights fine-tuned {steps} steps, finetune recipe)"


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
    measure: Callable[[torch.nn.Module], float] | None = None,
    weights: dict[str, dict[str, torch.Tensor]] | None = None,
) -> list[dict[str, Any]]:
    """Export each chosen record to ``out_base/models/rankNN-KEY`` and add its test scores to the record; a
    re-ranked record (its key in ``weights``) is exported with its fine-tuned weights, the rest inherited."""
    normalization = {"mean": task.data["mean"], "std": task.data["std"]}
    out = []
    for r in chosen:
        arch = Architecture.from_dict(r["arch"])
        model = supernet.extract(arch)
        tuned = (weights or {}).get(r["key"])
        if tuned is not None:
            model.load_state_dict(tuned)
        tested = score(model, test, normalization, device, task.search["batch_size"])
        if measure is not None:  # the search predicted latency: measure the exported model on the target for real
            r = {**r, "latency_ms": measure(model.cpu().eval())}
        metadata = {
            "source": SOURCE if tuned is None else RERANKED_SOURCE.format(steps=r["rerank"]["steps"]),
            "supernet": supernet_path,
            "task": task.to_dict(),
            "search": {
                k: r[k] for k in ("top1", "top5", "loss", "latency_ms", "latency_ms_pred", "generation", "origin")
            },
            **({"rerank": {k: v for k, v in r["rerank"].items() if k != "hits"}} if tuned is not None else {}),
            "test": tested,
            "search_run": search_info,
        }
        name = model_dir_name(r["rank"], r["key"])
        write = functools.partial(
            save_model, model.cpu(), normalization=normalization, metadata=metadata, overwrite=True
        )
        target = write_directory_to(join(out_base, MODELS_DIR, name), write)
        out.append({**r, "test_top1": tested["top1"], "test_top5": tested["top5"], "model_dir": target})
    return out
