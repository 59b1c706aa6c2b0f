"""The training recipe, assembled from timm: optimizer, warm-up + cosine schedule, Mixup/CutMix and loss."""

from __future__ import annotations

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler, create_scheduler_v2
from torch import nn

from pipeline.core.training_settings import TrainSettings


def scaled_lr(train: TrainSettings) -> float:
    """Linear scaling rule (DeiT/AutoFormer): lr x global batch / lr_base_batch."""
    return train.optim.scaled_lr(train.batch_size)


def build_optimizer(model: nn.Module, train: TrainSettings) -> torch.optim.Optimizer:
    """timm optimizer; no weight decay on biases, norms, tokens and position tables (``no_weight_decay``)."""
    optim = train.optim
    kwargs = {"momentum": optim.momentum} if optim.optimizer == "sgd" else {}
    return create_optimizer_v2(
        model, opt=optim.optimizer, lr=scaled_lr(train), weight_decay=optim.weight_decay, **kwargs
    )


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainSettings, steps_per_epoch: int):
    """Per-step linear warm-up then cosine decay to ``min_lr``; stepped with ``step_update(global_step)``."""
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=train.epochs,
        warmup_epochs=train.optim.warmup_epochs,
        warmup_lr=train.optim.warmup_lr,
        min_lr=train.optim.min_lr,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler


def build_step_scheduler(optimizer: torch.optim.Optimizer, train: TrainSettings, steps: int) -> CosineLRScheduler:
    """The recipe's schedule compressed into ``steps`` optimizer steps (a short fine-tune): the warm-up takes the
    recipe's share of them (warmup_epochs of epochs), then cosine decay to ``min_lr``; ``step_update(step)``."""
    warmup = round(steps * train.optim.warmup_epochs / max(train.epochs, 1))
    return CosineLRScheduler(
        optimizer,
        t_initial=steps,
        lr_min=train.optim.min_lr,
        warmup_t=min(warmup, steps - 1),
        warmup_lr_init=train.optim.warmup_lr,
        t_in_epochs=False,
    )


def build_mixup(train: TrainSettings, num_classes: int) -> Mixup | None:
    augment = train.augment
    if not augment.mixes:
        return None
    return Mixup(
        mixup_alpha=augment.mixup,
        cutmix_alpha=augment.cutmix,
        prob=augment.mixup_prob,
        switch_prob=augment.mixup_switch_prob,
        mode="batch",
        label_smoothing=augment.label_smoothing,
        num_classes=num_classes,
    )


def build_loss(train: TrainSettings, mixup: Mixup | None) -> nn.Module:
    """Soft-target loss with Mixup/CutMix (it carries the smoothing), else label smoothing, else plain CE."""
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if train.augment.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=train.augment.label_smoothing)
    return nn.CrossEntropyLoss()
