"""Image transforms from timm: DeiT-style training augmentation and plain evaluation preprocessing."""

from __future__ import annotations

from collections.abc import Callable

from timm.data import create_transform

from pipeline.core.training_settings import Augmentation


def train_transform(data: dict, augment: Augmentation) -> Callable:
    """DeiT's training transform: random resized crop, flip, colour jitter, RandAugment, random erasing."""
    return create_transform(
        input_size=(data["in_chans"], data["image_size"], data["image_size"]),
        is_training=True,
        scale=tuple(augment.scale),
        ratio=tuple(augment.ratio),
        hflip=augment.hflip,
        vflip=0.0,
        color_jitter=augment.color_jitter or None,
        auto_augment=augment.randaugment,
        interpolation=data["interpolation"],
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        re_prob=augment.random_erasing,
        re_mode="pixel",
        re_count=1,
    )


def eval_transform(data: dict) -> Callable:
    """Resize and centre-crop at ``data.eval_crop_pct`` (1.0 for small images), then normalise."""
    return create_transform(
        input_size=(data["in_chans"], data["image_size"], data["image_size"]),
        is_training=False,
        interpolation=data["interpolation"],
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        crop_pct=data["eval_crop_pct"],
    )
