"""The training recipe, assembled from timm: optimizer, warm-up + cosine schedule, Mixup/CutMix and loss."""

from __future__ import annotations

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn


def scaled_lr(train: dict) -> float:
    """Linear scaling rule (DeiT/AutoFormer): lr x global batch / lr_base_batch."""
    return train["lr"] * train["batch_size"] / train["lr_base_batch"]


def build_optimizer(model: nn.Module, train: dict) -> torch.optim.Optimizer:
    """timm optimizer; no weight decay on biases, norms, tokens and position tables (``no_weight_decay``)."""
    kwargs = {"momentum": train["momentum"]} if train["optimizer"] == "sgd" else {}
    return create_optimizer_v2(
        model, opt=train["optimizer"], lr=scaled_lr(train), weight_decay=train["weight_decay"], **kwargs
    )


def build_scheduler(optimizer: torch.optim.Optimizer, train: dict, steps_per_epoch: int):
    """Per-step linear warm-up then cosine decay to ``min_lr``; stepped with ``step_update(global_step)``."""
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=train["epochs"],
        warmup_epochs=train["warmup_epochs"],
        warmup_lr=train["warmup_lr"],
        min_lr=train["min_lr"],
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler


def build_mixup(train: dict, num_classes: int) -> Mixup | None:
    if train["mixup"] <= 0 and train["cutmix"] <= 0:
        return None
    return Mixup(
        mixup_alpha=train["mixup"],
        cutmix_alpha=train["cutmix"],
        prob=train["mixup_prob"],
        switch_prob=train["mixup_switch_prob"],
        mode="batch",
        label_smoothing=train["label_smoothing"],
        num_classes=num_classes,
    )


def build_loss(train: dict, mixup: Mixup | None) -> nn.Module:
    """Soft-target loss with Mixup/CutMix (it carries the smoothing), else label smoothing, else plain CE."""
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if train["label_smoothing"] > 0:
        return LabelSmoothingCrossEntropy(smoothing=train["label_smoothing"])
    return nn.CrossEntropyLoss()
