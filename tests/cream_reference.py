"""The AutoFormer reference code's forward pass, written out from its description (microsoft/Cream
``AutoFormer/model``) over a state dict in its layout: the check that an imported supernet computes the
reference's logits. Also the inverse of the import's mapping, to build such state dicts from random supernets.

Reference semantics: Q-K-V rows interleaved per channel and sliced by taking rows i, i+3, ... of the first 3q;
the Q-K-V bias sliced as the prefix ``bias[:3q]``; LayerNorm eps 1e-5; mean over the patch tokens after the
final norm (``--gp``); relative position materialised per pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from relpos_reference import pair_indices

from pipeline.core.arch import Architecture

# super-network sizes of the released checkpoints (experiments/supernet/supernet-{T,S,B}.yaml)
REFERENCE_SIZES = {
    "autoformer-tiny": {"embed": 256, "heads": 4, "depth": 14, "mlp_ratio": 4.0},
    "autoformer-small": {"embed": 448, "heads": 7, "depth": 14, "mlp_ratio": 4.0},
    "autoformer-base": {"embed": 640, "heads": 10, "depth": 16, "mlp_ratio": 4.0},
}
HEAD_DIM = 64


def to_reference_layout(state: dict[str, torch.Tensor], space, sizes: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A reference-layout state dict at the reference's sizes whose first-k slices are ``state`` (the rest random)."""
    gen = torch.Generator().manual_seed(seed)
    E, Q, D = sizes["embed"], sizes["heads"] * HEAD_DIM, sizes["depth"]
    hidden = int(E * sizes["mlp_ratio"])

    def filled(shape, ours: torch.Tensor | None) -> torch.Tensor:
        t = torch.randn(*shape, generator=gen) * 0.02
        if ours is not None:
            t[tuple(slice(0, s) for s in ours.shape)] = ours
        return t

    p, c, g = space.patch_size, space.in_chans, space.grid_size
    ref = {
        "patch_embed_super.proj.weight": filled((E, c, p, p), state["patch_embed.proj.weight"]),
        "patch_embed_super.proj.bias": filled((E,), state["patch_embed.proj.bias"]),
        "cls_token": filled((1, 1, E), state["cls_token"]),
        "pos_embed": filled((1, g * g + 1, E), state["pos_embed"]),
        "norm.weight": filled((E,), state["norm.weight"]),
        "norm.bias": filled((E,), state["norm.bias"]),
        "head.weight": filled((space.num_classes, E), state["head.weight"]),
        "head.bias": filled((space.num_classes,), state["head.bias"]),
    }
    rows = 2 * space.max_relative_position + 2
    for i in range(D):
        ours = lambda name: state.get(f"blocks.{i}.{name}")  # noqa: B023, E731
        b = f"blocks.{i}."
        qkv = ours("attention.attn.qkv.weight")
        weight = filled((3 * Q, E), None)
        if qkv is not None:
            q = qkv.shape[0] // 3
            for part in range(3):  # [Q; K; V] blocks -> rows 3j + part
                weight[part : 3 * q : 3, : qkv.shape[1]] = qkv[part * q : (part + 1) * q]
        ref[b + "attn.qkv.weight"] = weight
        ref[b + "attn.qkv.bias"] = filled((3 * Q,), ours("attention.attn.qkv.bias"))  # prefix layout: as it stands
        ref[b + "attn.proj.weight"] = filled((E, Q), ours("attention.attn.proj.weight"))
        ref[b + "attn.proj.bias"] = filled((E,), ours("attention.attn.proj.bias"))
        for which in ("k", "v"):
            for axis in ("v", "h"):
                ref[f"{b}attn.rel_pos_embed_{which}.embeddings_table_{axis}"] = filled(
                    (rows, HEAD_DIM), ours(f"attention.attn.rel_pos_{which}.table_{axis}")
                )
        for ref_name, our_name in (("attn_layer_norm", "attention.norm"), ("ffn_layer_norm", "mlp.norm")):
            ref[f"{b}{ref_name}.weight"] = filled((E,), ours(f"{our_name}.weight"))
            ref[f"{b}{ref_name}.bias"] = filled((E,), ours(f"{our_name}.bias"))
        ref[b + "fc1.weight"] = filled((hidden, E), ours("mlp.mlp.fc1.weight"))
        ref[b + "fc1.bias"] = filled((hidden,), ours("mlp.mlp.fc1.bias"))
        ref[b + "fc2.weight"] = filled((E, hidden), ours("mlp.mlp.fc2.weight"))
        ref[b + "fc2.bias"] = filled((E,), ours("mlp.mlp.fc2.bias"))
    return ref


def reference_logits(ref: dict[str, torch.Tensor], arch: Architecture, images: torch.Tensor, space) -> torch.Tensor:
    e, p = arch.embed_dim, space.patch_size
    ln = lambda x, w, b: F.layer_norm(x, (e,), w[:e], b[:e], 1e-5)  # noqa: E731
    x = F.conv2d(images, ref["patch_embed_super.proj.weight"][:e], ref["patch_embed_super.proj.bias"][:e], stride=p)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([ref["cls_token"][..., :e].expand(x.shape[0], -1, -1), x], 1) + ref["pos_embed"][..., :e]
    index_v, index_h = pair_indices(space.grid_size, space.max_relative_position)
    B, N, _ = x.shape
    for i, (heads, ratio) in enumerate(zip(arch.num_heads, arch.mlp_ratio)):
        b, q, hidden = f"blocks.{i}.", heads * HEAD_DIM, int(e * ratio)
        y = ln(x, ref[b + "attn_layer_norm.weight"], ref[b + "attn_layer_norm.bias"])
        w = ref[b + "attn.qkv.weight"][:, :e]
        w = torch.cat([w[part : 3 * q : 3] for part in range(3)])
        qkv = F.linear(y, w, ref[b + "attn.qkv.bias"][: 3 * q]).reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4)
        qh, kh, vh = qkv[0], qkv[1], qkv[2]
        scale = HEAD_DIM**-0.5
        table = lambda which, b=b: (  # noqa: E731
            ref[f"{b}attn.rel_pos_embed_{which}.embeddings_table_v"][index_v]
            + ref[f"{b}attn.rel_pos_embed_{which}.embeddings_table_h"][index_h]
        )
        attn = (qh @ kh.transpose(-2, -1)) * scale
        attn = (
            attn
            + (qh.permute(2, 0, 1, 3).reshape(N, heads * B, -1) @ table("k").transpose(2, 1))
            .transpose(1, 0)
            .reshape(B, heads, N, N)
            * scale
        )
        attn = attn.softmax(-1)
        out = (attn @ vh).transpose(1, 2).reshape(B, N, -1)
        rel = attn.permute(2, 0, 1, 3).reshape(N, B * heads, -1) @ table("v")
        out = out + rel.transpose(1, 0).reshape(B, heads, N, -1).transpose(2, 1).reshape(B, N, -1)
        x = x + F.linear(out, ref[b + "attn.proj.weight"][:e, :q], ref[b + "attn.proj.bias"][:e])
        y = ln(x, ref[b + "ffn_layer_norm.weight"], ref[b + "ffn_layer_norm.bias"])
        y = F.gelu(F.linear(y, ref[b + "fc1.weight"][:hidden, :e], ref[b + "fc1.bias"][:hidden]))
        x = x + F.linear(y, ref[b + "fc2.weight"][:e, :hidden], ref[b + "fc2.bias"][:e])
    x = ln(x, ref["norm.weight"], ref["norm.bias"])[:, 1:].mean(1)
    return F.linear(x, ref["head.weight"][:, :e], ref["head.bias"])
