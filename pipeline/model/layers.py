"""Pieces shared by the static model and both supernets, so every model runs the very same arithmetic.

Kept functional where the supernets must call them with sliced weights; the static model calls them from
plain modules. Nothing here keeps state between calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from pipeline.core.complexity import relative_key_width
from pipeline.shared.errors import UserError


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic-depth rate per layer, rising linearly from 0 to ``rate`` over the *sampled* depth (DeiT/timm).

    Computed from the subnet's own depth so that a subnet trained inside the supernet sees the schedule its
    standalone model would have.
    """
    if depth == 1:
        return [0.0]
    return [rate * i / (depth - 1) for i in range(depth)]


class RelativePosition2D(nn.Module):
    """AutoFormer's 2-D relative position for one of keys or values in one layer, computed in decomposed form.

    Two learned tables (vertical and horizontal offsets), each ``(2 * max_distance + 2) x head_dim``. Offsets
    between patches are clipped to ``[-max_distance, max_distance]`` and shifted to ``1 .. 2 * max_distance + 1``;
    index 0 is reserved for every pair that involves the class token. The embedding of a token pair is the sum
    of its vertical and horizontal entries. Head dim is fixed by the space, so the tables are shared by all heads
    and need no slicing in the supernet.

    The pair embedding depends on the query token and only on the key's grid row (vertical table) or column
    (horizontal table), so nothing of size tokens x tokens x head_dim is ever built. Keys are described by
    ``key_groups`` (tokens x width): a one-hot of their grid row, a one-hot of their grid column, and two columns
    that mark the class token (one per table), then zero padding. ``table_row[i, c]`` says which row of the
    stacked tables ``[table_v; table_h]`` column ``c`` stands for when token ``i`` is the query (the class-token
    query uses row 0 of each table throughout; padding points past the tables). ``attend`` uses both to fold the
    key and the value term into one fused attention call.
    """

    def __init__(self, head_dim: int, max_distance: int, grid_size: int) -> None:
        super().__init__()
        self.max_distance, self.grid_size = max_distance, grid_size
        self.table_v = nn.Parameter(torch.zeros(2 * max_distance + 2, head_dim))
        self.table_h = nn.Parameter(torch.zeros(2 * max_distance + 2, head_dim))
        # Derived from the image grid, not learned: kept out of state dicts and safetensors files.
        for name, value in self._derived(grid_size, max_distance, head_dim).items():
            self.register_buffer(name, value, persistent=False)
        trunc_normal_(self.table_v, std=0.02)
        trunc_normal_(self.table_h, std=0.02)

    def rebuild_index(self, device: torch.device) -> None:
        """Recompute the derived buffers on ``device``; used after building a model on the meta device."""
        for name, value in self._derived(self.grid_size, self.max_distance, self.table_v.shape[1]).items():
            setattr(self, name, value.to(device))

    @staticmethod
    def _derived(grid_size: int, max_distance: int, head_dim: int) -> dict[str, torch.Tensor]:
        g, rows = grid_size, 2 * max_distance + 2
        width = relative_key_width(head_dim, g)
        pos = torch.arange(g * g)
        lines = torch.arange(g)
        groups = torch.zeros(g * g + 1, width)
        groups[1 + pos, pos // g] = 1.0  # key in grid row r
        groups[1 + pos, g + pos % g] = 1.0  # key in grid column c
        groups[0, 2 * g : 2 * g + 2] = 1.0  # the class-token key, once per table
        offset = lambda a, b: (b - a).clamp(-max_distance, max_distance) + max_distance + 1  # noqa: E731
        table_row = torch.full((g * g + 1, width), 2 * rows)  # padding: past the tables (a zero column)
        table_row[1:, :g] = offset((pos // g)[:, None], lines[None, :])
        table_row[1:, g : 2 * g] = rows + offset((pos % g)[:, None], lines[None, :])
        table_row[:, 2 * g] = 0
        table_row[:, 2 * g + 1] = rows
        table_row[0, :g], table_row[0, g : 2 * g] = 0, rows  # the class-token query: entry 0 of each table
        return {"key_groups": groups, "table_row": table_row}

    def tables(self) -> torch.Tensor:
        return torch.cat([self.table_v, self.table_h])

    def query_terms(self, q: torch.Tensor) -> torch.Tensor:
        """``(B, H, N, width)``: for query ``i`` and key-group column ``c``, ``q_i`` dotted with the table row that
        column stands for; dotted with ``key_groups[j]`` this gives exactly ``q_i . r[i, j]``."""
        b, h, n, _ = q.shape
        dots = F.pad(q @ self.tables().to(q.dtype).T, (0, 1))  # the extra zero column serves the padding
        return dots.gather(-1, self.table_row.expand(b, h, n, -1))

    def value_terms(self, mass: torch.Tensor) -> torch.Tensor:
        """``sum_j a[i, j] r[i, j]`` as ``(B, H, N, head_dim)``, from ``mass`` = attention probabilities times
        ``key_groups`` (the attention each query puts on every key row, key column and the class token)."""
        b, h, n, _ = mass.shape
        per_row = mass.new_zeros(b, h, n, 2 * self.table_v.shape[0] + 1)
        per_row = per_row.scatter_add(-1, self.table_row.expand(b, h, n, -1), mass)
        return per_row[..., :-1] @ self.tables().to(mass.dtype)


def check_images(images: object, in_chans: int, image_size: int) -> None:
    """Raise unless ``images`` is a batch (N, C, H, W) of the size and channels the model was built for.

    A patch embedding takes any image size and gives more or fewer tokens, so a 16 px batch into an 8 px model
    fails only at the position embedding, in torch's words about tensor sizes; this names both sizes. It sits
    on the forward path, so the good case is one type check and four integer comparisons (about a microsecond).
    """
    if not isinstance(images, torch.Tensor):
        shape = f"(N, {in_chans}, {image_size}, {image_size})"
        raise TypeError(f"images must be a torch.Tensor of shape {shape}, not {type(images).__name__}")
    shape = images.shape
    if len(shape) == 4 and shape[1] == in_chans and shape[2] == image_size and shape[3] == image_size:
        return
    if len(shape) != 4:
        raise UserError(f"images must be a batch of shape (N, C, H, W), got shape {tuple(shape)}")
    if shape[2] != image_size or shape[3] != image_size:
        raise UserError(f"images are {shape[2]}x{shape[3]} px; this model takes {image_size}x{image_size}")
    raise UserError(f"images have {shape[1]} channels; this model takes {in_chans}")


def pool(x: torch.Tensor, pooling: str) -> torch.Tensor:
    """The image's feature from the normalised tokens: the class token (``cls``), or the mean of the patch tokens
    (``mean``, the AutoFormer reference's ``--gp``)."""
    return x[:, 0] if pooling == "cls" else x[:, 1:].mean(dim=1)


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
    rel_k: RelativePosition2D | None,
    rel_v: RelativePosition2D | None,
    dropout_p: float,
) -> torch.Tensor:
    """Scaled dot-product attention over ``(B, H, N, d)``; with relative position, AutoFormer's form.

    With relative position the logits gain ``q_i . r_k[i, j]`` and the output gains ``sum_j a[i, j] r_v[i, j]``.
    Both go through one ``F.scaled_dot_product_attention`` call (fused kernels on GPU and CPU, nothing of size
    N x N x d and no N x N bias in memory): the queries are extended with their dot products against the key
    table rows (``rel_k.query_terms``), the keys with their grid row/column/class-token indicators, so the
    extended dot product is exactly the logit with its key term; the values are extended with the same
    indicators, so the extended output also carries the attention mass per key row, column and class token, from
    which ``rel_v.value_terms`` forms the value term. ``dropout_p`` must already be 0 outside training.
    """
    if rel_k is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    assert rel_v is not None
    b, h, n, d = q.shape
    groups = rel_k.key_groups.to(q.dtype).expand(b, h, n, -1)
    extended = F.scaled_dot_product_attention(
        torch.cat([q, rel_k.query_terms(q)], -1),
        torch.cat([k, groups], -1),
        torch.cat([v, groups], -1),
        dropout_p=dropout_p,
        scale=d**-0.5,
    )
    out, mass = extended.split([d, extended.shape[-1] - d], -1)
    return out + rel_v.value_terms(mass)


def init_vit_weights(module: nn.Module) -> None:
    """timm's ViT initialisation: truncated normal (std 0.02) for linear weights, zero biases.

    LayerNorms keep PyTorch's ones/zeros and the patch convolution PyTorch's default, as in timm.
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
