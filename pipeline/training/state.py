"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint directory holds ``supernet.safetensors`` (weights), ``optimizer.pt`` (optimizer and scheduler
state: torch's own format, since it holds Python structure) and ``state.json`` (epoch, step, restart and
resume counts, metric history, splits, task and space). The same directory is what Ray Train persists to
the run's storage path, local or ``s3://``/``gs://``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "state.json"
WEIGHTS_FILE = "supernet.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


def write_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any]
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(directory / WEIGHTS_FILE))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, directory / OPTIMIZER_FILE)
    (directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def read_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))


def read_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, device: torch.device
) -> dict[str, Any]:
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device=str(device)), strict=True)
    extra = torch.load(directory / OPTIMIZER_FILE, map_location=device, weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    return read_state(directory)
