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
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig, TrainingFailedError
from ray.train.torch import TorchTrainer

from pipeline.core.arch import Architecture
from pipeline.core.recorded import Rules, check_recorded, flatten
from pipeline.core.space import SearchSpace
from pipeline.core.task import SCHEMA, Task
from pipeline.core.training_settings import RESUMABLE_KEYS, TrainSettings
from pipeline.data.sources import open_sources, uses_ray_data
from pipeline.data.splits import plan_from_settings, splits_summary
from pipeline.model.supernet_dir import EXPORT_DIR, supernet_config, write_supernet_dir
from pipeline.shared.arguments import require_type
from pipeline.shared.cluster import check_resources, connect
from pipeline.shared.errors import Terminated, UserError
from pipeline.shared.progress import say
from pipeline.shared.storage import (
    check_free,
    filesystem,
    is_uri,
    join,
    resolve_storage,
    run_lock,
    safe_run_name,
    write_directory_to,
)
from pipeline.shared.tracking import TrackingPlan, plan_tracking
from pipeline.training.checkpoint import (
    newest_complete_checkpoint,
    progress,
    read_state,
    read_weights,
    remove_incomplete_checkpoints,
)
from pipeline.training.fatal import FatalTrainingError, StopOnFatal, fatal_line, no_space
from pipeline.training.probe import check_probe_size, probe_record, probe_summary, write_probe_table
from pipeline.training.run_spec import MODEL, SUPERNET, RunSpec, SubjectSpec, WorkerConfig
from pipeline.training.stop import clear_stop, stop_on_sigterm
from pipeline.training.teacher import check_teacher
from pipeline.training.worker import train_loop_per_worker

# Data keys a resumed run may change (the train section marks its own: ``training_settings.RESUMABLE_KEYS``).
RESUMABLE_DATA_KEYS = (
    "data.loader_workers",
    "data.root",
    "data.download",
    "data.format",
    "data.ingest",
    "data.ingest_cpus",
)
RECORDED_SECTIONS = ("data", "splits", "model", "train")


@dataclasses.dataclass
class TrainOutcome:
    run_path: str
    export_path: str
    metrics: dict[str, Any]
    restarts: int
    resumes: int


@dataclasses.dataclass(frozen=True)
class PreparedRun:
    """A run checked on the driver and ready to start: nothing of it has been written yet."""

    task: Task  # with its data root made absolute
    space: SearchSpace  # the task's space with the class count found in the data
    splits: dict[str, Any]  # the split plan's record
    storage: str
    name: str
    tracking: TrackingPlan | None
    newest: tuple[str, dict[str, Any]] | None  # the newest complete checkpoint on storage (path, state)


def prepare_run(task: Task, run: RunSpec, default_name: str, subject: SubjectSpec | None = None) -> PreparedRun:
    """Everything a training run checks before it starts, for every phase that trains: the shape of the run, the
    data (decoded as the workers will), the teacher, the storage and the name, and, when the name is taken, that
    the run recorded there is this one (same task up to resumable changes, same subject). ``subject``: None to
    check it later (a finetune's fixed parts come from the data)."""
    check_run_shape(task, run.workers)
    storage = resolve_storage(run.storage)
    name = safe_run_name(run.name or default_name)
    if not name.isascii():  # Ray Train's controller encodes the run name as ASCII and stops with a traceback
        raise UserError(f"name {name!r}: Ray Train takes ASCII run names only; choose another run name")
    check_free(join(storage, name), "run")  # a busy run is refused before the data is read
    task = local_data_root(task)
    checked = validate_data(task)
    check_teacher(task, checked["space"])
    newest = newest_complete_checkpoint(storage, name)
    prepared = PreparedRun(
        task, checked["space"], checked["splits"], storage, name, plan_tracking(run.log, storage, name), newest
    )
    if subject is not None:
        check_same_run(prepared, subject)
    return prepared


def check_same_run(prepared: PreparedRun, subject: SubjectSpec) -> None:
    """A run name already used is resumed only with the same task (up to resumable changes) and the same subject
    (supernet, or the same architecture); anything else is refused before a file is written."""
    if prepared.newest is None:
        return
    state, name = prepared.newest[1], prepared.name
    previous_kind = state.get("subject", SUPERNET)
    if previous_kind != subject.kind:
        raise UserError(f"run {name!r} already exists and trains a {previous_kind}; choose another run name")
    recorded = state.get("subject_architecture")
    if subject.kind == MODEL and recorded is not None and recorded != subject.architecture:
        raise UserError(
            f"run {name!r} already exists for another architecture ({Architecture.from_dict(recorded).key}); "
            f"choose another run name"
        )
    recorded_data, data = state.get("splits", {}).get("dataset"), prepared.splits.get("dataset")
    if recorded_data and data and recorded_data != data:
        raise UserError(
            f"run {name!r} already exists, trained on another dataset (fingerprint {recorded_data}, now {data}): "
            f"data.root must hold the same images (a tree or its pack); choose another run name for other data"
        )
    previous, current = state["task"], prepared.task.to_dict()
    rules = Rules(
        may_change={*RESUMABLE_DATA_KEYS, *(f"train.{k}" for k in RESUMABLE_KEYS)},
        defaults={f"{s}.{k}": spec[0] for s in RECORDED_SECTIONS for k, spec in SCHEMA[s].items()},
    )
    pick = lambda task: flatten({s: task[s] for s in RECORDED_SECTIONS})  # noqa: E731
    check_recorded(f"run {name!r}", pick(previous), pick(current), rules)
    if previous.get("space") != current["space"] or previous.get("space_overrides", {}) != current["space_overrides"]:
        raise UserError(f"run {name!r} already exists with another search space; choose another run name")


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
    if len(plan.train) < task.train.batch_size:
        raise UserError(f"train.batch_size {task.train.batch_size} exceeds the {len(plan.train)} training images")
    return {"space": space, "splits": splits_summary(pool, own_test, plan)}


def describe_splits(splits: dict[str, Any]) -> str:
    """Each split's size and where the test split comes from, for the first progress line."""
    test = splits["test"]
    return (
        f"{splits['train']['size']} train / {splits['search']['size']} search / {test['size']} test images "
        f"(test {test['source']})"
    )


def _cpus_per_worker(workers: int, gpu: bool, data: dict[str, Any]) -> float:
    """A fair CPU share per worker on the nodes that can host one (a CPU-less head node does not count).

    With Ray Data ingest the images are decoded by tasks that need CPUs of their own: a GPU worker then asks
    for one CPU (its training loop), and a CPU worker leaves at least one decoding task's worth of its node
    free (a worker holding every CPU would wait forever for the images it is to train on)."""
    loader_workers, ray_data, ingest = data["loader_workers"], uses_ray_data(data), data["ingest_cpus"]
    nodes = [
        n["Resources"]
        for n in ray.nodes()
        if n.get("Alive") and n["Resources"].get("CPU", 0) > 0 and (not gpu or n["Resources"].get("GPU", 0) >= 1)
    ]
    if not nodes:  # an autoscaling cluster with no worker node yet: ask for what a DataLoader needs
        return 1.0 if ray_data else float(loader_workers + 1)
    per_node = min(n["CPU"] for n in nodes)
    workers_per_node = (
        math.ceil(workers / len(nodes))
        if not gpu
        else min(math.ceil(workers / len(nodes)), int(min(n["GPU"] for n in nodes)))
    )
    share = max(1, int(per_node // max(workers_per_node, 1)))
    if ray_data:
        return 1.0 if gpu else max(share - ingest, share / 2)
    return float(min(share, loader_workers + 1) if gpu else share)


def check_run_shape(task: Task, workers: int) -> None:
    """The batch split over the workers, checked before anything starts."""
    batch = task.train.batch_size
    if batch % workers:
        raise UserError(f"train.batch_size {batch} is not divisible by workers {workers}")
    if task.train.augment.mixes and (batch // workers) % 2:
        raise UserError(f"Mixup/CutMix need an even batch per worker; train.batch_size / workers = {batch // workers}")


def local_data_root(task: Task) -> Task:
    """The task with a relative local ``data.root`` made absolute: workers do not run in the driver's directory."""
    root = task.data["root"]
    if not root or is_uri(root) or Path(root).is_absolute():
        return task
    return task.with_overrides([f"data.root={Path(root).resolve()}"])


def fit_run(prepared: PreparedRun, run: RunSpec, subject: SubjectSpec, phase: str) -> ray.train.Result:
    """Start (or resume) the Ray Train run ``storage/name`` training ``subject`` with the task's train recipe.

    Every phase that trains (supernet, retrain, finetune) goes through here: same DDP, checkpoints, resume by
    re-running, FailureConfig and per-epoch progress (the console, and the tracking backends from rank 0).
    """
    task, storage, name, newest = prepared.task, prepared.storage, prepared.name, prepared.newest
    joined = connect(run.gpu, phase)
    cpus = run.cpus_per_worker or _cpus_per_worker(run.workers, run.gpu, task.data)
    resources: dict[str, float] = {"CPU": cpus, **({"GPU": 1} if run.gpu else {})}
    check_resources(resources, run.workers, "workers", phase, joined)
    config = WorkerConfig(
        task=task,
        subject=subject,
        phase=phase,
        attempt=uuid.uuid4().hex,
        threads=max(1, int(cpus)),
        newest_checkpoint={"path": newest[0], "progress": progress(newest[1])} if newest else None,
        run=(storage, name),  # workers look at its checkpoints again at each (re)start
        tracking=prepared.tracking,
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"worker": config},
        scaling_config=ScalingConfig(num_workers=run.workers, use_gpu=run.gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=task.train.keeping.max_failures),
            callbacks=[StopOnFatal()],
            checkpoint_config=CheckpointConfig(num_to_keep=task.train.keeping.keep_checkpoints),
            logging_config=LoggingConfig(log_level="WARNING"),  # our own per-epoch lines are the progress
        ),
    )
    say(f"[{phase}] {run.workers} worker(s) x {cpus:g} CPU{' + 1 GPU' if run.gpu else ''}; run {join(storage, name)}")
    return _fit(trainer, storage, name, phase, task.train.epochs)


def _fit(trainer: TorchTrainer, storage: str, name: str, phase: str, epochs: int) -> ray.train.Result:
    """``trainer.fit()`` under the run's lock; an interrupted or aborted run says where it will resume from."""
    clear_stop(storage, name)
    with stop_on_sigterm(storage, name, phase) as terminated:
        try:
            # Ctrl-C: Ray Train's own handler aborts the run, then returns, exits (SystemExit) or raises.
            with run_lock(join(storage, name), f"{phase} run"):
                result = trainer.fit()
        except TrainingFailedError as exc:
            line = fatal_line(exc)
            if line is None:
                raise
            raise FatalTrainingError(
                f"{phase} run {name!r} stopped, not restarted: {line}{_space(exc, storage, name)}"
            ) from None
        except (KeyboardInterrupt, SystemExit):
            say(interrupted_note(storage, name, phase))
            raise (Terminated if terminated.is_set() else KeyboardInterrupt) from None
    result = _with_final_checkpoint(result, storage, name)
    finished = -1
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            state = read_state(Path(d))
        # the probe's stop rule ends a run before its last epoch: finished, not interrupted
        finished = epochs if state.get("stopped_early") == state["epoch"] else state["epoch"]
    if finished < epochs:  # stopped or aborted: what is kept is a checkpoint to resume from, not a result
        say(interrupted_note(storage, name, phase))
        raise Terminated if terminated.is_set() else KeyboardInterrupt
    return result


def _with_final_checkpoint(result: ray.train.Result, storage: str, name: str) -> ray.train.Result:
    """``result`` with the run's newest sound checkpoint where Ray's is older or missing: a node lost just
    after the last epoch's checkpoint was written (before Ray recorded it) restarts the workers from that
    checkpoint, which they find on storage; they have nothing left to train and report nothing new."""
    newest = newest_complete_checkpoint(storage, name)
    if newest is None:
        return result
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            if progress(read_state(Path(d))) >= progress(newest[1]):
                return result
    fs, path = filesystem(newest[0])
    return dataclasses.replace(result, checkpoint=ray.train.Checkpoint(path, filesystem=fs))


def _space(exc: BaseException, storage: str, name: str) -> str:
    """For a run stopped by full storage: the checkpoints it left unfinished are removed (a resume would skip
    them, and they hold space), and what one more checkpoint needs is said."""
    if not no_space(exc):
        return ""
    try:
        removed, size = remove_incomplete_checkpoints(storage, name)
    except OSError:
        return f" (storage {storage})"
    need = f"; one checkpoint takes {size / 2**20:.1f} MiB" if size else ""
    gone = f"; {len(removed)} unfinished checkpoint(s) removed" if removed else ""
    return f" (storage {storage}{need}{gone})"


def interrupted_note(storage: str, name: str, phase: str) -> str:
    """What an interrupted run keeps: the epoch the same command will resume from."""
    newest = newest_complete_checkpoint(storage, name)
    if newest is None:
        return f"[{phase}] interrupted before the first checkpoint: the same command starts run {name!r} afresh"
    epoch, step = progress(newest[1])
    at = f"epoch {epoch}" + (f", step {step} of epoch {epoch + 1}" if step else "")
    return (
        f"[{phase}] interrupted: run {name!r} keeps its checkpoint at {at}; the same command resumes from there "
        f"(train.checkpoint_every sets how often one is written)"
    )


def train_supernet(task: Task, run: RunSpec | None = None) -> TrainOutcome:
    """Train (or resume) the supernet run ``storage/name`` (``run``: workers, GPU, storage, name, trackers; its
    name defaults to TASK-supernet)."""
    require_type(task, Task, "train_supernet: task", "a Task (from pipeline.load_task)")
    run = run or RunSpec()
    subject = SubjectSpec(SUPERNET)
    check_probe_size(task, task.space())
    prepared = prepare_run(task, run, f"{task.name}-supernet", subject)
    say(
        f"[train] task {task.name}: space {prepared.space.name}, sharing {task.model['sharing']}, "
        f"{describe_splits(prepared.splits)}, {task.train.epochs} epochs"
    )
    result = fit_run(prepared, run, subject, "train")
    with result.checkpoint.as_directory() as d:
        state = read_state(Path(d))
        export_path = export_supernet(Path(d), state, prepared.storage, prepared.name)
    if "probe" in state:
        write_probe_table(state, join(prepared.storage, prepared.name, "probe.parquet"))
        say(probe_summary(state, task.train.epochs))
    final = state["history"][-1] if state["history"] else {}
    return TrainOutcome(join(prepared.storage, prepared.name), export_path, final, state["restarts"], state["resumes"])


def training_mode(recorded_train: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """How the supernet was trained (``TrainSettings.mode``), with the run's training speed: the median images/s
    of its epochs (a sandwich step trains several subnets on each image)."""
    speeds = sorted(h["images_per_s"] for h in history if "images_per_s" in h)
    return TrainSettings.from_flat(recorded_train).mode(speeds[len(speeds) // 2] if speeds else None)


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
        **({"probe": probe_record(state)} if "probe" in state else {}),
    )
    weights = read_weights(checkpoint_dir)
    return write_directory_to(join(storage, name, EXPORT_DIR), lambda path: write_supernet_dir(path, weights, config))
