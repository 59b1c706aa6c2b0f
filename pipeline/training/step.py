"""The forward and backward passes of one optimizer step.

One subnet (uniform sampling) or one model: its loss against the labels (and an external teacher), and DDP
averages the gradients in the backward pass as usual. Several subnets (the sandwich rule): each one's backward
pass adds to the same gradients without DDP's per-pass synchronisation (``no_sync``), then the summed gradients
are averaged over the ranks once, so the step costs one all-reduce whatever the number of subnets. Every rank
draws the same subnets, so the same parameters carry gradients on every rank. With in-place distillation the
largest subnet goes first, learns from the labels, and its detached predictions are what the others learn from.

Gradient projection: the largest subnet's gradient is kept apart from the others' sum; where the two conflict
(negative dot product over all parameters), the one without priority loses its component along the other
before they are added (PCGrad's form). ``largest`` keeps the largest subnet's step whole, so the smaller
subnets cannot undo it (in-place distillation's students pull against it, ``benchmarks/gradient_conflict.py``);
``others`` keeps theirs whole, NASViT's choice (it projects per parameter tensor, here the whole vector): the
subnets are what gets deployed. Both sums are averaged over the ranks first (in one all-reduce), so every rank
projects the same vectors.
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
from pipeline.core.training_settings import SupernetRules, TeacherSettings, TrainSettings
from pipeline.training.distill import (
    adaptive_alpha_divergence,
    hard_teacher_loss,
    kl_to_targets,
    soft_teacher_loss,
)
from pipeline.training.subject import logits


def label_loss(
    loss_fn: nn.Module,
    out: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    teacher: TeacherSettings,
) -> torch.Tensor:
    """The loss against the labels (or Mixup's soft targets), mixed with an external teacher's when there is one."""
    base = loss_fn(out, targets)
    if teacher_logits is None:
        return base
    if teacher.distill == "hard":
        taught = hard_teacher_loss(out, teacher_logits)
    else:
        taught = soft_teacher_loss(out, teacher_logits, teacher.tau)
    return (1.0 - teacher.alpha) * base + teacher.alpha * taught


def inplace_loss(out: torch.Tensor, soft_targets: torch.Tensor, rules: SupernetRules) -> torch.Tensor:
    """A smaller subnet's loss against the largest subnet's predictions."""
    if rules.inplace_distillation == "kl":
        loss = kl_to_targets(out, soft_targets)
    else:
        loss = adaptive_alpha_divergence(out, soft_targets, rules.alpha_min, rules.alpha_max, rules.alpha_clip)
    return rules.inplace_weight * loss


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


def take_gradients(model: nn.Module) -> list[torch.Tensor | None]:
    """The parameters' gradients so far (None where none), removed from the parameters: the next backward passes
    start a separate sum."""
    taken = []
    for p in model.parameters():
        taken.append(p.grad)
        p.grad = None
    return taken


@torch.no_grad()
def project_conflicting(first: list[torch.Tensor], rest: list[torch.Tensor]) -> bool:
    """When ``rest`` points against ``first`` (negative dot product over all the tensors), remove its component
    along ``first``, in place; True when it did. ``first`` is never changed: it is the update that has priority."""
    dot = sum((a.double() * b.double()).sum() for a, b in zip(first, rest))
    norm = sum(a.double().pow(2).sum() for a in first)
    if dot >= 0 or norm == 0:
        return False
    scale = float(dot / norm)
    for a, b in zip(first, rest):
        b.sub_(a, alpha=scale)
    return True


@torch.no_grad()
def combine_projected(model: nn.Module, largest: list[torch.Tensor | None], priority: str) -> None:
    """The step's gradient as the largest subnet's (``largest``, taken before the others' passes) plus the
    others' (in the parameters' gradients now), averaged over the ranks, the one without ``priority``
    (``largest`` or ``others``) projected where they conflict. A parameter no subnet touched keeps no gradient
    (the exact step skips it)."""
    pairs = [(p, g) for p, g in zip(model.parameters(), largest) if g is not None or p.grad is not None]
    first = [g if g is not None else torch.zeros_like(p) for p, g in pairs]
    rest = [p.grad if p.grad is not None else torch.zeros_like(p) for p, _ in pairs]
    average_tensors(first + rest)
    if priority == "largest":
        project_conflicting(first, rest)
    else:
        project_conflicting(rest, first)
    for (p, _), a, b in zip(pairs, first, rest):
        p.grad = a + b


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
    if len(archs) == 1:
        with autocast():
            loss = label_loss(loss_fn, logits(net, images, archs[0]), targets, teacher_logits, train.teacher)
        loss.backward()
        return loss.detach()
    rules = train.supernet
    inplace = rules.inplace_distillation != "off"
    soft_targets = None
    largest_grads = None
    total = torch.zeros((), dtype=torch.float64, device=images.device)
    with _accumulating(net):
        for i, arch in enumerate(archs):
            with autocast():
                out = logits(net, images, arch)
                if i > 0 and inplace:
                    loss = inplace_loss(out, soft_targets, rules)
                else:
                    loss = label_loss(loss_fn, out, targets, teacher_logits, train.teacher)
            if i == 0 and inplace:
                soft_targets = F.softmax(out.detach().float(), dim=-1)
            loss.backward()
            if i == 0 and rules.gradient_projection != "off":
                largest_grads = take_gradients(model)
            total += loss.detach().double()
    if largest_grads is None:
        average_gradients(model)
    else:
        combine_projected(model, largest_grads, rules.gradient_projection)
    return total / len(archs)
