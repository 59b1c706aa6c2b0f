"""Scoring a subnet with inherited weights on the search split: top-1, top-5 and loss.

Returns sums so that shards evaluated on different DDP ranks (or actors) add up exactly.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from pipeline.arch import Architecture


def autocast_factory(device: torch.device, precision: str = "auto") -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on GPUs (``auto``) or when asked for; plain fp32 otherwise (CPUs)."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if bf16:
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


@torch.no_grad()
def evaluate_sums(
    model: torch.nn.Module,
    arch: Architecture,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """``[correct@1, correct@5, summed loss, count]`` as a float64 tensor on ``device``."""
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast or contextlib.nullcontext():
            logits = model(images, arch)
        logits = logits.float()
        k = min(5, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices
        hits = top == labels[:, None]
        sums[0] += hits[:, 0].sum()
        sums[1] += hits.any(dim=-1).sum()
        sums[2] += F.cross_entropy(logits, labels, reduction="sum")
        sums[3] += labels.numel()
    return sums


def finish(sums: torch.Tensor) -> dict[str, float]:
    correct1, correct5, loss, count = sums.tolist()
    count = max(count, 1.0)
    return {"top1": correct1 / count, "top5": correct5 / count, "loss": loss / count}
