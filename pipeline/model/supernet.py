"""Supernets: one ViT whose weights serve every architecture of a search space.

Three ways of sharing, behind one interface (``forward(images, arch)``, ``extract(arch)``):

* ``entangled`` (AutoFormer's weight entanglement). Each layer holds only its largest block. A subnet uses the
  first-k slices: patch-embedding output channels, class token and position embedding, every LayerNorm, Q, K
  and V (each sliced on its own, weights and biases alike: the first ``heads x head_dim`` rows of each), the
  output projection, both MLP layers, the final norm and the head. Depth keeps the first d layers. So all
  candidates of a layer share their common part and every step trains the part all of them use.

* ``classical`` (SPOS-style weight sharing, the paper's Table 2 ablation). In each layer every choice of heads
  has its own attention (with its own LayerNorm, Q-K-V, projection and relative-position tables) and every
  choice of MLP ratio its own MLP (with its own LayerNorm). What stays shared: the embedding-dimension axis,
  which is one global choice with no per-layer operator, so the patch embedding, tokens, final norm and head,
  and the input/output side of every per-choice block, are sliced first-k as in the entangled supernet.
  Attention and MLP choices stay independent of each other: each attention trains under every MLP choice.

* ``classical_strict`` (the paper's SPOS baseline taken literally): in each layer every (heads, MLP ratio) pair
  is one independent block (two LayerNorms, attention, MLP), so a block trains only when exactly its pair is
  drawn (1/9 of the steps in a 3 x 3 space, against 1/3 for ``classical``). The embedding-dimension axis is
  shared as in ``classical``: it has no per-layer operator to duplicate.

The architecture is always an argument; nothing here keeps a "current subnet". Counting (``complexity``)
never touches the model.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import drop_path, trunc_normal_
from torch import nn

from pipeline.core.arch import Architecture, validate_fits, validate_in_space
from pipeline.core.space import SearchSpace, mlp_hidden_dim
from pipeline.core.task import SHARING_MODES
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
from pipeline.model.static import StaticViT
from pipeline.shared.arguments import require_type
from pipeline.shared.errors import UserError

Sharing = Literal["entangled", "classical", "classical_strict"]

Tensors = dict[str, torch.Tensor]


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm, e: int) -> torch.Tensor:
    return F.layer_norm(x, (e,), norm.weight[:e], norm.bias[:e], norm.eps)


class _AttentionWeights(nn.Module):
    """Weights of the largest attention of a layer: fused Q-K-V laid out as [Q; K; V], each ``max_qkv`` rows.

    The bias follows ``space.qkv_bias_layout``: ``blocks`` slices it like the weight (first q of each of Q, K, V);
    ``prefix`` takes its first 3q entries as they stand, which is how the AutoFormer reference code slices its
    bias (so its K and V biases depend on the sampled Q-K-V dim); imported reference supernets use it.
    """

    def __init__(self, space: SearchSpace, max_heads: int) -> None:
        super().__init__()
        self.max_qkv = max_heads * space.head_dim
        self.head_dim, self.bias_layout = space.head_dim, space.qkv_bias_layout
        e = space.max_embed_dim
        self.qkv = nn.Linear(e, 3 * self.max_qkv, bias=space.qkv_bias)
        self.proj = nn.Linear(self.max_qkv, e)
        relative = (space.max_relative_position, space.grid_size) if space.relative_position else None
        self.rel_pos_k = RelativePosition2D(space.head_dim, *relative) if relative else None
        self.rel_pos_v = RelativePosition2D(space.head_dim, *relative) if relative else None

    def sliced_qkv(self, e: int, q: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """First ``q`` rows of each of Q, K and V (and first ``e`` columns), fused again as ``[Q; K; V]``."""
        w = self.qkv.weight.view(3, self.max_qkv, -1)[:, :q, :e].reshape(3 * q, e)
        if self.qkv.bias is None:
            return w, None
        if self.bias_layout == "prefix":
            return w, self.qkv.bias[: 3 * q]
        return w, self.qkv.bias.view(3, self.max_qkv)[:, :q].reshape(3 * q)

    def forward(self, x: torch.Tensor, num_heads: int, attn_drop: float) -> torch.Tensor:
        e, q = x.shape[-1], num_heads * self.head_dim
        w, b = self.sliced_qkv(e, q)
        qh, kh, vh = split_heads(F.linear(x, w, b), num_heads, self.head_dim)
        out = merge_heads(attend(qh, kh, vh, self.rel_pos_k, self.rel_pos_v, attn_drop))
        return F.linear(out, self.proj.weight[:e, :q], self.proj.bias[:e])

    def static_state(self, e: int, num_heads: int) -> Tensors:
        q = num_heads * self.head_dim
        w, b = self.sliced_qkv(e, q)
        state = {"qkv.weight": w, "proj.weight": self.proj.weight[:e, :q], "proj.bias": self.proj.bias[:e]}
        if b is not None:
            state["qkv.bias"] = b
        for name in ("rel_pos_k", "rel_pos_v"):
            rel = getattr(self, name)
            if rel is not None:
                state[f"{name}.table_v"], state[f"{name}.table_h"] = rel.table_v, rel.table_h
        return state


class _MlpWeights(nn.Module):
    def __init__(self, max_embed: int, max_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(max_embed, max_hidden)
        self.fc2 = nn.Linear(max_hidden, max_embed)

    def forward(self, x: torch.Tensor, hidden: int, drop: float) -> torch.Tensor:
        e = x.shape[-1]
        x = F.gelu(F.linear(x, self.fc1.weight[:hidden, :e], self.fc1.bias[:hidden]))
        x = F.dropout(x, drop, training=drop > 0)
        return F.dropout(F.linear(x, self.fc2.weight[:e, :hidden], self.fc2.bias[:e]), drop, training=drop > 0)

    def static_state(self, e: int, hidden: int) -> Tensors:
        return {
            "fc1.weight": self.fc1.weight[:hidden, :e],
            "fc1.bias": self.fc1.bias[:hidden],
            "fc2.weight": self.fc2.weight[:e, :hidden],
            "fc2.bias": self.fc2.bias[:e],
        }


class _NormedAttention(nn.Module):
    """LayerNorm + attention: one selectable unit (the classical supernet has one per heads choice)."""

    def __init__(self, space: SearchSpace, max_heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(space.max_embed_dim, eps=space.layer_norm_eps)
        self.attn = _AttentionWeights(space, max_heads)

    def forward(self, x: torch.Tensor, num_heads: int, attn_drop: float, drop: float) -> torch.Tensor:
        out = self.attn(_layer_norm(x, self.norm, x.shape[-1]), num_heads, attn_drop)
        return F.dropout(out, drop, training=drop > 0)

    def static_state(self, e: int, num_heads: int) -> Tensors:
        state = {"norm1.weight": self.norm.weight[:e], "norm1.bias": self.norm.bias[:e]}
        state.update({f"attn.{k}": v for k, v in self.attn.static_state(e, num_heads).items()})
        return state


class _NormedMlp(nn.Module):
    def __init__(self, max_embed: int, max_hidden: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(max_embed, eps=eps)
        self.mlp = _MlpWeights(max_embed, max_hidden)

    def forward(self, x: torch.Tensor, hidden: int, drop: float) -> torch.Tensor:
        return self.mlp(_layer_norm(x, self.norm, x.shape[-1]), hidden, drop)

    def static_state(self, e: int, hidden: int) -> Tensors:
        state = {"norm2.weight": self.norm.weight[:e], "norm2.bias": self.norm.bias[:e]}
        state.update({f"mlp.{k}": v for k, v in self.mlp.static_state(e, hidden).items()})
        return state


class EntangledLayer(nn.Module):
    """One layer holding only its largest block; every candidate block is a first-k slice of it."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.attention = _NormedAttention(space, space.max_num_heads)
        self.mlp = _NormedMlp(space.max_embed_dim, space.max_mlp_hidden_dim, space.layer_norm_eps)

    def choose(self, num_heads: int, mlp_ratio: float) -> tuple[_NormedAttention, _NormedMlp]:
        return self.attention, self.mlp


class ClassicalLayer(nn.Module):
    """One layer with independent weights per heads choice and per MLP-ratio choice (SPOS)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.attention = nn.ModuleDict({str(h): _NormedAttention(space, h) for h in space.num_heads})
        self.mlp = nn.ModuleDict(
            {
                _ratio_key(r): _NormedMlp(
                    space.max_embed_dim, mlp_hidden_dim(space.max_embed_dim, r), space.layer_norm_eps
                )
                for r in space.mlp_ratio
            }
        )

    def choose(self, num_heads: int, mlp_ratio: float) -> tuple[_NormedAttention, _NormedMlp]:
        return self.attention[str(num_heads)], self.mlp[_ratio_key(mlp_ratio)]


class StrictClassicalLayer(nn.Module):
    """One layer with an independent block (attention and MLP) per (heads, MLP ratio) pair (SPOS, strictly)."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.attention = nn.ModuleDict()
        self.mlp = nn.ModuleDict()
        for h in space.num_heads:
            for r in space.mlp_ratio:
                key = _pair_key(h, r)
                self.attention[key] = _NormedAttention(space, h)
                self.mlp[key] = _NormedMlp(
                    space.max_embed_dim, mlp_hidden_dim(space.max_embed_dim, r), space.layer_norm_eps
                )

    def choose(self, num_heads: int, mlp_ratio: float) -> tuple[_NormedAttention, _NormedMlp]:
        key = _pair_key(num_heads, mlp_ratio)
        return self.attention[key], self.mlp[key]


def _pair_key(num_heads: int, ratio: float) -> str:
    return f"h{num_heads}_r{_ratio_key(ratio)}"


def _ratio_key(ratio: float) -> str:
    return f"{ratio:g}".replace(".", "_")  # ModuleDict keys may not contain dots


class Supernet(nn.Module):
    """A ViT supernet over ``space``; ``sharing`` picks weight entanglement or classical (SPOS) sharing."""

    def __init__(
        self,
        space: SearchSpace,
        sharing: Sharing = "entangled",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if sharing not in SHARING_MODES:
            raise UserError(f"sharing mode {sharing!r} is not one of {', '.join(SHARING_MODES)}")
        self.space, self.sharing = space, sharing
        self.drop_rate, self.attn_drop_rate, self.drop_path_rate = drop_rate, attn_drop_rate, drop_path_rate
        e = space.max_embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(space.in_chans, e, kernel_size=space.patch_size, stride=space.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embed = nn.Parameter(torch.zeros(1, space.num_tokens, e))
        layer = {"entangled": EntangledLayer, "classical": ClassicalLayer, "classical_strict": StrictClassicalLayer}[
            sharing
        ]
        self.blocks = nn.ModuleList(layer(space) for _ in range(space.max_depth))
        self.norm = nn.LayerNorm(e, eps=space.layer_norm_eps)
        self.head = nn.Linear(e, space.num_classes)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)

    def no_weight_decay(self) -> set[str]:
        """Parameters timm's optimizer factory leaves out of weight decay: tokens and position tables (as DeiT)."""
        return {"cls_token", "pos_embed"} | {name for name, _ in self.named_parameters() if ".rel_pos_" in name}

    def check_architecture(self, arch: Architecture) -> None:
        """Raise ``UserError`` unless this supernet holds weights for ``arch``.

        The entangled supernet runs any architecture that fits inside its largest block (so published models
        whose genes step outside the space can still inherit weights); the classical ones only the space's own
        choices, since other choices have no weights. Anything but an ``Architecture`` (a dict of genes) is a
        ``TypeError`` saying how to make one.
        """
        require_type(arch, Architecture, "arch", "an Architecture (pipeline.Architecture.from_dict(genes))")
        if self.sharing != "entangled":
            validate_in_space(arch, self.space)
            return
        validate_fits(arch, self.space)

    def forward(self, images: torch.Tensor, arch: Architecture) -> torch.Tensor:
        check_images(images, self.space.in_chans, self.space.image_size)
        self.check_architecture(arch)
        e = arch.embed_dim
        drop = self.drop_rate if self.training else 0.0
        attn_drop = self.attn_drop_rate if self.training else 0.0
        conv = self.patch_embed.proj
        x = F.conv2d(images, conv.weight[:e], conv.bias[:e], stride=conv.stride).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token[..., :e].expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed[..., :e]
        x = F.dropout(x, drop, training=drop > 0)
        rates = drop_path_rates(self.drop_path_rate, arch.depth)
        for layer, heads, ratio, hidden, rate in zip(
            self.blocks, arch.num_heads, arch.mlp_ratio, arch.mlp_hidden_dims(), rates
        ):
            attention, mlp = layer.choose(heads, ratio)
            x = x + drop_path(attention(x, heads, attn_drop, drop), rate, self.training)
            x = x + drop_path(mlp(x, hidden, drop), rate, self.training)
        x = pool(_layer_norm(x, self.norm, e), self.space.pooling)
        x = F.dropout(x, drop, training=drop > 0)
        return F.linear(x, self.head.weight[:, :e], self.head.bias)

    @torch.no_grad()
    def extract(self, arch: Architecture) -> StaticViT:
        """The standalone model of ``arch`` with its inherited weights (copies; the supernet is untouched)."""
        self.check_architecture(arch)
        e = arch.embed_dim
        conv = self.patch_embed.proj
        state: Tensors = {
            "patch_embed.proj.weight": conv.weight[:e],
            "patch_embed.proj.bias": conv.bias[:e],
            "cls_token": self.cls_token[..., :e],
            "pos_embed": self.pos_embed[..., :e],
            "norm.weight": self.norm.weight[:e],
            "norm.bias": self.norm.bias[:e],
            "head.weight": self.head.weight[:, :e],
            "head.bias": self.head.bias,
        }
        for i, (layer, heads, ratio, hidden) in enumerate(
            zip(self.blocks, arch.num_heads, arch.mlp_ratio, arch.mlp_hidden_dims())
        ):
            attention, mlp = layer.choose(heads, ratio)
            for key, value in {**attention.static_state(e, heads), **mlp.static_state(e, hidden)}.items():
                state[f"blocks.{i}.{key}"] = value
        return StaticViT.from_state_dict(
            arch,
            self.space.fixed_parts(),
            {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in state.items()},
            drop_rate=self.drop_rate,
            attn_drop_rate=self.attn_drop_rate,
            drop_path_rate=self.drop_path_rate,
        )
