"""A trained supernet as a directory: ``config.json`` + ``supernet.safetensors``.

The config records what the weights mean (search space, sharing mode, regularisation) and where they came
from (task, splits, epochs, metrics), so search and export can load the supernet without Ray and without the
training run's checkpoint tree.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.errors import UserError
from pipeline.model.supernet import Supernet
from pipeline.space import SearchSpace

FORMAT = "autoformer-supernet"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "supernet.safetensors"
DROP_KEYS = ("drop_rate", "attn_drop_rate", "drop_path_rate")


def supernet_config(model: Supernet, **provenance: Any) -> dict[str, Any]:
    """The config.json content: the model's own description plus provenance (task, splits, epochs, metrics)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "space": model.space.to_dict(),
        "sharing": model.sharing,
        "regularization": {k: getattr(model, k) for k in DROP_KEYS},
        **provenance,
    }


def write_supernet_dir(path: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write weights and config into ``path`` atomically (temporary sibling directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            path.rename(old / "previous")
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def save_supernet(model: Supernet, path: str | Path, **provenance: Any) -> Path:
    return write_supernet_dir(path, model.state_dict(), supernet_config(model, **provenance))


def read_supernet_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    where = f"supernet directory {str(path)!r}"
    if not (path / CONFIG_FILE).is_file():
        raise UserError(f"{where}: no {CONFIG_FILE} (expected the 'supernet' directory that 'autoformer train' writes)")
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: {CONFIG_FILE} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UserError(f"{where}: {CONFIG_FILE} is not an {FORMAT!r} config")
    if config.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{where}: format_version {config.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    return config


def load_supernet(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Supernet, dict[str, Any]]:
    """Rebuild the supernet from its directory (eval mode). Needs no Ray."""
    config = read_supernet_config(path)
    space = SearchSpace.from_dict(config["space"], source=f"supernet directory {str(path)!r}")
    model = Supernet(space, sharing=config["sharing"], **config.get("regularization", {}))
    weights = Path(path) / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"supernet directory {str(path)!r}: no {WEIGHTS_FILE}")
    try:
        model.load_state_dict(load_file(str(weights), device=str(map_location)), strict=True)
    except RuntimeError as exc:
        raise UserError(f"supernet directory {str(path)!r}: {WEIGHTS_FILE} does not match config.json: {exc}") from None
    return model.to(map_location).eval(), config
