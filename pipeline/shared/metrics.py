"""Scores of a model on batches of images: top-1, top-5 and loss, and the autocast policy they run under.

Shared by training (tracked subnets), the evaluators (candidates) and the final test scoring. Sums are
returned so that shards evaluated on different DDP ranks (or actors) add up exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F


def pick_device(gpu: bool) -> torch.device:
    return torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")


def autocast_factory(device: torch.device, precision: str = "auto") -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on GPUs (``auto``) or when asked for; plain fp32 otherwise (CPUs)."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if bf16:
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


@torch.no_grad()
def evaluate_hits(
    model: Callable[[torch.Tensor, Any], torch.Tensor],
    arch: Any,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``evaluate_sums`` plus whether each image was right at top-1 (a bool tensor in the batches' order): what
    paired comparisons between candidates scored on the same images need."""
    hits = []
    sums = evaluate_sums(model, arch, batches, device, autocast, hits)
    return sums, torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


@torch.no_grad()
def evaluate_sums(
    model: Callable[[torch.Tensor, Any], torch.Tensor],
    arch: Any,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
    hits: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``[correct@1, correct@5, summed loss, count]`` as a float64 tensor on ``device``; each batch's top-1 hits
    are appended to ``hits`` when given.

    ``model(images, arch)`` gives the logits: a supernet with its architecture, or any model wrapped so.
    """
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        correct = _add(sums, _logits(model, images, arch, autocast), labels)
        if hits is not None:
            hits.append(correct.cpu())
    return sums


@torch.no_grad()
def evaluate_each_sums(
    model: Callable[[torch.Tensor, Any], torch.Tensor],
    archs: Sequence[Any],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> torch.Tensor:
    """``evaluate_sums`` of each of ``archs`` (one row each) in one pass over the batches: the images are read
    and decoded once, not once per architecture (scoring 16 subnets of a supernet on a split of JPEGs was
    mostly decoding)."""
    sums = torch.zeros(len(archs), 4, dtype=torch.float64, device=device)
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        for row, arch in zip(sums, archs):
            _add(row, _logits(model, images, arch, autocast), labels)
    return sums


def _logits(
    model: Callable[[torch.Tensor, Any], torch.Tensor],
    images: torch.Tensor,
    arch: Any,
    autocast: contextlib.AbstractContextManager | None,
) -> torch.Tensor:
    with autocast or contextlib.nullcontext():
        return model(images, arch).float()


def _add(sums: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Add one batch to ``[correct@1, correct@5, summed loss, count]``; the batch's top-1 hits are returned."""
    top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
    correct = top == labels[:, None]
    sums[0] += correct[:, 0].sum()
    sums[1] += correct.any(dim=-1).sum()
    sums[2] += F.cross_entropy(logits, labels, reduction="sum")
    sums[3] += labels.numel()
    return correct[:, 0]


def finish(sums: torch.Tensor) -> dict[str, float]:
    correct1, correct5, loss, count = sums.tolist()
    count = max(count, 1.0)
    return {"top1": correct1 / count, "top5": correct5 / count, "loss": loss / count}
