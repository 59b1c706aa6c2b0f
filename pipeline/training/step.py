"""The forward and backward passes of one optimizer step.

One subnet (uniform sampling) or one model: its loss against the labels (and an external teacher), and DDP
averages the gradients in the backward pass as usual. Several subnets (the sandwich rule): each one's backward
pass adds to the same gradients without DDP's per-pass synchronisation (``no_sync``), then the summed gradients
are averaged over the ranks once, so the step costs one all-reduce whatever the number of subnets. Every rank
draws the same subnets, so the same parameters carry gradients on every rank. With in-place distillation the
largest subnet goes first, learns from the labels, and its detached predictions are what the others learn from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pipeline.core.arch import Architecture
from pipeline.training.distill import (
    adaptive_alpha_divergence,
    hard_teacher_loss,
    kl_to_targets,
    soft_teacher_loss,
)
from pipeline.training.subject import logits


def label_loss(
    loss_fn: nn.Module, out: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None, train: dict
) -> torch.Tensor:
    """The loss against the labels (or Mixup's soft targets), mixed with an external teacher's when there is one."""
    base = loss_fn(out, targets)
    if teacher_logits is None:
        return base
    if train["distill"] == "hard":
        taught = hard_teacher_loss(out, teacher_logits)
    else:
        taught = soft_teacher_loss(out, teacher_logits, train["distill_tau"])
    return (1.0 - train["distill_alpha"]) * base + train["distill_alpha"] * taught


def inplace_loss(out: torch.Tensor, soft_targets: torch.Tensor, train: dict) -> torch.Tensor:
    """A smaller subnet's loss against the largest subnet's predictions."""
    if train["inplace_distillation"] == "kl":
        loss = kl_to_targets(out, soft_targets)
    else:
        loss = adaptive_alpha_divergence(out, soft_targets, train["alpha_min"], train["alpha_max"], train["alpha_clip"])
    return train["inplace_weight"] * loss


@contextlib.contextmanager
def _accumulating(net: nn.Module) -> Iterator[None]:
    """Backward passes that only add to the gradients: DDP's synchronisation held back."""
    with net.no_sync() if isinstance(net, nn.parallel.DistributedDataParallel) else contextlib.nullcontext():
        yield


def average_gradients(model: nn.Module) -> None:
    """Average every gradient over the DDP ranks in one all-reduce (the ranks' gradients have the same layout)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        grad.copy_(synced)


def forward_backward(
    net: nn.Module,
    model: nn.Module,
    archs: list[Architecture | None],
    images: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    loss_fn: nn.Module,
    autocast: Any,
    train: dict,
) -> torch.Tensor:
    """Gradients of one step into ``model``'s parameters (``net`` is ``model``, or its DDP wrapper); the mean of
    the step's losses, detached."""
    if len(archs) == 1:
        with autocast():
            loss = label_loss(loss_fn, logits(net, images, archs[0]), targets, teacher_logits, train)
        loss.backward()
        return loss.detach()
    inplace = train["inplace_distillation"] != "off"
    soft_targets = None
    total = torch.zeros((), dtype=torch.float64, device=images.device)
    with _accumulating(net):
        for i, arch in enumerate(archs):
            with autocast():
                out = logits(net, images, arch)
                if i > 0 and inplace:
                    loss = inplace_loss(out, soft_targets, train)
                else:
                    loss = label_loss(loss_fn, out, targets, teacher_logits, train)
            if i == 0 and inplace:
                soft_targets = F.softmax(out.detach().float(), dim=-1)
            loss.backward()
            total += loss.detach().double()
    average_gradients(model)
    return total / len(archs)
