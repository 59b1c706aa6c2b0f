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
from pipeline.shared.storage import join, write_directory_to
from pipeline.training.checkpoint import read_state, read_weights
from pipeline.training.launch import PreparedRun, check_same_run, describe_splits, fit_run, prepare_run
from pipeline.training.run_spec import MODEL, RunSpec, SubjectSpec
from pipeline.training.subject import drop_rates

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
    run: RunSpec | None = None,
) -> ModelOutcome:
    """Train ``arch`` on ``task`` with the ``phase`` recipe (retrain: from scratch; finetune: from ``init``);
    ``run``: workers, GPU, storage, name (default TASK-PHASE-ARCH), trackers."""
    run = run or RunSpec()
    prepared = prepare_run(task.for_phase(phase), run, f"{task.name}-{phase}-{arch.key}")
    subject = model_subject_spec(arch, init, prepared, f"finetune on {task.name!r}")
    check_same_run(prepared, subject)
    recipe = prepared.task.train
    say(
        f"[{phase}] {arch.key} on task {task.name}: {describe_splits(prepared.splits)}, {recipe.epochs} epochs, lr "
        f"{recipe.optim.lr:g} (base batch {recipe.optim.lr_base_batch}), "
        f"{'from scratch' if init is None else 'from the given weights'}"
    )
    if init is not None:
        connect(run.gpu, phase)
        state = transferred_state(init, subject.fixed, recipe.seed)
        subject = dataclasses.replace(subject, init=ray.put({k: v.cpu().numpy() for k, v in state.items()}))
    result = fit_run(prepared, run, subject, phase)
    with result.checkpoint.as_directory() as d:
        state = read_state(Path(d))
        weights = read_weights(Path(d))
    model = StaticViT.from_state_dict(arch, subject.fixed, weights, **drop_rates(task.model))
    model_path = write_directory_to(
        join(prepared.storage, prepared.name, MODEL_DIR),
        lambda path: save_model(
            model,
            path,
            normalization={"mean": task.data["mean"], "std": task.data["std"]},
            metadata=model_metadata(task, prepared, state, phase, origin, init is None),
            overwrite=True,
        ),
    )
    run_path = join(prepared.storage, prepared.name)
    return ModelOutcome(run_path, model_path, state["final"], state["epoch"], state["restarts"], state["resumes"])


def model_subject_spec(arch: Architecture, init: StaticViT | None, prepared: PreparedRun, where: str) -> SubjectSpec:
    """The model to train: ``arch`` in the task's space (from scratch), or ``init``'s fixed parts moved to the
    task's images and classes (finetune); its weights are put in the object store later, once checked."""
    space = prepared.space
    if init is None:
        validate_fits(arch, space)
        fixed = space.fixed_parts()
    else:
        fixed = target_fixed(init, space.image_size, space.in_chans, space.num_classes, where)
    return SubjectSpec(MODEL, arch.to_dict(), fixed)


def model_metadata(
    task: Task, prepared: PreparedRun, state: dict[str, Any], phase: str, origin: dict[str, Any], scratch: bool
) -> dict[str, Any]:
    """What a retrained or finetuned model directory records: where it came from, the recipe, the run."""
    return {
        "source": f"autoformer {phase} ({'trained from scratch' if scratch else 'finetuned'})",
        "phase": phase,
        "origin": origin,
        "task": task.to_dict(),
        "recipe": prepared.task.train.to_flat(),
        "epochs": state["epoch"],
        "scores": state["final"],
        "splits": state["splits"],
        "history": state["history"],
        "workers": state.get("workers"),
        "nodes": state.get("nodes"),
        "restarts": state["restarts"],
        "resumes": state["resumes"],
    }
