"""Driver side of supernet training: validate, start Ray Train, export the final supernet.

Everything a user can get wrong (dataset path, unreadable images, a space that does not fit the images,
worker counts, a GPU that is not there, a run name reused with another task) is checked here *before* Ray
writes anything to the storage path. Running the same command again resumes the run from its last
checkpoint (Ray Train finds the run by ``RunConfig(name, storage_path)``); worker failures restart from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pipeline.data.sources import open_sources
from pipeline.data.splits import plan_from_settings
from pipeline.errors import UserError
from pipeline.storage import filesystem, is_uri, upload_directory
from pipeline.task import Task
from pipeline.training.state import OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE

EXPORT_DIR = "supernet"
# Task keys that may change between a run and its resumption (the rest must match the checkpoint).
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "max_failures"), ("data", "loader_workers"), ("data", "root"), ("data", "download")}


@dataclasses.dataclass
class TrainOutcome:
    run_path: str
    export_path: str
    metrics: dict[str, Any]
    restarts: int
    resumes: int


def resolve_storage(storage: str | None) -> str:
    """Local paths become absolute (Ray requires it); URIs (s3://, gs://, ...) pass through unchanged."""
    storage = storage or "runs"
    return storage if is_uri(storage) else str(Path(storage).expanduser().resolve())


def newest_complete_checkpoint(storage: str, name: str) -> tuple[str, dict[str, Any]] | None:
    """Path (or URI) and state of the newest complete checkpoint of run ``name`` on storage, if any.

    Ray resumes from the newest checkpoint its run snapshot recorded, which after an interrupt can be older
    than what was already written (or missing altogether); workers take whichever of the two is newer.
    Complete means all three files are there and, on local storage, the weights file's header is intact.
    """
    import pyarrow.fs

    fs, root = filesystem(storage)
    run_dir = f"{root.rstrip('/')}/{name}"
    if fs.get_file_info(run_dir).type != pyarrow.fs.FileType.Directory:
        return None
    selector = pyarrow.fs.FileSelector(run_dir, recursive=False)
    names = sorted(
        info.base_name for info in fs.get_file_info(selector) if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_")
    )
    for dirname in reversed(names):
        path = f"{run_dir}/{dirname}"
        files = [f"{path}/{f}" for f in (STATE_FILE, WEIGHTS_FILE, OPTIMIZER_FILE)]
        if any(info.type != pyarrow.fs.FileType.File for info in fs.get_file_info(files)):
            continue
        try:
            with fs.open_input_stream(files[0]) as f:
                state = json.loads(f.read().decode("utf-8"))
            if not is_uri(storage):
                from safetensors import safe_open

                with safe_open(files[1], "pt"):
                    pass
        except Exception:  # a checkpoint cut short while being written: try the one before
            continue
        return (f"{storage.rstrip('/')}/{name}/{dirname}" if is_uri(storage) else path), state
    return None


def _check_same_task(previous: dict[str, Any], task: Task, name: str) -> None:
    current = task.to_dict()
    for section in ("data", "splits", "model", "train"):
        for key, value in current[section].items():
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
        raise UserError(f"task {task.name!r}: data.num_classes is {task.data['num_classes']} but the dataset has {classes} classes")
    space = task.space(num_classes=classes)
    plan = plan_from_settings(pool.labels, task.splits, has_own_test=own_test is not None)
    if len(plan.train) < task.train["batch_size"]:
        raise UserError(f"train.batch_size {task.train['batch_size']} exceeds the {len(plan.train)} training images")
    return {"space": space, "splits": plan.summary(len(own_test) if own_test is not None else None)}


def _cpus_per_worker(workers: int, gpu: bool, loader_workers: int) -> float:
    """A fair CPU share per worker on the nodes that can host one (a CPU-less head node does not count)."""
    import ray

    nodes = [
        n["Resources"] for n in ray.nodes()
        if n.get("Alive") and n["Resources"].get("CPU", 0) > 0 and (not gpu or n["Resources"].get("GPU", 0) >= 1)
    ]
    if not nodes:  # an autoscaling cluster with no worker node yet: ask for what a DataLoader needs
        return float(loader_workers + 1)
    per_node = min(n["CPU"] for n in nodes)
    workers_per_node = math.ceil(workers / len(nodes)) if not gpu else min(math.ceil(workers / len(nodes)), int(min(n["GPU"] for n in nodes)))
    share = max(1, int(per_node // max(workers_per_node, 1)))
    return float(min(share, loader_workers + 1) if gpu else share)


def train_supernet(
    task: Task,
    workers: int = 1,
    gpu: bool = False,
    storage: str | None = None,
    name: str | None = None,
    cpus_per_worker: float | None = None,
    fail_at_epoch: int | None = None,
) -> TrainOutcome:
    if workers < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    if task.train["batch_size"] % workers:
        raise UserError(f"train.batch_size {task.train['batch_size']} is not divisible by --workers {workers}")
    per_worker = task.train["batch_size"] // workers
    if (task.train["mixup"] > 0 or task.train["cutmix"] > 0) and per_worker % 2:
        raise UserError(f"Mixup/CutMix need an even batch per worker; train.batch_size / workers = {per_worker}")
    if cpus_per_worker is not None and cpus_per_worker <= 0:
        raise UserError(f"--cpus-per-worker {cpus_per_worker}: must be positive")
    checked = validate_data(task)
    storage = resolve_storage(storage)
    name = name or f"{task.name}-supernet"
    newest = newest_complete_checkpoint(storage, name)
    if newest is not None:
        _check_same_task(newest[1]["task"], task, name)

    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    joining_cluster = bool(os.environ.get("RAY_ADDRESS")) or ray.is_initialized()
    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    if gpu and ray.cluster_resources().get("GPU", 0) < 1:
        if not joining_cluster:
            raise UserError("--gpu was given but this machine has no GPU; drop --gpu to train on CPUs")
        print("[train] no GPU in the cluster yet: waiting for the autoscaler to add GPU nodes", flush=True)
    cpus = cpus_per_worker if cpus_per_worker is not None else _cpus_per_worker(workers, gpu, task.data["loader_workers"])
    resources: dict[str, float] = {"CPU": cpus}
    if gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={
            "task": task.to_dict(),
            "attempt": uuid.uuid4().hex,
            "fail_at_epoch": fail_at_epoch,
            "newest_checkpoint": {"path": newest[0], "epoch": newest[1]["epoch"]} if newest else None,
            "threads": max(1, int(cpus)),
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
    print(
        f"[train] task {task.name}: space {checked['space'].name}, {checked['splits']['train']['size']} train / "
        f"{checked['splits']['search']['size']} search images, {task.train['epochs']} epochs, {workers} worker(s) "
        f"x {cpus:g} CPU{' + 1 GPU' if gpu else ''}; run {storage}/{name}",
        flush=True,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"run {name!r} finished without a checkpoint")
    with result.checkpoint.as_directory() as d:
        state = json.loads((Path(d) / "state.json").read_text())
        export_path = export_supernet(Path(d), state, storage, name)
    final = state["history"][-1] if state["history"] else {}
    return TrainOutcome(f"{storage}/{name}", export_path, final, state["restarts"], state["resumes"])


def _train_loop(config: dict[str, Any]) -> None:
    from pipeline.training.worker import train_loop_per_worker

    train_loop_per_worker(config)


def export_supernet(checkpoint_dir: Path, state: dict[str, Any], storage: str, name: str) -> str:
    """Write ``<storage>/<name>/supernet`` (config.json + supernet.safetensors) from the final checkpoint."""
    from safetensors.torch import load_file

    from pipeline.model.supernet_io import supernet_config, write_supernet_dir

    task = state["task"]
    config = supernet_config(
        state["space"],
        task["model"]["sharing"],
        task["model"],
        task=task,
        splits=state["splits"],
        epochs=state["epoch"],
        workers=state.get("workers"),
        restarts=state["restarts"],
        resumes=state["resumes"],
        metrics=state["history"][-1] if state["history"] else {},
        history=state["history"],
    )
    weights = load_file(str(checkpoint_dir / "supernet.safetensors"))
    if not is_uri(storage):
        return str(write_supernet_dir(Path(storage) / name / EXPORT_DIR, weights, config))
    with tempfile.TemporaryDirectory() as tmp:
        local = write_supernet_dir(Path(tmp) / EXPORT_DIR, weights, config)
        target = f"{storage.rstrip('/')}/{name}/{EXPORT_DIR}"
        upload_directory(local, target)
    return target
