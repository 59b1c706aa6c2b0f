"""Inherited-weight scores of architectures, and a fidelity report's results rebuilt from an earlier run's
stand-alone trainings. Torch only: no Ray, so a report against known stand-alone scores runs in the driver.

Stand-alone training is the expensive half of a fidelity report (hours per architecture on real data) and does
not depend on the supernet. Two supernets of one task and space (trained uniformly and with the sandwich rule, say)
are therefore compared on the same ground truth by scoring their inherited weights against one run's trainings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pipeline.core.arch import Architecture
from pipeline.core.task import Task
from pipeline.data.arrays import SplitArrays, score
from pipeline.data.ray_ingest import load_split
from pipeline.model.supernet import Supernet


def scoring_splits(task: Task) -> dict[str, SplitArrays]:
    """The search and test splits inherited weights are scored on, loaded once for every architecture."""
    return {role: load_split(task, role, batch_size=task.search["batch_size"]) for role in ("search", "test")}


def inherited_top1(
    supernet: Supernet, arch: Architecture, task: Task, splits: dict[str, SplitArrays], device: torch.device
) -> dict[str, float]:
    """Search and test top-1 of ``arch`` with its weights inherited from ``supernet`` (no training), and the
    number of images each was scored on."""
    model = supernet.extract(arch).to(device)
    normalization = {"mean": task.data["mean"], "std": task.data["std"]}
    out = {}
    for role, split in splits.items():
        scores = score(model, split, normalization, device, task.search["batch_size"])
        out[f"inherited_{role}_top1"] = scores["top1"]
        out[f"{role}_images"] = len(split.labels)
    return out


def rescored_results(
    supernet: Supernet,
    task: Task,
    standalone: list[dict[str, Any]],
    device: torch.device,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Results in the shape ``run_fidelity`` returns, for the finished rows of an earlier ``fidelity.parquet``:
    their stand-alone scores and epochs as they were, the inherited scores from ``supernet``."""
    splits = scoring_splits(task)
    results = []
    for i, row in enumerate(standalone, 1):
        arch = Architecture.from_json(row["architecture"], source=f"stand-alone row {row['key']}")
        metrics = {
            "params": row["params"],
            "macs": row["macs"],
            "search_top1": row["standalone_search_top1"],
            "test_top1": row["standalone_test_top1"],
            "epoch": row["epochs"],
            **inherited_top1(supernet, arch, task, splits, device),
        }
        for column in ("standalone_search_top1_by_seed", "standalone_test_top1_by_seed"):
            if row.get(column):  # a report from before --seeds has none: its one seed is the score itself
                metrics[column] = row[column]
        progress(f"[fidelity] {i}/{len(standalone)} {arch.key}: inherited {metrics['inherited_search_top1']:.4f}")
        results.append({"arch": arch, "picked": row["picked"], "metrics": metrics, "done": True})
    return results
