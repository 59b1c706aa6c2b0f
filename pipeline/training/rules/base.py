"""The interface of a supernet training rule: hooks into one training step, each neutral by default.

A step asks its rules, in order, which subnets it trains (``subnets``), what each subnet's loss is (``loss``:
the first rule with an answer wins, else the loss against the labels), what to do after each backward pass
(``after_backward``), and how to turn the backward passes' gradients into the step's (``combine``: the first
rule that does it wins, else the summed gradients are averaged over the DDP ranks). A new rule is one module
with one class overriding the hooks it changes, plus its line in ``rules.step_rules``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import torch
from torch import nn

from pipeline.core.arch import Architecture
from pipeline.core.space import SearchSpace


@dataclasses.dataclass
class StepBatch:
    """What every subnet of a step sees: the (Mixup-mixed) images' targets, the label loss, and an external
    teacher's logits when the recipe has one."""

    targets: torch.Tensor
    loss_fn: nn.Module
    teacher_logits: torch.Tensor | None = None


class Rule:
    """One supernet training rule (uniform or sandwich sampling, in-place distillation, an external teacher,
    gradient projection); a rule overrides only the hooks it changes."""

    def subnets(self, space: SearchSpace, rng: random.Random) -> list[Architecture] | None:
        """The step's subnets (drawn from ``rng``, seeded by seed, epoch and step), or None: not this rule's."""
        return None

    def loss(self, index: int, out: torch.Tensor, batch: StepBatch) -> torch.Tensor | None:
        """The loss of the step's ``index``-th subnet given its logits ``out``, or None: not this rule's."""
        return None

    def after_backward(self, index: int, model: nn.Module) -> None:
        """Called after the ``index``-th subnet's backward pass (gradients are in ``model``'s parameters)."""

    def combine(self, model: nn.Module, average: Callable[[list[torch.Tensor]], None]) -> bool:
        """Make the step's gradient in ``model``'s parameters from what the backward passes left there, averaged
        over the ranks with ``average``; True when this rule did it."""
        return False
