"""In-place distillation (sandwich only): the step's first subnet, the largest, learns from the labels; the others
learn from its detached predictions, by KL (BigNAS) or AlphaNet's adaptive alpha-divergence, scaled by a weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.core.training_settings import SupernetRules
from pipeline.training.distill import adaptive_alpha_divergence, kl_to_targets
from pipeline.training.rules.base import Rule, StepBatch


def inplace_loss(out: torch.Tensor, soft_targets: torch.Tensor, rules: SupernetRules) -> torch.Tensor:
    """A smaller subnet's loss against the largest subnet's predictions."""
    if rules.inplace_distillation == "kl":
        loss = kl_to_targets(out, soft_targets)
    else:
        loss = adaptive_alpha_divergence(out, soft_targets, rules.alpha_min, rules.alpha_max, rules.alpha_clip)
    return rules.inplace_weight * loss


class InplaceDistillation(Rule):
    def __init__(self, rules: SupernetRules) -> None:
        self.rules = rules
        self.soft_targets: torch.Tensor | None = None  # the largest subnet's predictions in the current step

    def loss(self, index: int, out: torch.Tensor, batch: StepBatch) -> torch.Tensor | None:
        if index == 0:
            self.soft_targets = F.softmax(out.detach().float(), dim=-1)
            return None  # the largest learns from the labels (and an external teacher)
        return inplace_loss(out, self.soft_targets, self.rules)
