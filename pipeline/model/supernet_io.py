"""A trained supernet as a directory: ``config.json`` + ``supernet.safetensors``.

The config records what the weights mean (search space, sharing mode, regularisation) and where they came
from (task, splits, epochs, metrics), so search and export can load the supernet without Ray and without the
training run's checkpoint tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pipeline.errors import UserError
from pipeline.model.files import read_config, write_config, write_directory
from pipeline.model.supernet import Supernet
from pipeline.space import SearchSpace

FORMAT = "autoformer-supernet"
FORMAT_VERSION = 1
WEIGHTS_FILE = "supernet.safetensors"
DROP_KEYS = ("drop_rate", "attn_drop_rate", "drop_path_rate")


def supernet_config(space: dict[str, Any], sharing: str, regularization: dict[str, float], **provenance: Any) -> dict[str, Any]:
    """The config.json content: what the weights mean (space, sharing, regularisation) plus provenance."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "space": space,
        "sharing": sharing,
        "regularization": {k: regularization[k] for k in DROP_KEYS},
        **provenance,
    }


def write_supernet_dir(path: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write weights and config into ``path`` atomically (temporary sibling directory, then rename)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def fill(directory: Path) -> None:
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
        write_config(directory, config)

    return write_directory(path, fill)


def save_supernet(model: Supernet, path: str | Path, **provenance: Any) -> Path:
    regularization = {k: getattr(model, k) for k in DROP_KEYS}
    return write_supernet_dir(path, model.state_dict(), supernet_config(model.space.to_dict(), model.sharing, regularization, **provenance))


def read_supernet_config(path: str | Path) -> dict[str, Any]:
    return read_config(path, FORMAT, FORMAT_VERSION, "supernet", "expected the 'supernet' directory that 'autoformer train' writes")


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
