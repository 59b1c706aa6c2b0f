"""The forward and backward passes of one optimizer step, asking the recipe's rules (``pipeline.training.rules``)
what each subnet learns from and how the gradients combine.

One subnet (uniform sampling) or one model: its loss against the labels (and an external teacher), and DDP
averages the gradients in the backward pass as usual. Several subnets (the sandwich rule): each one's backward
pass adds to the same gradients without DDP's per-pass synchronisation (``no_sync``), then the summed gradients
are averaged over the ranks once (or a rule combines them: gradient projection), so the step costs one
all-reduce whatever the number of subnets. Every rank draws the same subnets, so the same parameters carry
gradients on every rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pipeline.core.arch import Architecture
from pipeline.core.training_settings import TrainSettings
from pipeline.training.rules import StepBatch, step_rules
from pipeline.training.rules.teacher import label_loss
from pipeline.training.subject import logits


@contextlib.contextmanager
def _accumulating(net: nn.Module) -> Iterator[None]:
    """Backward passes that only add to the gradients: DDP's synchronisation held back."""
    with net.no_sync() if isinstance(net, nn.parallel.DistributedDataParallel) else contextlib.nullcontext():
        yield


def average_tensors(tensors: list[torch.Tensor]) -> None:
    """Average tensors over the DDP ranks in place, in one all-reduce (the ranks' lists have the same layout)."""
    if not tensors or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for tensor, synced in zip(tensors, flat.split([t.numel() for t in tensors])):
        tensor.copy_(synced.view_as(tensor))


def average_gradients(model: nn.Module) -> None:
    """Average every gradient over the DDP ranks in one all-reduce."""
    average_tensors([p.grad for p in model.parameters() if p.grad is not None])


def forward_backward(
    net: nn.Module,
    model: nn.Module,
    archs: list[Architecture | None],
    images: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    loss_fn: nn.Module,
    autocast: Any,
    train: TrainSettings,
) -> torch.Tensor:
    """Gradients of one step into ``model``'s parameters (``net`` is ``model``, or its DDP wrapper); the mean of
    the step's losses, detached."""
    batch = StepBatch(targets, loss_fn, teacher_logits)
    if len(archs) == 1:
        with autocast():
            loss = label_loss(loss_fn, logits(net, images, archs[0]), targets, teacher_logits, train.teacher)
        loss.backward()
        return loss.detach()
    rules = step_rules(train)
    total = torch.zeros((), dtype=torch.float64, device=images.device)
    with _accumulating(net):
        for i, arch in enumerate(archs):
            with autocast():
                out = logits(net, images, arch)
                loss = next(x for x in (r.loss(i, out, batch) for r in rules) if x is not None)
            loss.backward()
            for rule in rules:
                rule.after_backward(i, model)
            total += loss.detach().double()
    if not any(rule.combine(model, average_tensors) for rule in rules):
        average_gradients(model)
    return total / len(archs)
