"""A standalone vision transformer of one architecture, built from plain modules.

This is what a search result becomes: it needs no supernet and no Ray. Parameter names follow timm's
``VisionTransformer`` (``patch_embed.proj``, ``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1``, ...), so a homogeneous
architecture without relative position loads into timm unchanged. Layers may differ in heads and MLP width.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn

from pipeline.core.arch import Architecture
from pipeline.core.space import complete_fixed_parts
from pipeline.model.layers import (
    RelativePosition2D,
    attend,
    check_images,
    drop_path_rates,
    init_vit_weights,
    merge_heads,
    pool,
    split_heads,
)
from pipeline.model.state_check import check_state


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        qkv_bias: bool,
        relative: tuple[int, int] | None,
        attn_drop: float,
        proj_drop: float,
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.attn_drop = num_heads, head_dim, attn_drop
        qkv_dim = num_heads * head_dim
        self.qkv = nn.Linear(embed_dim, 3 * qkv_dim, bias=qkv_bias)
        self.proj = nn.Linear(qkv_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rel_pos_k = RelativePosition2D(head_dim, *relative) if relative else None
        self.rel_pos_v = RelativePosition2D(head_dim, *relative) if relative else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = split_heads(self.qkv(x), self.num_heads, self.head_dim)
        out = attend(q, k, v, self.rel_pos_k, self.rel_pos_v, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(merge_heads(out)))


class Mlp(nn.Module):
    def __init__(self, embed_dim: int, hidden_dim: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    def __init__(
        self, embed_dim: int, hidden_dim: int, attn: Attention, drop: float, drop_path: float, eps: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim, eps=eps)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dim, eps=eps)
        self.mlp = Mlp(embed_dim, hidden_dim, drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class StaticViT(nn.Module):
    """ViT of one architecture. ``fixed`` holds the space's fixed parts (``SearchSpace.fixed_parts()``)."""

    def __init__(
        self,
        arch: Architecture,
        fixed: dict[str, Any],
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        fixed = complete_fixed_parts(fixed)
        self.arch, self.fixed = arch, fixed
        e, hd, patch = arch.embed_dim, fixed["head_dim"], fixed["patch_size"]
        grid = fixed["image_size"] // patch
        relative = (fixed["max_relative_position"], grid) if fixed["relative_position"] else None
        self.patch_embed = PatchEmbed(fixed["in_chans"], e, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, e))
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(
            Block(
                e,
                hidden,
                Attention(e, heads, hd, fixed["qkv_bias"], relative, attn_drop_rate, drop_rate),
                drop_rate,
                dpr,
                fixed["layer_norm_eps"],
            )
            for heads, hidden, dpr in zip(
                arch.num_heads, arch.mlp_hidden_dims(), drop_path_rates(drop_path_rate, arch.depth)
            )
        )
        self.norm = nn.LayerNorm(e, eps=fixed["layer_norm_eps"])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(e, fixed["num_classes"])
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)

    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimizer factory leaves out of weight decay: tokens and position tables (as DeiT)."""
        return {"cls_token", "pos_embed"} | {name for name, _ in self.named_parameters() if ".rel_pos_" in name}

    @classmethod
    def from_state_dict(
        cls, arch: Architecture, fixed: dict[str, Any], state: dict[str, torch.Tensor], **rates: float
    ) -> StaticViT:
        """Build with the given weights, skipping the random initialisation they would overwrite.

        The model is laid out on the meta device (no memory, no init), takes ``state`` as its tensors, and gets
        its derived buffers rebuilt; loading a base-size model this way costs a copy, not an init. Weights of
        other names or shapes are ``WeightsMismatch`` (a ``ValueError``) naming the first difference in one line.
        """
        with torch.device("meta"):
            model = cls(arch, fixed, **rates)
        check_state(model.state_dict(), state)
        model.load_state_dict(state, strict=True, assign=True)
        device = next(iter(state.values())).device
        for module in model.modules():
            if isinstance(module, RelativePosition2D):
                module.rebuild_index(device)
        return model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.fixed["in_chans"], self.fixed["image_size"])
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_drop(pool(self.norm(x), self.fixed["pooling"])))
