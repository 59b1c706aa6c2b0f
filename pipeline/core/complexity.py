"""Exact parameter and multiply-accumulate (MAC) counts as closed-form arithmetic.

These are the numbers the search constrains on, so they must be exact, not estimates. They are defined by the
model that ``pipeline.model`` builds, and tests check both against it: ``params`` equals the parameter count
of the extracted static model, and ``macs`` equals half of what ``torch.utils.flop_counter.FlopCounterMode``
counts on one forward pass of one image (it counts 2 per MAC of matrix products, attention and convolutions;
norms, activations, softmax and additions are not counted, so they are not counted here either).

The model (as the AutoFormer reference): a patch-embedding convolution with bias, a class token, an absolute
position embedding, ``depth`` pre-norm blocks, a final LayerNorm and a linear head on the class token. Block i
has LayerNorm, a fused Q-K-V projection (heads_i x head_dim per Q, K, V, with bias when ``qkv_bias``), an
output projection, LayerNorm, and an MLP of width int(embed_dim x ratio_i). With relative position on, each
block also holds the 2-D key and value tables: vertical and horizontal, (2 x max distance + 2) x head_dim each.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.arch import Architecture
from pipeline.core.sampling import largest_architecture, smallest_architecture
from pipeline.core.space import SearchSpace


def _fixed(space_or_fixed: SearchSpace | dict[str, Any]) -> dict[str, Any]:
    return space_or_fixed.fixed_parts() if isinstance(space_or_fixed, SearchSpace) else dict(space_or_fixed)


def count_params(arch: Architecture, space: SearchSpace | dict[str, Any]) -> int:
    """Trainable parameters of the standalone model of ``arch`` under the space's fixed parts."""
    f = _fixed(space)
    e, hd, p, c = arch.embed_dim, f["head_dim"], f["patch_size"], f["in_chans"]
    tokens = (f["image_size"] // p) ** 2 + 1
    total = e * c * p * p + e  # patch embedding conv
    total += e + tokens * e  # class token, absolute position embedding
    rel_tables = 4 * (2 * f["max_relative_position"] + 2) * hd if f["relative_position"] else 0
    qkv_bias = 1 if f["qkv_bias"] else 0
    for heads, hidden in zip(arch.num_heads, arch.mlp_hidden_dims()):
        q = heads * hd
        total += 2 * e  # norm1
        total += 3 * q * e + 3 * q * qkv_bias  # qkv
        total += q * e + e  # proj
        total += rel_tables
        total += 2 * e  # norm2
        total += e * hidden + hidden + hidden * e + e  # fc1, fc2
    total += 2 * e  # final norm
    total += e * f["num_classes"] + f["num_classes"]  # head
    return total


def relative_key_width(head_dim: int, grid_size: int) -> int:
    """Columns the decomposed relative-position attention appends to each head's queries, keys and values: key row
    and key column indicators and the class token (once per table), padded so that head dim + width is a
    multiple of 8."""
    width = 2 * grid_size + 2
    return width + (-(head_dim + width) % 8)


def count_macs(arch: Architecture, space: SearchSpace | dict[str, Any], paper: bool = False) -> int:
    """Multiply-accumulates of one forward pass of one image (what papers print as "FLOPs").

    With relative position this is what the model computes (the decomposed form: each head's attention runs over
    ``head_dim + relative_key_width`` columns, plus the queries against the table rows and the attention mass
    per table row against the tables). ``paper=True`` leaves the relative-position products out, as the paper's
    figures do.
    """
    f = _fixed(space)
    e, hd, p, c = arch.embed_dim, f["head_dim"], f["patch_size"], f["in_chans"]
    grid = f["image_size"] // p
    patches = grid**2
    n = patches + 1
    total = patches * e * c * p * p  # patch embedding conv
    relative = f["relative_position"] and not paper
    table_rows = 2 * f["max_relative_position"] + 2
    for heads, hidden in zip(arch.num_heads, arch.mlp_hidden_dims()):
        q = heads * hd
        total += n * e * 3 * q  # qkv
        if relative:
            width = hd + relative_key_width(hd, grid)
            total += heads * (2 * n * n * width + 2 * n * (2 * table_rows) * hd)  # attention; query, value terms
        else:
            total += 2 * heads * n * n * hd  # q@k^T and attn@v
        total += n * q * e  # proj
        total += 2 * n * e * hidden  # fc1, fc2
    total += e * f["num_classes"]  # head on the class token
    return total


def stats(arch: Architecture, space: SearchSpace | dict[str, Any]) -> dict[str, int]:
    return {"params": count_params(arch, space), "macs": count_macs(arch, space)}


def space_ranges(space: SearchSpace) -> dict[str, tuple[int, int]]:
    """Exact min/max of params and MACs over the space.

    Both counts grow monotonically in every gene (all sizes are positive), so the smallest and largest members
    are the extremes; this is what feasibility checks against constraints rely on.
    """
    lo, hi = smallest_architecture(space), largest_architecture(space)
    return {
        "params": (count_params(lo, space), count_params(hi, space)),
        "macs": (count_macs(lo, space), count_macs(hi, space)),
    }
