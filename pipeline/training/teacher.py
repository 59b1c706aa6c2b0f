"""External teachers for distillation (``train.teacher``): a model directory this tool wrote, or any timm model
with a local weights file (``timm:NAME@WEIGHTS_FILE``; nothing is downloaded).

A teacher runs in eval mode without gradients (bf16 autocast on GPUs, like the student). It sees each batch the
way it was trained to: a model directory records its input normalization, and the task's normalized images are
mapped to it; a timm teacher is taken to expect the task's normalization. A teacher whose classes, channels or
input size do not fit the task is one clear error on the driver, before Ray starts or a file is written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.space import SearchSpace
from pipeline.core.task import Task
from pipeline.model.subnet_dir import load_model
from pipeline.shared.errors import UserError

TIMM_PREFIX = "timm:"
ALLOWED = "none, a model directory written by this tool, or timm:NAME@WEIGHTS_FILE (a local weights file)"


@dataclasses.dataclass
class Teacher:
    model: nn.Module
    scale: torch.Tensor | None  # maps the task's normalized images to the teacher's: x * scale + shift
    shift: torch.Tensor | None

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            images = images * self.scale + self.shift
        return self.model(images).float()


def _where(spec: str) -> str:
    return f"train.teacher {spec!r}"


def _timm_teacher(spec: str, in_chans: int, num_classes: int) -> nn.Module:
    import timm  # only when a timm teacher is asked for

    name, sep, weights = spec[len(TIMM_PREFIX) :].partition("@")
    if not name or not sep or not weights:
        raise UserError(f"{_where(spec)}: expected timm:NAME@WEIGHTS_FILE; allowed: {ALLOWED}")
    if not Path(weights).is_file():
        raise UserError(f"{_where(spec)}: weights file {weights!r} does not exist (teachers are never downloaded)")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    except RuntimeError as exc:
        raise UserError(f"{_where(spec)}: {exc}; see timm.list_models()") from None
    state = _read_weights(weights, spec)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[0] if first else "")
        raise UserError(
            f"{_where(spec)}: the weights do not fit {name} with {num_classes} classes and {in_chans} channels (the "
            f"task's): {detail}"
        ) from None
    return model


def _read_weights(path: str, spec: str) -> dict[str, torch.Tensor]:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file: one line naming it
        raise UserError(f"{_where(spec)}: cannot read weights file {path!r}: {type(exc).__name__}: {exc}") from None
    for key in ("state_dict", "model", "state_dict_ema"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{_where(spec)}: {path!r} holds no state dict")
    return state


def _directory_teacher(spec: str, task: Task, space: SearchSpace) -> tuple[nn.Module, dict[str, list[float]]]:
    if not Path(spec).is_dir():
        raise UserError(f"{_where(spec)}: not a directory; allowed: {ALLOWED}")
    model, config = load_model(spec)
    fixed = config["fixed"]
    theirs = (fixed["in_chans"], config["image_size"], config["num_classes"])
    ours = (space.in_chans, space.image_size, space.num_classes)
    if theirs != ours:
        raise UserError(
            f"{_where(spec)}: the teacher takes {theirs[0]} x {theirs[1]} px images into {theirs[2]} classes, task "
            f"{task.name!r} has {ours[0]} x {ours[1]} px images and {ours[2]} classes"
        )
    return model, config["normalization"]


def load_teacher(spec: str, task: Task, space: SearchSpace, device: torch.device) -> Teacher:
    """The teacher named by ``spec`` for ``task`` (whose images and classes ``space`` describes), on ``device``,
    checked with one batch at the task's input size."""
    if spec.startswith(TIMM_PREFIX):
        model, normalization = _timm_teacher(spec, space.in_chans, space.num_classes), None
    else:
        model, normalization = _directory_teacher(spec, task, space)
    model = model.to(device).eval().requires_grad_(False)
    scale = shift = None
    if normalization is not None and (normalization["mean"], normalization["std"]) != (
        task.data["mean"],
        task.data["std"],
    ):
        # task-normalized x = (raw - m_t) / s_t; the teacher wants (raw - m) / s = x * s_t / s + (m_t - m) / s
        view = lambda v: torch.tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)  # noqa: E731
        m_t, s_t, m, s = (view(v) for v in (task.data["mean"], task.data["std"], *normalization.values()))
        scale, shift = s_t / s, (m_t - m) / s
    teacher = Teacher(model, scale, shift)
    probe = torch.zeros(1, space.in_chans, space.image_size, space.image_size, device=device)
    try:
        out = teacher.logits(probe)
    except Exception as exc:  # e.g. a ViT built for another image size
        raise UserError(
            f"{_where(spec)}: the teacher does not take the task's {space.in_chans} x {space.image_size} px images: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        ) from None
    if tuple(out.shape) != (1, space.num_classes):
        raise UserError(
            f"{_where(spec)}: the teacher gives {tuple(out.shape[1:])} outputs per image, task {task.name!r} has "
            f"{space.num_classes} classes"
        )
    return teacher


def check_teacher(task: Task, space: SearchSpace) -> None:
    """On the driver, before anything starts: the recipe's teacher (if any) loads and fits the task."""
    if task.train.teacher.source is not None:
        load_teacher(task.train.teacher.source, task, space, torch.device("cpu"))
