"""Gradient projection (sandwich only): the largest subnet's gradient is kept apart from the other subnets' sum;
where the two conflict (negative dot product over all parameters), the one without priority loses its component
along the other before they are added (PCGrad's form). ``largest`` keeps the largest subnet's step whole, so the
smaller subnets cannot undo it (in-place distillation's students pull against it, ``benchmarks/gradient_conflict.py``);
``others`` keeps theirs whole, NASViT's choice (it projects per parameter tensor, here the whole vector): the
subnets are what gets deployed. Both sums are averaged over the ranks first (in one all-reduce), so every rank
projects the same vectors."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pipeline.training.rules.base import Rule


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
def combine_projected(
    model: nn.Module,
    largest: list[torch.Tensor | None],
    priority: str,
    average: Callable[[list[torch.Tensor]], None],
) -> None:
    """The step's gradient as the largest subnet's (``largest``, taken before the others' passes) plus the
    others' (in the parameters' gradients now), averaged over the ranks, the one without ``priority``
    (``largest`` or ``others``) projected where they conflict. A parameter no subnet touched keeps no gradient
    (the exact step skips it)."""
    pairs = [(p, g) for p, g in zip(model.parameters(), largest) if g is not None or p.grad is not None]
    first = [g if g is not None else torch.zeros_like(p) for p, g in pairs]
    rest = [p.grad if p.grad is not None else torch.zeros_like(p) for p, _ in pairs]
    average(first + rest)
    if priority == "largest":
        project_conflicting(first, rest)
    else:
        project_conflicting(rest, first)
    for (p, _), a, b in zip(pairs, first, rest):
        p.grad = a + b


class GradientProjection(Rule):
    def __init__(self, priority: str) -> None:
        self.priority = priority  # largest | others
        self.largest: list[torch.Tensor | None] | None = None  # the largest subnet's gradient in this step

    def after_backward(self, index: int, model: nn.Module) -> None:
        if index == 0:
            self.largest = take_gradients(model)

    def combine(self, model: nn.Module, average: Callable[[list[torch.Tensor]], None]) -> bool:
        if self.largest is None:
            return False
        combine_projected(model, self.largest, self.priority, average)
        self.largest = None
        return True
