"""Driver side of supernet training: validate, start Ray Train, export the final supernet.

Everything a user can get wrong (dataset path, unreadable images, a space that does not fit the images,
worker counts, a GPU that is not there, a run name reused with another task) is checked here *before* Ray
writes anything to the storage path. Running the same command again resumes the run from its last
checkpoint (Ray Train finds the run by ``RunConfig(name, storage_path)``); worker failures restart from it.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline.core.arch import Architecture
from pipeline.core.task import SCHEMA, Task
from pipeline.data.sources import open_sources
from pipeline.data.splits import plan_from_settings
from pipeline.model.supernet_dir import EXPORT_DIR, supernet_config, write_supernet_dir
from pipeline.shared.cluster import check_resources, connect
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.storage import is_uri, join, resolve_storage, run_lock, safe_run_name, write_directory_to
from pipeline.shared.tracking import TrackingPlan, plan_tracking
from pipeline.training.checkpoint import newest_complete_checkpoint, read_state, read_weights
from pipeline.training.teacher import check_teacher
from pipeline.training.worker import train_loop_per_worker

# Task keys that may change between a run and its resumption (the rest must match the checkpoint).
RESUMABLE_CHANGES = {
    ("train", "epochs"),
    ("train", "max_failures"),
    ("data", "loader_workers"),
    ("data", "root"),
    ("data", "download"),
}


@dataclasses.dataclass
class TrainOutcome:
    run_path: str
    export_path: str
    metrics: dict[str, Any]
    restarts: int
    resumes: int


def check_same_run(state: dict[str, Any], task: Task, subject: dict[str, Any], name: str) -> None:
    """A run name already used is resumed only with the same task (up to resumable changes) and the same subject
    (supernet, or the same architecture); anything else is refused before a file is written."""
    previous_kind = state.get("subject", "supernet")
    if previous_kind != subject["kind"]:
        raise UserError(f"run {name!r} already exists and trains a {previous_kind}; choose a new run with --name")
    recorded = state.get("subject_architecture")
    if subject["kind"] == "model" and recorded is not None and recorded != subject["architecture"]:
        raise UserError(
            f"run {name!r} already exists for another architecture ({Architecture.from_dict(recorded).key}); "
            f"choose a new run with --name"
        )
    _check_same_task(state["task"], task, name)


def _check_same_task(previous: dict[str, Any], task: Task, name: str) -> None:
    current = task.to_dict()
    for section in ("data", "splits", "model", "train"):
        for key, value in current[section].items():
            if key not in previous[section] and value == SCHEMA[section][key][0]:
                continue  # a setting added to the tool since the run started, at its default: nothing changed
            old = previous[section].get(key)
            if old != value and (section, key) not in RESUMABLE_CHANGES:
                raise UserError(
                    f"run {name!r} already exists with {section}.{key} = {old!r} (now {value!r}); re-run with the same "
                    f"settings to resume it, or choose a new run with --name"
                )
    if previous.get("space") != current["space"] or previous.get("space_overrides", {}) != current["space_overrides"]:
        raise UserError(f"run {name!r} already exists with another search space; choose a new run with --name")


def validate_data(task: Task) -> dict[str, Any]:
    """Open the data as the workers will (decoding images to catch unreadable files) and check the splits."""
    pool, own_test = open_sources(task.data, check_images=True)
    classes = len(pool.classes)
    if task.data["num_classes"] not in (None, classes):
        raise UserError(
            f"task {task.name!r}: data.num_classes is {task.data['num_classes']} but the dataset has {classes} classes"
        )
    space = task.space(num_classes=classes)
    plan = plan_from_settings(pool.labels, task.splits, has_own_test=own_test is not None)
    if len(plan.train) < task.train["batch_size"]:
        raise UserError(f"train.batch_size {task.train['batch_size']} exceeds the {len(plan.train)} training images")
    return {"space": space, "splits": plan.summary(len(own_test) if own_test is not None else None)}


def describe_splits(splits: dict[str, Any]) -> str:
    """Each split's size and where the test split comes from, for the first progress line."""
    test = splits["test"]
    return (
        f"{splits['train']['size']} train / {splits['search']['size']} search / {test['size']} test images "
        f"(test {test['source']})"
    )


def _cpus_per_worker(workers: int, gpu: bool, loader_workers: int) -> float:
    """A fair CPU share per worker on the nodes that can host one (a CPU-less head node does not count)."""
    nodes = [
        n["Resources"]
        for n in ray.nodes()
        if n.get("Alive") and n["Resources"].get("CPU", 0) > 0 and (not gpu or n["Resources"].get("GPU", 0) >= 1)
    ]
    if not nodes:  # an autoscaling cluster with no worker node yet: ask for what a DataLoader needs
        return float(loader_workers + 1)
    per_node = min(n["CPU"] for n in nodes)
    workers_per_node = (
        math.ceil(workers / len(nodes))
        if not gpu
        else min(math.ceil(workers / len(nodes)), int(min(n["GPU"] for n in nodes)))
    )
    share = max(1, int(per_node // max(workers_per_node, 1)))
    return float(min(share, loader_workers + 1) if gpu else share)


def check_run_shape(task: Task, workers: int, cpus_per_worker: float | None) -> None:
    """Worker count, batch split and CPU request, checked before anything starts."""
    if workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if task.train["batch_size"] % workers:
        raise UserError(f"train.batch_size {task.train['batch_size']} is not divisible by --workers {workers}")
    per_worker = task.train["batch_size"] // workers
    if (task.train["mixup"] > 0 or task.train["cutmix"] > 0) and per_worker % 2:
        raise UserError(f"Mixup/CutMix need an even batch per worker; train.batch_size / workers = {per_worker}")
    if cpus_per_worker is not None and cpus_per_worker <= 0:
        raise UserError(f"--cpus-per-worker {cpus_per_worker}: must be positive")


def local_data_root(task: Task) -> Task:
    """The task with a relative local ``data.root`` made absolute: workers do not run in the driver's directory."""
    root = task.data["root"]
    if not root or is_uri(root) or Path(root).is_absolute():
        return task
    return task.with_overrides([f"data.root={Path(root).resolve()}"])


def fit_run(
    task: Task,
    subject: dict[str, Any],
    *,
    workers: int,
    gpu: bool,
    storage: str,
    name: str,
    cpus_per_worker: float | None,
    newest: tuple[str, dict[str, Any]] | None,
    phase: str,
    tracking: TrackingPlan | None = None,
) -> ray.train.Result:
    """Start (or resume) the Ray Train run ``storage/name`` training ``subject`` with ``task``'s train recipe.

    Every phase that trains (supernet, retrain, finetune) goes through here: same DDP, checkpoints, resume by
    re-running, FailureConfig and per-epoch progress (the console, and the ``tracking`` backends from rank 0).
    """
    joined = connect(gpu, phase)
    cpus = (
        cpus_per_worker if cpus_per_worker is not None else _cpus_per_worker(workers, gpu, task.data["loader_workers"])
    )
    resources: dict[str, float] = {"CPU": cpus}
    if gpu:
        resources["GPU"] = 1
    check_resources(resources, workers, "--workers", phase, joined)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "task": task.to_dict(),
            "subject": subject,
            "phase": phase,
            "attempt": uuid.uuid4().hex,
            "newest_checkpoint": {"path": newest[0], "epoch": newest[1]["epoch"]} if newest else None,
            "run": {"storage": storage, "name": name},  # workers look at its checkpoints again at each (re)start
            "threads": max(1, int(cpus)),
            "tracking": tracking,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=task.train["max_failures"]),
            checkpoint_config=CheckpointConfig(num_to_keep=task.train["keep_checkpoints"]),
            logging_config=LoggingConfig(log_level="WARNING"),  # our own per-epoch lines are the progress
        ),
    )
    say(f"[{phase}] {workers} worker(s) x {cpus:g} CPU{' + 1 GPU' if gpu else ''}; run {join(storage, name)}")
    try:
        # Ctrl-C: Ray Train's own handler aborts the run, then returns, exits (SystemExit) or raises.
        with run_lock(join(storage, name), f"{phase} run"):
            result = trainer.fit()
    except (KeyboardInterrupt, SystemExit):
        say(interrupted_note(storage, name, phase))
        raise KeyboardInterrupt from None
    finished = -1
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            finished = read_state(Path(d))["epoch"]
    if finished < task.train["epochs"]:  # aborted: what is kept is a checkpoint to resume from, not a result
        say(interrupted_note(storage, name, phase))
        raise KeyboardInterrupt
    return result


def interrupted_note(storage: str, name: str, phase: str) -> str:
    """What an interrupted run keeps: the epoch the same command will resume from."""
    newest = newest_complete_checkpoint(storage, name)
    if newest is None:
        return f"[{phase}] interrupted before the first checkpoint: the same command starts run {name!r} afresh"
    return (
        f"[{phase}] interrupted: run {name!r} keeps its checkpoint at epoch {newest[1]['epoch']}; the same command "
        f"resumes from there (train.checkpoint_every sets how often one is written)"
    )


def train_supernet(
    task: Task,
    workers: int = 1,
    gpu: bool = False,
    storage: str | None = None,
    name: str | None = None,
    cpus_per_worker: float | None = None,
    log: Sequence[str] = (),
) -> TrainOutcome:
    """Train (or resume) the supernet run ``storage/name``; ``log``: experiment trackers rank 0 also logs every
    epoch to (tensorboard, mlflow, wandb)."""
    check_run_shape(task, workers, cpus_per_worker)
    task = local_data_root(task)
    checked = validate_data(task)
    check_teacher(task, checked["space"])
    storage = resolve_storage(storage)
    name = safe_run_name(name or f"{task.name}-supernet")
    tracking = plan_tracking(log, storage, name)
    newest = newest_complete_checkpoint(storage, name)
    if newest is not None:
        check_same_run(newest[1], task, {"kind": "supernet"}, name)
    say(
        f"[train] task {task.name}: space {checked['space'].name}, sharing {task.model['sharing']}, "
        f"{describe_splits(checked['splits'])}, {task.train['epochs']} epochs"
    )
    result = fit_run(
        task,
        {"kind": "supernet"},
        workers=workers,
        gpu=gpu,
        storage=storage,
        name=name,
        cpus_per_worker=cpus_per_worker,
        newest=newest,
        phase="train",
        tracking=tracking,
    )
    with result.checkpoint.as_directory() as d:
        state = read_state(Path(d))
        export_path = export_supernet(Path(d), state, storage, name)
    final = state["history"][-1] if state["history"] else {}
    return TrainOutcome(join(storage, name), export_path, final, state["restarts"], state["resumes"])


def training_mode(train: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """How the supernet was trained, for honest comparisons of supernets (fidelity reports, inherited scores):
    the sampling rule, in-place and external distillation, and the run's training speed (median images/s of its
    epochs; a sandwich step trains several subnets on each image)."""
    speeds = sorted(h["images_per_s"] for h in history if "images_per_s" in h)
    mode = {
        "sampling": train.get("sampling", "uniform"),
        "subnets_per_step": 2 + train.get("sandwich_random", 0) if train.get("sampling") == "sandwich" else 1,
        "inplace_distillation": train.get("inplace_distillation", "off"),
        "gradient_projection": train.get("gradient_projection", "off"),
        "teacher": train.get("teacher"),
        "images_per_s": speeds[len(speeds) // 2] if speeds else None,
    }
    if mode["teacher"] is not None:
        mode.update(distill=train["distill"], distill_alpha=train["distill_alpha"])
    return mode


def export_supernet(checkpoint_dir: Path, state: dict[str, Any], storage: str, name: str) -> str:
    """Write ``<storage>/<name>/supernet`` (config.json + supernet.safetensors) from the final checkpoint."""
    task = state["task"]
    config = supernet_config(
        state["space"],
        task["model"]["sharing"],
        task["model"],
        task=task,
        splits=state["splits"],
        epochs=state["epoch"],
        workers=state.get("workers"),
        nodes=state.get("nodes"),
        restarts=state["restarts"],
        resumes=state["resumes"],
        metrics=state["history"][-1] if state["history"] else {},
        history=state["history"],
        training=training_mode(task["train"], state["history"]),
    )
    weights = read_weights(checkpoint_dir)
    return write_directory_to(join(storage, name, EXPORT_DIR), lambda path: write_supernet_dir(path, weights, config))
