"""The relative-position attention as first written (and as the reference AutoFormer computes it): the oracle the
decomposed form in ``pipeline.model.layers.attend`` is checked against, and the "old form" of the benchmark.

It materialises the ``(tokens, tokens, head_dim)`` pair embeddings of both tables by gathering, then runs a
batched product over the query rows against them, for keys and for values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.model.layers import RelativePosition2D


def pair_indices(grid_size: int, max_distance: int) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.arange(grid_size * grid_size)
    rows, cols = pos // grid_size, pos % grid_size
    dv = (rows[None, :] - rows[:, None]).clamp(-max_distance, max_distance) + max_distance + 1
    dh = (cols[None, :] - cols[:, None]).clamp(-max_distance, max_distance) + max_distance + 1
    return F.pad(dv, (1, 0, 1, 0)), F.pad(dh, (1, 0, 1, 0))  # index 0: pairs with the class token


def pair_embeddings(rel: RelativePosition2D) -> torch.Tensor:
    index_v, index_h = (i.to(rel.table_v.device) for i in pair_indices(rel.grid_size, rel.max_distance))
    return rel.table_v[index_v] + rel.table_h[index_h]


def reference_attend(q, k, v, rel_k, rel_v, dropout_p: float) -> torch.Tensor:
    if rel_k is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    table_k, table_v = pair_embeddings(rel_k), pair_embeddings(rel_v)
    b, h, n, d = q.shape
    logits = q @ k.transpose(-2, -1)
    q_by_row = q.permute(2, 0, 1, 3).reshape(n, b * h, d)
    logits = logits + (q_by_row @ table_k.transpose(1, 2)).reshape(n, b, h, n).permute(1, 2, 0, 3)
    attn = (logits * d**-0.5).softmax(dim=-1)
    attn = F.dropout(attn, dropout_p, training=dropout_p > 0)
    out = attn @ v
    attn_by_row = attn.permute(2, 0, 1, 3).reshape(n, b * h, n)
    return out + (attn_by_row @ table_v).reshape(n, b, h, d).permute(1, 2, 0, 3)
