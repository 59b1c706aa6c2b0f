"""Driver side of ``autoformer retrain`` and ``autoformer finetune``: one architecture as a stand-alone model.

The model is the plain ``StaticViT`` the export writes, trained with the task's ``retrain`` or ``finetune``
recipe through the same Ray Train run as supernet training (DDP, checkpoints, resume by re-running, worker
restarts). Retraining starts from a seeded initialisation; finetuning from given weights (inherited from a
supernet, or a model of another task moved over by ``model.transfer``). The result is a model directory at
``<storage>/<name>/model`` recording where the architecture came from, the recipe, the run's history and its
scores: search top-1 (what decisions may use) and test top-1, scored once after the last epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from pipeline.core.arch import Architecture, validate_fits
from pipeline.core.space import FIXED_KEYS
from pipeline.core.task import Task
from pipeline.model.static import StaticViT
from pipeline.model.subnet_dir import save_model
from pipeline.model.transfer import target_fixed, transferred_state
from pipeline.shared.cluster import connect
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.storage import join, resolve_storage, safe_run_name, write_directory_to
from pipeline.shared.tracking import plan_tracking
from pipeline.training.checkpoint import newest_complete_checkpoint, read_state, read_weights
from pipeline.training.launch import (
    check_run_shape,
    check_same_run,
    describe_splits,
    fit_run,
    local_data_root,
    validate_data,
)
from pipeline.training.teacher import check_teacher

MODEL_DIR = "model"  # the directory name retrain and finetune write their model to, inside their run
# Fixed parts a model keeps when its architecture is retrained on a task: all but the data's shape.
ARCHITECTURAL_FIXED = tuple(k for k in FIXED_KEYS if k not in ("image_size", "in_chans", "num_classes"))


@dataclasses.dataclass
class ModelOutcome:
    run_path: str
    model_path: str
    scores: dict[str, dict[str, float]]  # {"search": {...}, "test": {...}}: top1, top5, loss, count
    epochs: int
    restarts: int
    resumes: int


def check_same_design(model_fixed: dict[str, Any], task: Task, space_fixed: dict[str, Any], where: str) -> None:
    """A model's architecture means the same on a task only under the same fixed design (head dim, patch size,
    relative position, ...); otherwise it is a model of another space."""
    for key in ARCHITECTURAL_FIXED:
        if model_fixed.get(key) != space_fixed.get(key):
            raise UserError(
                f"{where} is a model of another search space: its {key} is {model_fixed.get(key)!r}, task "
                f"{task.name!r} (space {task.space_name!r}) has {space_fixed.get(key)!r}"
            )


def train_model(
    task: Task,
    arch: Architecture,
    *,
    phase: str,
    origin: dict[str, Any],
    init: StaticViT | None = None,
    workers: int = 1,
    gpu: bool = False,
    storage: str | None = None,
    name: str | None = None,
    cpus_per_worker: float | None = None,
    log: Sequence[str] = (),
) -> ModelOutcome:
    """Train ``arch`` on ``task`` with the ``phase`` recipe (retrain: from scratch; finetune: from ``init``);
    ``log``: experiment trackers rank 0 also logs every epoch to (tensorboard, mlflow, wandb)."""
    run_task = local_data_root(task).for_phase(phase)
    check_run_shape(run_task, workers, cpus_per_worker)
    checked = validate_data(run_task)
    space = checked["space"]
    check_teacher(run_task, space)
    if init is None:
        validate_fits(arch, space)
        fixed = space.fixed_parts()
    else:
        fixed = target_fixed(init, space.image_size, space.in_chans, space.num_classes, f"finetune on {task.name!r}")
    storage = resolve_storage(storage)
    name = safe_run_name(name or f"{task.name}-{phase}-{arch.key}")
    tracking = plan_tracking(log, storage, name)
    subject: dict[str, Any] = {"kind": "model", "architecture": arch.to_dict(), "fixed": fixed, "init": None}
    newest = newest_complete_checkpoint(storage, name)
    if newest is not None:
        check_same_run(newest[1], run_task, subject, name)
    say(
        f"[{phase}] {arch.key} on task {task.name}: {describe_splits(checked['splits'])}, "
        f"{run_task.train['epochs']} epochs, lr "
        f"{run_task.train['lr']:g} (base batch {run_task.train['lr_base_batch']}), "
        f"{'from scratch' if init is None else 'from the given weights'}"
    )
    if init is not None:
        connect(gpu, phase)
        state = transferred_state(init, fixed, run_task.train["seed"])
        subject["init"] = ray.put({k: v.cpu().numpy() for k, v in state.items()})
    result = fit_run(
        run_task,
        subject,
        workers=workers,
        gpu=gpu,
        storage=storage,
        name=name,
        cpus_per_worker=cpus_per_worker,
        newest=newest,
        phase=phase,
        tracking=tracking,
    )
    with result.checkpoint.as_directory() as d:
        state = read_state(Path(d))
        model = StaticViT.from_state_dict(arch, fixed, read_weights(Path(d)), **_rates(run_task))
    metadata = {
        "source": f"autoformer {phase} ({'trained from scratch' if init is None else 'finetuned'})",
        "phase": phase,
        "origin": origin,
        "task": task.to_dict(),
        "recipe": run_task.train,
        "epochs": state["epoch"],
        "scores": state["final"],
        "splits": state["splits"],
        "history": state["history"],
        "workers": state.get("workers"),
        "nodes": state.get("nodes"),
        "restarts": state["restarts"],
        "resumes": state["resumes"],
    }
    normalization = {"mean": task.data["mean"], "std": task.data["std"]}
    model_path = write_directory_to(
        join(storage, name, MODEL_DIR),
        lambda path: save_model(model, path, normalization=normalization, metadata=metadata, overwrite=True),
    )
    return ModelOutcome(
        join(storage, name), model_path, state["final"], state["epoch"], state["restarts"], state["resumes"]
    )


def _rates(task: Task) -> dict[str, float]:
    return {k: task.model[k] for k in ("drop_rate", "attn_drop_rate", "drop_path_rate")}
