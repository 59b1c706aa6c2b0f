"""Training checkpoints: everything needed to continue a run exactly where it stopped. This module owns that format.

A checkpoint directory holds ``supernet.safetensors`` (the weights of what is trained, a supernet or one
model), ``optimizer.pt`` (optimizer and scheduler state: torch's own format, since it holds Python structure)
and ``state.json`` (epoch, step, restart and resume counts, metric history, splits, task and space, and the
sha256 of the two other files), written last. The same directory is what Ray Train persists to the run's
storage path, local or ``s3://``/``gs://``. A checkpoint is sound when all three files are there and match
the recorded checksums; resuming skips any that is not, back to the newest sound one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.fs
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pipeline.model.directory import file_checksum
from pipeline.model.supernet_dir import WEIGHTS_FILE
from pipeline.shared.progress import say
from pipeline.shared.storage import filesystem, is_uri, join

STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train's name for the checkpoint directories of a run


def write_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any]
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(directory / WEIGHTS_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, directory / OPTIMIZER_FILE)
    sums = {name: file_checksum(directory / name) for name in (WEIGHTS_FILE, OPTIMIZER_FILE)}
    (directory / STATE_FILE).write_text(json.dumps({**state, "checksums": sums}, indent=2) + "\n", encoding="utf-8")


def progress(state: dict[str, Any]) -> tuple[int, int]:
    """How far a checkpoint's run got: (finished epochs, steps into the next one: a run stopped mid-epoch)."""
    partial = state.get("partial")
    return state["epoch"], partial["step"] if partial else 0


def checkpoint_problem(directory: Path) -> str | None:
    """Why the checkpoint in (local) ``directory`` cannot be resumed from, or None when it is sound."""
    for name in (STATE_FILE, WEIGHTS_FILE, OPTIMIZER_FILE):
        if not (directory / name).is_file():
            return f"{name} is missing"
    try:
        state = read_state(directory)
    except (OSError, ValueError) as exc:
        return f"{STATE_FILE} cannot be read ({exc})"
    sums = state.get("checksums")
    if sums is None:  # written before checksums were recorded: the weights header at least must read
        try:
            with safe_open(str(directory / WEIGHTS_FILE), "pt"):
                pass
        except Exception as exc:
            return f"{WEIGHTS_FILE} cannot be read ({exc})"
        return None
    for name, expected in sums.items():
        if file_checksum(directory / name) != expected:
            return f"{name} is corrupted or truncated (its sha256 differs from the one {STATE_FILE} records)"
    return None


def read_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / WEIGHTS_FILE))


def read_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, device: torch.device
) -> dict[str, Any]:
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device=str(device)), strict=True)
    extra = torch.load(directory / OPTIMIZER_FILE, map_location=device, weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    return read_state(directory)


def newest_complete_checkpoint(storage: str, name: str) -> tuple[str, dict[str, Any]] | None:
    """Path (or URI) and state of the newest complete checkpoint of run ``name`` on storage, if any.

    Ray resumes from the newest checkpoint its run snapshot recorded, which after an interrupt can be older
    than what was already written (or missing altogether); workers take whichever of the two is newer and
    sound. Complete means all three files are there and, on local storage, match their checksums; a newer
    checkpoint that is not is skipped, saying why.
    """
    fs, root = filesystem(storage)
    run_dir = join(root, name)
    for dirname in reversed(_checkpoint_dirs(fs, run_dir)):
        path = f"{run_dir}/{dirname}"
        files = [f"{path}/{f}" for f in (STATE_FILE, WEIGHTS_FILE, OPTIMIZER_FILE)]
        if any(info.type != pyarrow.fs.FileType.File for info in fs.get_file_info(files)):
            continue
        problem = None if is_uri(storage) else checkpoint_problem(Path(path))
        if problem is None:
            try:
                with fs.open_input_stream(files[0]) as f:
                    state = json.loads(f.read().decode("utf-8"))
            except (OSError, ValueError) as exc:
                problem = f"{STATE_FILE} cannot be read ({exc})"
        if problem is not None:  # cut short while being written, or damaged since: try the one before
            say(f"[train] not resuming from {dirname}: {problem}; trying the checkpoint before it")
            continue
        return (join(storage, name, dirname) if is_uri(storage) else path), state
    return None


def _checkpoint_dirs(fs: pyarrow.fs.FileSystem, run_dir: str) -> list[str]:
    """The names of a run's checkpoint directories, oldest first."""
    if fs.get_file_info(run_dir).type != pyarrow.fs.FileType.Directory:
        return []
    selector = pyarrow.fs.FileSelector(run_dir, recursive=False)
    return sorted(
        info.base_name
        for info in fs.get_file_info(selector)
        if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(CHECKPOINT_PREFIX)
    )


def remove_incomplete_checkpoints(storage: str, name: str) -> tuple[list[str], int | None]:
    """Remove the checkpoint directories newer than the run's newest complete one (cut short while being
    written: a full disk leaves them behind). Returns their names and the bytes of the newest complete
    checkpoint (None without one): what one more checkpoint needs."""
    newest = newest_complete_checkpoint(storage, name)
    fs, root = filesystem(storage)
    run_dir = join(root, name)
    names = _checkpoint_dirs(fs, run_dir)
    kept = newest[0].rstrip("/").rsplit("/", 1)[-1] if newest else None
    doomed = names[names.index(kept) + 1 :] if kept in names else names
    for dirname in doomed:
        fs.delete_dir(f"{run_dir}/{dirname}")
    if kept is None:
        return doomed, None
    infos = fs.get_file_info(pyarrow.fs.FileSelector(f"{run_dir}/{kept}", recursive=True))
    return doomed, sum(i.size or 0 for i in infos if i.type == pyarrow.fs.FileType.File)
