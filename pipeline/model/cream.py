"""Import of the AutoFormer reference supernets (microsoft/Cream ``AutoFormer/``, the paper's released
supernet-T/S/B checkpoints) into this package's supernet format: plain functions beside the model, as timm keeps
its checkpoint converters.

What differs from this package, and how the import bridges it:

* names: ``patch_embed_super.proj``, ``blocks.N.attn.qkv``/``proj``, ``attn.rel_pos_embed_{k,v}.embeddings_table_{v,h}``,
  ``attn_layer_norm``, ``ffn_layer_norm``, ``fc1``, ``fc2``, ``norm``, ``head``, ``cls_token``, ``pos_embed``;
* Q-K-V weight rows are interleaved per channel there (row 3j is q_j, 3j+1 is k_j, 3j+2 is v_j): de-interleaved
  into this package's [Q; K; V] blocks (a fixed permutation);
* the Q-K-V bias is sliced as a contiguous prefix there (``bias[:3q]``), so its K and V biases depend on the
  sampled Q-K-V dim: the space's ``qkv_bias_layout`` becomes ``prefix`` and the bias is kept as it stands;
* the released runs pool by the mean of the patch tokens (``--gp``) and use LayerNorm eps 1e-5: ``pooling``
  becomes ``mean`` and ``layer_norm_eps`` 1e-5;
* the reference supernets can be larger than the space (supernet-T has embed 256 where the tiny space's
  largest choice is 240; supernet-B has embed 640 and 16 layers): every architecture of the space only ever
  uses first-k slices, so the import keeps the first-k slice of each tensor that the space needs.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from pipeline.core.space import SearchSpace
from pipeline.model.supernet import Supernet
from pipeline.model.supernet_dir import supernet_config, write_supernet_dir
from pipeline.shared.errors import UserError

REFERENCE_OPTIONS = {"pooling": "mean", "layer_norm_eps": 1e-5, "qkv_bias_layout": "prefix"}
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
IMAGENET_TRAIN = "imagenet-1k-train"  # what the released supernets were trained on: every ImageNet training image

# reference name (block keys with {i}) -> (this package's name, which dims may be cut to the space's first-k slice)
GLOBAL_KEYS = {
    "patch_embed_super.proj.weight": ("patch_embed.proj.weight", (True, False, False, False)),
    "patch_embed_super.proj.bias": ("patch_embed.proj.bias", (True,)),
    "cls_token": ("cls_token", (False, False, True)),
    "pos_embed": ("pos_embed", (False, False, True)),
    "norm.weight": ("norm.weight", (True,)),
    "norm.bias": ("norm.bias", (True,)),
    "head.weight": ("head.weight", (False, True)),
    "head.bias": ("head.bias", (False,)),
}
BLOCK_KEYS = {
    "attn_layer_norm.weight": ("attention.norm.weight", (True,)),
    "attn_layer_norm.bias": ("attention.norm.bias", (True,)),
    "attn.qkv.weight": ("attention.attn.qkv.weight", (True, True)),  # de-interleaved first
    "attn.qkv.bias": ("attention.attn.qkv.bias", (True,)),  # kept as a prefix
    "attn.proj.weight": ("attention.attn.proj.weight", (True, True)),
    "attn.proj.bias": ("attention.attn.proj.bias", (True,)),
    "ffn_layer_norm.weight": ("mlp.norm.weight", (True,)),
    "ffn_layer_norm.bias": ("mlp.norm.bias", (True,)),
    "fc1.weight": ("mlp.mlp.fc1.weight", (True, True)),
    "fc1.bias": ("mlp.mlp.fc1.bias", (True,)),
    "fc2.weight": ("mlp.mlp.fc2.weight", (True, True)),
    "fc2.bias": ("mlp.mlp.fc2.bias", (True,)),
}
for _ref, _ours in (("k", "k"), ("v", "v")):
    for _axis in ("v", "h"):
        BLOCK_KEYS[f"attn.rel_pos_embed_{_ref}.embeddings_table_{_axis}"] = (
            f"attention.attn.rel_pos_{_ours}.table_{_axis}",
            (False, False),
        )
BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")


def reference_space(space: SearchSpace) -> SearchSpace:
    """``space`` computed as the reference code computes it (mean pooling, eps 1e-5, prefix Q-K-V bias)."""
    return dataclasses.replace(space, **REFERENCE_OPTIONS)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a reference checkpoint (``{'model': state_dict}``, or a bare state dict), loaded with
    ``weights_only=True``: a pickle that needs code to load is refused, never run."""
    where = f"checkpoint {str(path)!r}"
    if not Path(path).is_file():
        raise UserError(f"{where} does not exist (or is not a file)")
    with open(path, "rb") as f:
        head = f.read(2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # torch.save writes a zip; old files start as a pickle
        raise UserError(f"{where} is not a PyTorch checkpoint (neither torch.save's zip format nor a pickle)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        reason = f"it refers to {found.group(1)}" if found else "it holds objects other than tensors"
        raise UserError(f"{where} needs code to load, which weights_only=True refuses ({reason})") from None
    except Exception as exc:  # a damaged file: torch raises RuntimeError, EOFError, ...
        raise UserError(
            f"{where} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{where}: expected a state dict of tensors (or {{'model': state_dict}})")
    return {str(k).removeprefix("module."): v for k, v in data.items()}


def _fit(tensor: torch.Tensor, shape: tuple[int, ...], cut: tuple[bool, ...], key: str, where: str) -> torch.Tensor:
    """The first-k slice of ``tensor`` with ``shape``; dims that may not be cut must match exactly."""
    ok = tensor.dim() == len(shape) and all(
        have >= want if may_cut else have == want for have, want, may_cut in zip(tensor.shape, shape, cut)
    )
    if not ok:
        raise UserError(
            f"{where}: key {key!r} has shape {tuple(tensor.shape)}, which does not fit the space's {shape} "
            f"(a larger checkpoint is cut to the space's largest choices; it cannot be smaller)"
        )
    return tensor[tuple(slice(0, s) for s in shape)].contiguous()


def _deinterleave_qkv(weight: torch.Tensor) -> torch.Tensor:
    """Reference rows (q_0, k_0, v_0, q_1, k_1, v_1, ...) -> [Q; K; V] blocks."""
    if weight.shape[0] % 3:
        return weight  # _fit reports the shape
    return torch.cat([weight[0::3], weight[1::3], weight[2::3]])


def convert_state(reference: dict[str, torch.Tensor], space: SearchSpace, where: str) -> dict[str, torch.Tensor]:
    """A reference state dict -> this package's entangled-supernet state dict for ``space`` (which must compute as
    the reference does: see ``reference_space``). Every key and shape is checked."""
    with torch.device("meta"):  # a model without memory gives the target names and shapes
        target = Supernet(space).state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in reference.items():
        block = BLOCK_KEY.fullmatch(key)
        if block is not None and block.group(2) in BLOCK_KEYS:
            index, rest = int(block.group(1)), block.group(2)
            if index >= space.max_depth:
                continue  # layers beyond the space's deepest architecture are never used
            name, cut = BLOCK_KEYS[rest]
            name = f"blocks.{index}.{name}"
            if rest == "attn.qkv.weight":
                tensor = _deinterleave_qkv(tensor)
                q = tensor.shape[0] // 3
                want_q = target[name].shape[0] // 3
                if q >= want_q:
                    tensor = torch.cat([tensor[:want_q], tensor[q : q + want_q], tensor[2 * q : 2 * q + want_q]])
        elif key in GLOBAL_KEYS:
            name, cut = GLOBAL_KEYS[key]
        else:
            raise UserError(f"{where}: unexpected key {key!r}: not a key of an AutoFormer reference supernet")
        if name not in target:
            raise UserError(
                f"{where}: key {key!r} has no counterpart in search space {space.name!r} (does the space use relative position and a Q-K-V bias?)"
            )
        out[name] = _fit(tensor, tuple(target[name].shape), cut, key, where)
    missing = sorted(set(target) - set(out))
    if missing:
        reference_name = _reference_name(missing[0])
        raise UserError(f"{where}: key {reference_name!r} is missing (search space {space.name!r} needs it)")
    return out


def _reference_name(name: str) -> str:
    """This package's key -> the reference's, for messages."""
    for ref, (ours, _) in GLOBAL_KEYS.items():
        if ours == name:
            return ref
    block = BLOCK_KEY.fullmatch(name)
    if block is not None:
        for ref, (ours, _) in BLOCK_KEYS.items():
            if ours == block.group(2):
                return f"blocks.{block.group(1)}.{ref}"
    return name


def import_cream(checkpoint: str | Path, space: SearchSpace, out: str | Path, overwrite: bool = False) -> Path:
    """Write the reference checkpoint as a supernet directory of ``space`` at ``out`` (all checks first, then an
    atomic write). Its config records the reference options, ImageNet normalisation, and that it was trained on
    every ImageNet-1k training image."""
    if Path(out).exists() and not overwrite:
        raise UserError(f"out {str(out)!r} already exists; choose another path (or overwrite=True to replace it)")
    space = reference_space(space)
    where = f"checkpoint {str(checkpoint)!r}"
    state = convert_state(read_checkpoint(checkpoint), space, where)
    config: dict[str, Any] = supernet_config(
        space.to_dict(),
        "entangled",
        {"drop_rate": 0.0, "attn_drop_rate": 0.0, "drop_path_rate": 0.0},
        source={"format": "cream-autoformer", "checkpoint": str(checkpoint)},
        normalization=IMAGENET_NORMALIZATION,
        training_data=IMAGENET_TRAIN,
    )
    return write_supernet_dir(out, state, config)
