"""An external teacher (DeiT-style): a subnet that learns from the labels learns from the teacher too, its loss
(1 - alpha) x label loss + alpha x teacher loss; hard: cross-entropy on the teacher's arg-max, soft: KL at tau."""

from __future__ import annotations

import torch

from pipeline.core.training_settings import TeacherSettings
from pipeline.training.distill import hard_teacher_loss, soft_teacher_loss
from pipeline.training.rules.base import Rule, StepBatch


def label_loss(
    loss_fn: torch.nn.Module,
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


class ExternalTeacher(Rule):
    def __init__(self, settings: TeacherSettings) -> None:
        self.settings = settings

    def loss(self, index: int, out: torch.Tensor, batch: StepBatch) -> torch.Tensor:
        return label_loss(batch.loss_fn, out, batch.targets, batch.teacher_logits, self.settings)
