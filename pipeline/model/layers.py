"""Pieces shared by the static model and both supernets, so every model runs the very same arithmetic.

Kept functional where the supernets must call them with sliced weights; the static model calls them from
plain modules. Nothing here keeps state between calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

LAYER_NORM_EPS = 1e-6  # timm's ViT value, so homogeneous subnets convert to timm with identical logits


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic-depth rate per layer, rising linearly from 0 to ``rate`` over the *sampled* depth (DeiT/timm).

    Computed from the subnet's own depth so that a subnet trained inside the supernet sees the schedule its
    standalone model would have.
    """
    if depth == 1:
        return [0.0]
    return [rate * i / (depth - 1) for i in range(depth)]


class RelativePosition2D(nn.Module):
    """AutoFormer's 2-D relative position table for one of keys or values in one layer.

    Two learned tables (vertical and horizontal offsets), each ``(2 * max_distance + 2) x head_dim``. Offsets
    between patches are clipped to ``[-max_distance, max_distance]`` and shifted to ``1 .. 2 * max_distance + 1``;
    index 0 is reserved for every pair that involves the class token. The embedding of a token pair is the sum
    of its vertical and horizontal entries. Head dim is fixed by the space, so the tables are shared by all heads
    and need no slicing in the supernet.
    """

    def __init__(self, head_dim: int, max_distance: int, grid_size: int) -> None:
        super().__init__()
        self.max_distance, self.grid_size = max_distance, grid_size
        self.table_v = nn.Parameter(torch.zeros(2 * max_distance + 2, head_dim))
        self.table_h = nn.Parameter(torch.zeros(2 * max_distance + 2, head_dim))
        index_v, index_h = self._indices(grid_size, max_distance)
        # Derived from the image grid, not learned: kept out of state dicts and safetensors files.
        self.register_buffer("index_v", index_v, persistent=False)
        self.register_buffer("index_h", index_h, persistent=False)
        trunc_normal_(self.table_v, std=0.02)
        trunc_normal_(self.table_h, std=0.02)

    def rebuild_index(self, device: torch.device) -> None:
        """Recompute the (derived) index buffers on ``device``; used after building a model on the meta device."""
        self.index_v, self.index_h = (t.to(device) for t in self._indices(self.grid_size, self.max_distance))

    @staticmethod
    def _indices(grid_size: int, max_distance: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(grid_size * grid_size)
        rows, cols = pos // grid_size, pos % grid_size
        dv = (rows[None, :] - rows[:, None]).clamp(-max_distance, max_distance) + max_distance + 1
        dh = (cols[None, :] - cols[:, None]).clamp(-max_distance, max_distance) + max_distance + 1
        # One row and one column of zeros in front: the class token's index.
        return F.pad(dv, (1, 0, 1, 0)), F.pad(dh, (1, 0, 1, 0))

    def forward(self) -> torch.Tensor:
        """``(tokens, tokens, head_dim)`` embeddings, tokens = patches + class token."""
        return self.table_v[self.index_v] + self.table_h[self.index_h]


def split_heads(qkv: torch.Tensor, num_heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(B, N, 3 * heads * head_dim)`` fused projections -> q, k, v each ``(B, heads, N, head_dim)``."""
    b, n, _ = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_k: torch.Tensor | None,
    rel_v: torch.Tensor | None,
    dropout_p: float,
) -> torch.Tensor:
    """Scaled dot-product attention over ``(B, H, N, d)``; with relative position, AutoFormer's form.

    Without relative position this is ``F.scaled_dot_product_attention`` (fused kernels on GPU and CPU). With
    it, the attention logits gain ``q . r_k[i, j]`` and the output gains ``sum_j a[i, j] r_v[i, j]``; the second
    term needs the attention probabilities, which the fused kernel does not return, so that path is explicit.
    ``dropout_p`` must already be 0 outside training.
    """
    if rel_k is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    assert rel_v is not None
    b, h, n, d = q.shape
    logits = q @ k.transpose(-2, -1)
    q_by_row = q.permute(2, 0, 1, 3).reshape(n, b * h, d)
    logits = logits + (q_by_row @ rel_k.transpose(1, 2)).reshape(n, b, h, n).permute(1, 2, 0, 3)
    attn = (logits * d**-0.5).softmax(dim=-1)
    attn = F.dropout(attn, dropout_p, training=dropout_p > 0)
    out = attn @ v
    attn_by_row = attn.permute(2, 0, 1, 3).reshape(n, b * h, n)
    return out + (attn_by_row @ rel_v).reshape(n, b, h, d).permute(1, 2, 0, 3)


def init_vit_weights(module: nn.Module) -> None:
    """timm's ViT initialisation: truncated normal (std 0.02) for linear weights, zero biases.

    LayerNorms keep PyTorch's ones/zeros and the patch convolution PyTorch's default, as in timm.
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
