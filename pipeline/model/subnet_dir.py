"""Standalone subnet files: a directory with ``config.json`` and ``model.safetensors``. This module owns that format.

``config.json`` holds everything needed to rebuild the model (architecture, the space's fixed parts, image
size, classes, input normalization) plus free-form metadata (where it came from, its accuracies). Loading
needs neither the supernet nor Ray. Directories are written under a temporary name and renamed into place,
so a crash never leaves a half-written model where a user would look for one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.core.arch import ARCH_KEYS, Architecture
from pipeline.core.complexity import count_macs, count_params
from pipeline.core.space import FIXED_KEYS, complete_fixed_parts
from pipeline.model.directory import CHECKSUMS_KEY, checked_load, record_checksums, write_config, write_directory
from pipeline.model.directory import read_config as read_directory_config
from pipeline.model.onnx_export import onnx_bytes
from pipeline.model.state_check import WeightsMismatch
from pipeline.model.static import StaticViT
from pipeline.shared.errors import UserError

FORMAT = "autoformer-subnet"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Every top-level key save_model has ever written (the format is closed: free-form notes go under 'metadata').
# image_size and num_classes repeat fixed's (readers such as the teacher take them from the top level); params
# and macs are counts for people reading the file, never read back.
CONFIG_KEYS = (
    "format",
    "format_version",
    "architecture",
    "fixed",
    "image_size",
    "num_classes",
    "normalization",
    "params",
    "macs",
    "metadata",
    CHECKSUMS_KEY,
)
COPIED_FIXED_KEYS = ("image_size", "num_classes")


def default_normalization(in_chans: int) -> dict[str, list[float]]:
    """ImageNet statistics for RGB input, (0.5, 0.5) per channel otherwise; tasks pass their own."""
    if in_chans == 3:
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return {"mean": [0.5] * in_chans, "std": [0.5] * in_chans}


def _check_normalization(norm: Any, in_chans: int, where: str) -> dict[str, list[float]]:
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        raise UserError(f"{where}: 'normalization' must be an object with keys 'mean' and 'std', got {norm!r}")
    for key in ("mean", "std"):
        values = norm[key]
        if not isinstance(values, (list, tuple)) or len(values) != in_chans:
            raise UserError(
                f"{where}: normalization {key!r} must list one number per input channel ({in_chans}), got {values!r}"
            )
    if any(s <= 0 for s in norm["std"]):
        raise UserError(f"{where}: normalization 'std' must be positive, got {norm['std']!r}")
    return {"mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]]}


def save_model(
    model: StaticViT,
    path: str | Path,
    normalization: dict[str, list[float]] | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    onnx: bool = False,
) -> Path:
    """Write ``model`` as a standalone model directory at ``path`` (atomically); with ``onnx``, ``model.onnx``
    (dynamic batch) beside the weights."""
    path = Path(path)
    fixed = model.fixed
    norm = _check_normalization(
        normalization if normalization is not None else default_normalization(fixed["in_chans"]),
        fixed["in_chans"],
        f"model directory {str(path)!r}",
    )
    if path.exists() and not overwrite:
        raise UserError(
            f"model directory {str(path)!r} already exists; choose another path (or overwrite=True to replace it)"
        )
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.arch.to_dict(),
        "fixed": {k: fixed[k] for k in FIXED_KEYS},
        "image_size": fixed["image_size"],
        "num_classes": fixed["num_classes"],
        "normalization": norm,
        "params": count_params(model.arch, fixed),
        "macs": count_macs(model.arch, fixed),
        "metadata": metadata or {},
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}

    graph = onnx_graph(model) if onnx else None  # exported first: a failure leaves nothing half-written

    def fill(directory: Path) -> None:
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
        if graph is not None:
            (directory / ONNX_FILE).write_bytes(graph)
        write_config(directory, record_checksums(directory, config, WEIGHTS_FILE))

    return write_directory(path, fill)


def read_config(path: str | Path) -> dict[str, Any]:
    """The validated ``config.json`` of a model directory."""
    where = f"model directory {str(path)!r}"
    config = read_directory_config(
        path, FORMAT, FORMAT_VERSION, "model", "is this a model directory written by 'autoformer export'?"
    )
    _check_top_level(config, where)
    fixed = config.get("fixed")
    if isinstance(fixed, dict):
        fixed = config["fixed"] = complete_fixed_parts(fixed)
    if not isinstance(fixed, dict) or set(fixed) != set(FIXED_KEYS):
        raise UserError(f"{where}: 'fixed' must have exactly the keys {', '.join(FIXED_KEYS)}")
    for key in COPIED_FIXED_KEYS:
        if key in config and config[key] != fixed[key]:
            raise UserError(
                f"{where}: top-level {key!r} is {config[key]!r} but fixed.{key} is {fixed[key]!r}; the model is "
                f"built from fixed.{key} (the top-level one is its copy): make them agree"
            )
        config[key] = fixed[key]
    config["architecture"] = Architecture.from_dict(config.get("architecture"), source=f"{where}: architecture")
    config["normalization"] = _check_normalization(config.get("normalization"), fixed["in_chans"], where)
    return config


def _check_top_level(config: dict[str, Any], where: str) -> None:
    """Refuse a top-level key the format does not have, naming where it belongs: the model is built from
    'architecture' and 'fixed' only, so an ``embed_dim`` or ``head_dim`` edited at the top level would be
    silently ignored."""
    unknown = next((str(k) for k in config if k not in CONFIG_KEYS), None)
    if unknown is None:
        return
    home = "architecture" if unknown in ARCH_KEYS else "fixed" if unknown in FIXED_KEYS else "metadata"
    reads = "the model is built from it" if home != "metadata" else "free-form notes go there"
    raise UserError(f"{where}: config.json has unknown top-level key {unknown!r}; it belongs under {home!r} ({reads})")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[StaticViT, dict[str, Any]]:
    """Rebuild a standalone model from its directory; returns the model (eval mode) and its config."""
    config = read_config(path)
    state = checked_load(path, WEIGHTS_FILE, config, "model", lambda p: load_file(p, device=str(map_location)))
    try:
        model = StaticViT.from_state_dict(config["architecture"], config["fixed"], state)
    except WeightsMismatch as exc:  # names and shapes compared first: one line, not torch's list
        raise UserError(f"model directory {str(path)!r}: {WEIGHTS_FILE} does not match config.json: {exc}") from None
    return model.eval(), config


def onnx_graph(model: StaticViT) -> bytes:
    """The model as ONNX: input ``images`` (N, C, H, W) float32, output ``logits``, dynamic batch."""
    f = model.fixed
    example = torch.zeros(1, f["in_chans"], f["image_size"], f["image_size"])
    return onnx_bytes(model.cpu().eval(), example)


def add_onnx(path: str | Path) -> Path:
    """Write ``model.onnx`` into an existing model directory (atomically: a temporary name, then a rename)."""
    model, _ = load_model(path)
    target = Path(path) / ONNX_FILE
    tmp = target.with_name(f".{ONNX_FILE}.tmp")
    tmp.write_bytes(onnx_graph(model))
    tmp.replace(target)
    return target
