"""Conversion of standalone models to timm's ``VisionTransformer`` (a plain function beside the model, as timm
keeps its checkpoint converters)."""

from __future__ import annotations

import functools

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from pipeline.model.static import StaticViT
from pipeline.shared.errors import UserError


def to_timm(model: StaticViT) -> torch.nn.Module:
    """The same model as timm's ``VisionTransformer`` (identical logits).

    Only for architectures a plain ViT can express: the same heads and MLP ratio in every layer, Q-K-V dim equal
    to the embedding dim, and no relative position.
    """
    arch, fixed = model.arch, model.fixed
    reasons = []
    if not arch.is_homogeneous():
        reasons.append("layers differ in heads or MLP ratio")
    if arch.num_heads[0] * fixed["head_dim"] != arch.embed_dim:
        reasons.append(f"Q-K-V dim {arch.num_heads[0] * fixed['head_dim']} differs from embed dim {arch.embed_dim}")
    if fixed["relative_position"]:
        reasons.append("it uses relative position")
    if reasons:
        raise UserError(
            f"architecture {arch.key} cannot be expressed as a timm VisionTransformer: {'; '.join(reasons)}"
        )
    vit = VisionTransformer(
        img_size=fixed["image_size"],
        patch_size=fixed["patch_size"],
        in_chans=fixed["in_chans"],
        num_classes=fixed["num_classes"],
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads[0],
        mlp_ratio=arch.mlp_ratio[0],
        qkv_bias=fixed["qkv_bias"],
        # the final norm on every token, then the class token or the mean of the patch tokens (timm's "avg"
        # pooling without its fc_norm, which would normalise after pooling instead)
        global_pool="token" if fixed["pooling"] == "cls" else "avg",
        fc_norm=False,
        norm_layer=functools.partial(nn.LayerNorm, eps=fixed["layer_norm_eps"]),
    )
    vit.load_state_dict(model.state_dict(), strict=True)
    return vit.to(model.head.weight.device).train(model.training)
