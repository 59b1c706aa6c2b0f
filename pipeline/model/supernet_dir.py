"""A trained supernet as a directory: ``config.json`` + ``supernet.safetensors``. This module owns that format.

The config records what the weights mean (search space, sharing mode, regularisation) and where they came
from (task, splits, epochs, metrics), so search and export can load the supernet without Ray and without the
training run's checkpoint tree. ``build_supernet`` is the one way a ``Supernet`` is made from a config:
training, loading and the evaluators all go through it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pipeline.core.arch import Architecture
from pipeline.core.space import CHOICE_KEYS, FIXED_KEYS, SearchSpace
from pipeline.model.directory import (
    CHECKSUMS_KEY,
    CONFIG_FILE,
    checked_load,
    read_config,
    record_checksums,
    write_config,
    write_directory,
)
from pipeline.model.state_check import state_difference
from pipeline.model.supernet import Supernet
from pipeline.shared.errors import UserError
from pipeline.shared.storage import check_reachable, copy_directory, first_line, is_uri

FORMAT = "autoformer-supernet"
FORMAT_VERSION = 1
WEIGHTS_FILE = "supernet.safetensors"
EXPORT_DIR = "supernet"  # the directory name 'autoformer train' exports to, inside its run
DROP_KEYS = ("drop_rate", "attn_drop_rate", "drop_path_rate")
HINT = "expected the 'supernet' directory that 'autoformer train' writes"
T = TypeVar("T")
# The top level holds these (what the weights mean) plus free-form provenance (task, splits, epochs, history,
# metrics, source, normalization, ...: whatever the writer records, so unknown keys are kept, not refused).
FORMAT_KEYS = ("format", "format_version", "space", "sharing", "regularization", CHECKSUMS_KEY)
# Keys only read inside a section: at the top level they would change nothing, so one there was put in the
# wrong place (an edit meant for the space) and is refused, naming where it belongs.
SECTION_OF = {**{k: "space" for k in (*CHOICE_KEYS, *FIXED_KEYS)}, **{k: "regularization" for k in DROP_KEYS}}


def supernet_config(
    space: dict[str, Any], sharing: str, regularization: dict[str, float], **provenance: Any
) -> dict[str, Any]:
    """The config.json content: what the weights mean (space, sharing, regularisation) plus provenance.

    A provenance key that is a format key or a section's key would be overwritten or refused on loading, so it
    is a ``ValueError`` here, before anything is written.
    """
    clash = next((k for k in provenance if k in FORMAT_KEYS or k in SECTION_OF), None)
    if clash is not None:
        raise ValueError(f"supernet_config: provenance key {clash!r} is a key of the format; choose another name")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "space": space,
        "sharing": sharing,
        "regularization": {k: regularization[k] for k in DROP_KEYS},
        **provenance,
    }


def build_supernet(config: dict[str, Any], source: str = "supernet config") -> Supernet:
    """A freshly initialised supernet of the space, sharing mode and regularisation ``config`` records."""
    space = SearchSpace.from_dict(config["space"], source=source)
    return Supernet(space, sharing=config["sharing"], **config.get("regularization", {}))


def write_supernet_dir(path: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """Write weights and config into ``path`` atomically (temporary sibling directory, then rename)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}

    def fill(directory: Path) -> None:
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
        write_config(directory, record_checksums(directory, config, WEIGHTS_FILE))

    return write_directory(path, fill)


def save_supernet(model: Supernet, path: str | Path, **provenance: Any) -> Path:
    regularization = {k: getattr(model, k) for k in DROP_KEYS}
    config = supernet_config(model.space.to_dict(), model.sharing, regularization, **provenance)
    return write_supernet_dir(path, model.state_dict(), config)


def read_supernet_config(path: str | Path) -> dict[str, Any]:
    """The checked ``config.json`` of a supernet directory: its format keys present and of the right kind, and
    no key of a section (``space``, ``regularization``) at the top level, where it would be silently ignored."""
    config = read_config(path, FORMAT, FORMAT_VERSION, "supernet", HINT)
    where = f"supernet directory {str(path)!r}: {CONFIG_FILE}"
    misplaced = next((k for k in config if k in SECTION_OF), None)
    if misplaced is not None:
        raise UserError(
            f"{where} has {misplaced!r} at the top level, where it is not read; it belongs under "
            f"{SECTION_OF[misplaced]!r}"
        )
    for key, kind, words in (
        ("space", dict, "an object"),
        ("sharing", str, "a string"),
        ("regularization", dict, "an object"),
    ):
        value = config.get(key, {} if key == "regularization" else None)  # regularization: optional
        if not isinstance(value, kind):
            raise UserError(f"{where}: {key!r} must be {words}, got {type(value).__name__}")
    unknown = sorted(str(k) for k in config.get("regularization", {}) if k not in DROP_KEYS)
    if unknown:
        raise UserError(f"{where}: 'regularization' has unknown key {unknown[0]!r}; allowed: {', '.join(DROP_KEYS)}")
    return config


def read_weights(directory: str | Path, config: dict[str, Any], load: Callable[[str], T]) -> T:
    """``load(path)`` of a (local) supernet directory's weights, checked against the checksum its config
    recorded: corruption or truncation is one clear error naming the file."""
    return checked_load(directory, WEIGHTS_FILE, config, "supernet", load)


def load_supernet(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Supernet, dict[str, Any]]:
    """Rebuild the supernet from its directory (eval mode); ``path`` may be a URI. Needs no Ray."""
    with local_supernet(str(path)) as directory:
        config = read_supernet_config(directory)
        model = build_supernet(config, source=f"supernet directory {str(path)!r}")
        state = read_weights(directory, config, lambda p: load_file(p, device=str(map_location)))
        difference = state_difference(model.state_dict(), state)  # torch would list every mismatch, 30 lines
        if difference is not None:
            raise UserError(
                f"supernet directory {str(path)!r}: {WEIGHTS_FILE} does not match {CONFIG_FILE}: {difference}"
            )
        model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), config


def inherited_state(path: str | Path, arch: Architecture) -> dict[str, np.ndarray]:
    """The weights ``arch`` inherits from the supernet at ``path``, as arrays: what a fine-tuning run starts
    from (a plain mapping that a Tune trial's config carries)."""
    supernet, _ = load_supernet(path)
    return {k: v.numpy() for k, v in supernet.extract(arch).state_dict().items()}


@contextmanager
def local_supernet(path: str) -> Iterator[Path]:
    """The supernet directory on local disk (downloaded to a temporary directory when ``path`` is a URI). A URI
    is looked at once, quickly, first: storage that does not answer is one line within seconds naming the URI,
    not a traceback after minutes of the SDK's retries; a download that fails midway is one line too."""
    if not is_uri(path):
        yield Path(path)
        return
    check_reachable(path, "supernet")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            copy_directory(path.rstrip("/"), tmp)
        except OSError as exc:
            raise UserError(f"supernet {path!r} could not be downloaded: {first_line(exc)}") from None
        yield Path(tmp)


def trained_supernet_config(path: str) -> dict[str, Any] | None:
    """The config of a finished export at a local ``path``, or None when there is none (URIs: always None)."""
    if is_uri(path) or not (Path(path) / CONFIG_FILE).is_file():
        return None
    return read_supernet_config(path)
