"""The training loop of every run, as named steps: a Ray Train worker (one DDP rank of ``train``, ``retrain`` or
``finetune``) or a Ray Tune trial (a fidelity report's stand-alone model) runs it through its ``Session``.

A supernet step samples one architecture uniformly (or, with the sandwich rule, the largest, the smallest and a
few uniform draws) with a seed derived from (seed, epoch, step), so all ranks run the same subnets without any
communication, and a resumed run draws exactly the draws it would have drawn.
Per-epoch RNG seeding (data order, augmentation, Mixup, DropPath) makes a resumed run continue the same
random stream. Rank 0 writes checkpoints; every rank calls ``ray.train.report`` (a barrier) at the same
checkpoint epochs.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import torch
import torch.distributed as dist
from timm.data import Mixup
from torch.utils.data import DataLoader, DistributedSampler, Subset

from pipeline.core.arch import Architecture
from pipeline.core.convergence import Evaluation, epoch_note
from pipeline.core.space import SearchSpace
from pipeline.core.task import Task
from pipeline.core.training_settings import TrainSettings
from pipeline.data.ray_ingest import DecodeSpec, EpochStream, TimedBatches, finish_images, stream
from pipeline.data.sources import ImageSource, open_sources, uses_ray_data
from pipeline.data.splits import SplitDataset, plan_from_settings, require_role, splits_summary
from pipeline.data.transforms import eval_transform, train_transform
from pipeline.shared.cluster import node_id
from pipeline.shared.faults import claim_fault, exit_now, fault_parameter
from pipeline.shared.metrics import autocast_factory, evaluate_each_sums, finish
from pipeline.shared.progress import say
from pipeline.shared.ray_console import quiet_worker
from pipeline.shared.storage import join, read_bytes, write_bytes
from pipeline.shared.timing import waiting
from pipeline.shared.tracking import open_trackers
from pipeline.training.checkpoint import (
    checkpoint_problem,
    newest_complete_checkpoint,
    progress,
    read_checkpoint,
    read_state,
    write_checkpoint,
)
from pipeline.training.exact_step import step_only_active, zero_fill_gradients
from pipeline.training.fatal import FatalTrainingError, fatal_line
from pipeline.training.probe import Probe, build_probe, evaluate_probe, history, stable
from pipeline.training.recipe import build_loss, build_mixup, build_optimizer, build_scheduler
from pipeline.training.run_spec import MODEL, WorkerConfig
from pipeline.training.session import Session, train_session
from pipeline.training.step import forward_backward
from pipeline.training.stop import CHECKPOINT, STOP, StopWatch, random_state, set_random_state
from pipeline.training.subject import Subject, logits, model_subject, supernet_subject
from pipeline.training.teacher import Teacher, load_teacher


class EpochSampler(DistributedSampler):
    """DDP's sampler, able to start an epoch part-way: a run stopped mid-epoch resumes at the batch it stopped
    before, in the same order (``skip`` indices of this rank's share are passed over)."""

    skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return super().__len__() - self.skip


@dataclasses.dataclass
class Loaders:
    space: SearchSpace  # the task's space with the class count found in the data
    train: DataLoader | EpochStream
    sampler: EpochSampler | EpochStream  # what sets the epoch's order and where a resumed epoch starts
    search: DataLoader | list  # this rank's shard of the search split
    splits: dict[str, Any]  # the split plan's record (sizes, seed, fingerprints)


@dataclasses.dataclass
class Training:
    subject: Subject
    optimizer: torch.optim.Optimizer
    scheduler: Any
    mixup: Mixup | None
    loss_fn: torch.nn.Module
    autocast: Callable
    teacher: Teacher | None  # train.teacher, in eval mode


def _all_reduce(t: torch.Tensor, op: Any = None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    value = (seed * 1_000_003 + epoch * 1009 + rank) % (2**31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def build_loaders(task: Task, where: Session) -> Loaders:
    """The training loader (DDP-sharded, augmented) and this rank's shard of the search split: a DataLoader in
    this process, or Ray Data tasks anywhere on the cluster (``data.ingest``)."""
    tr = task.train
    pool, own_test = open_sources(task.data)
    plan = plan_from_settings(pool.labels, task.splits, has_own_test=own_test is not None)
    space = task.space(num_classes=len(pool.classes))
    splits = splits_summary(pool, own_test, plan)
    per_rank = tr.batch_size // where.world
    if uses_ray_data(task.data):
        cpus = task.data["ingest_cpus"]
        spec = DecodeSpec.make(task.data, tr.augment)
        stream = EpochStream(pool, plan.train, spec, tr.seed, where.world, where.rank, per_rank, cpus)
        search = _ray_shard(pool, plan.search, task, where)
        return Loaders(space, stream, stream, search, splits)
    train_set = SplitDataset(pool, plan.train, train_transform(task.data, tr.augment), "train")
    search_set = SplitDataset(pool, plan.search, eval_transform(task.data), "search")
    require_role(search_set, "search", "tracking scores during training")
    workers = task.data["loader_workers"]
    sampler = EpochSampler(
        train_set, num_replicas=where.world, rank=where.rank, shuffle=True, seed=tr.seed, drop_last=True
    )
    loader = DataLoader(
        train_set,
        batch_size=per_rank,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=where.device.type == "cuda",
        persistent_workers=workers > 0,
    )
    search = _shard(search_set, tr.keeping.eval_batch_size, workers, where)
    return Loaders(space, where.prepare_loader(loader), sampler, search, splits)


def _shard(dataset: SplitDataset, batch_size: int, workers: int, where: Session) -> DataLoader:
    """This rank's share of an evaluation split (the ranks' sums add up to the whole split)."""
    indices = list(range(where.rank, len(dataset), where.world))
    return DataLoader(Subset(dataset, indices), batch_size=batch_size, num_workers=workers)


def _ray_shard(source: ImageSource, indices: np.ndarray, task: Task, where: Session) -> list:
    """This rank's share of an evaluation split, decoded once by Ray Data tasks and kept here as batches."""
    mine = np.asarray(indices)[where.rank :: where.world]
    spec = DecodeSpec.make(task.data, None)
    dataset = stream(source, mine, [-1] * len(mine), spec, task.data["ingest_cpus"])
    return [(finish_images(x, spec), y) for x, y in TimedBatches(dataset, task.train.keeping.eval_batch_size, False)]


def test_loader(task: Task, where: Session) -> Any:
    """This rank's shard of the test split: scored once, after the last epoch of a stand-alone model."""
    pool, own_test = open_sources(task.data)
    source, indices = (own_test, np.arange(len(own_test))) if own_test is not None else (pool, None)
    if indices is None:
        indices = plan_from_settings(pool.labels, task.splits, has_own_test=False).test
    if uses_ray_data(task.data):
        return _ray_shard(source, indices, task, where)
    dataset = SplitDataset(source, indices, eval_transform(task.data), "test")
    return _shard(dataset, task.train.keeping.eval_batch_size, task.data["loader_workers"], where)


def build_subject(config: WorkerConfig, task: Task, space: SearchSpace) -> Subject:
    spec = config.subject
    return model_subject(task, space, spec) if spec.kind == MODEL else supernet_subject(task, space)


def build_training(task: Task, subject: Subject, where: Session, steps_per_epoch: int) -> Training:
    """The recipe around the subject: optimizer, schedule, Mixup/CutMix and loss (timm), autocast, and the
    external teacher if the recipe names one."""
    subject.model.to(where.device)
    optimizer = build_optimizer(subject.model, task.train)
    scheduler = build_scheduler(optimizer, task.train, steps_per_epoch)
    mixup = build_mixup(task.train, subject.space.num_classes)
    autocast = autocast_factory(where.device, task.train.precision)
    source = task.train.teacher.source
    teacher = load_teacher(source, task, subject.space, where.device) if source else None
    return Training(subject, optimizer, scheduler, mixup, build_loss(task.train, mixup), autocast, teacher)


def _resume_checkpoint(where: Session, newest_on_storage: dict[str, Any] | None) -> Any:
    """The session's checkpoint for this run, or the newer complete one the driver found on storage.

    After an interrupted driver, Ray's run snapshot can lag behind the checkpoints already written; resuming
    from the newest complete one loses no finished epochs. After a worker failure within the same run, Ray's
    own checkpoint is the newer and wins.
    """
    checkpoint = where.checkpoint()
    ray_progress = (-1, 0)
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            problem = checkpoint_problem(Path(d))
            if problem is None:
                ray_progress = progress(read_state(Path(d)))
            else:  # damaged: the driver's choice (the newest sound one on storage), or a fresh start
                say(f"[train] not resuming from Ray's latest checkpoint: {problem}")
                checkpoint = None
    if newest_on_storage is not None and tuple(newest_on_storage["progress"]) > ray_progress:
        return ray.train.Checkpoint(newest_on_storage["path"])
    return checkpoint


ATTEMPT_FILE = ".train-attempt"  # in a run's directory: the attempt id of the fit() call whose workers last started


def start_point(config: WorkerConfig, where: Session) -> tuple[bool | None, dict[str, Any] | None]:
    """Whether this start of the workers is a restart within the same ``fit()`` call, and the newest complete
    checkpoint on storage now; rank 0 decides, every rank gets the same answer.

    Ray restarts a worker group from the newest checkpoint its controller has *registered*, which misses one
    uploaded just before a node was lost (it is registered on the controller's next poll) and is none at all
    when this ``fit()`` call registered none yet; the driver's look at storage is from before ``fit()``. So the
    storage is looked at again at every start. A restart is told by the run directory's ``ATTEMPT_FILE``, not
    by the checkpoint's attempt: a restart before this call's first registered checkpoint resumes from an
    earlier call's. Runs without a ``run`` entry (a fidelity trial, which Tune restores) get (None, the
    driver's look).
    """
    if config.run is None:
        return None, config.newest_checkpoint
    storage, name = config.run
    decided: list[Any] = [None]
    if where.rank == 0:
        marker = join(storage, name, ATTEMPT_FILE)
        try:
            restart = read_bytes(marker).decode("utf-8").strip() == config.attempt
        except OSError:  # no marker yet (FileNotFoundError locally, an OSError from object stores)
            restart = False
        if not restart:
            write_bytes(marker, config.attempt.encode("utf-8"))
        newest = newest_complete_checkpoint(storage, name)
        decided = [(restart, {"path": newest[0], "progress": progress(newest[1])} if newest else None)]
    if where.world > 1 and dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(decided, src=0)
    return decided[0]


def resume_or_init(config: WorkerConfig, task: Task, training: Training, loaders: Loaders, where: Session) -> dict:
    """The run state: read from the checkpoint to continue from (counting a restart or a resume), or a new one."""
    restart, newest = start_point(config, where)
    checkpoint = _resume_checkpoint(where, newest)
    if checkpoint is None and restart and where.rank == 0:
        say(f"[{config.phase}] workers restarted after a failure, before the first checkpoint: starting over")
    if checkpoint is None:
        return {
            "epoch": 0,
            "global_step": 0,
            "restarts": int(bool(restart)),  # workers restarted before the first checkpoint
            "resumes": 0,
            "attempt": config.attempt,
            "history": [],
            "splits": loaders.splits,
            "task": task.to_dict(),
            "space": loaders.space.to_dict(),
            "workers": where.world,
            "subject": training.subject.kind,
            "subject_architecture": config.subject.architecture,
            "phase": config.phase,
        }
    with checkpoint.as_directory() as d:
        state = read_checkpoint(Path(d), training.subject.model, training.optimizer, training.scheduler, where.device)
    if restart is None:  # no marker to go by: a checkpoint of this fit() call means a restart
        restart = state["attempt"] == config.attempt
    if restart:
        state["restarts"] += 1  # same fit() call: Ray restarted the workers after a failure
    if state["attempt"] != config.attempt:
        state["resumes"] += 1  # a new fit() call on the same run: the command was run again
        state["attempt"] = config.attempt
        state["task"] = task.to_dict()  # the driver allowed only resumable changes (e.g. more epochs)
    if where.rank == 0:
        say(
            f"[{config.phase}] continuing from epoch {state['epoch']}{_step_note(state)} (restarts "
            f"{state['restarts']}, resumes {state['resumes']})"
        )
    return state


def _step_note(state: dict[str, Any]) -> str:
    partial = state.get("partial")
    return f", step {partial['step']} of epoch {partial['epoch'] + 1}" if partial else ""


def optimizer_step(training: Training, train: TrainSettings) -> None:
    """One step after the backward pass. A supernet step changes only what the step's subnet used
    (``train.freeze_inactive``), or, like the reference code, every weight: unused entries get a zero gradient,
    so AdamW's momentum and weight decay move them too, layers beyond the sampled depth included."""
    params = training.subject.model.parameters()
    if train.optim.clip_grad:
        torch.nn.utils.clip_grad_norm_(params, train.optim.clip_grad)
    if training.subject.kind == MODEL:
        training.optimizer.step()
    elif train.supernet.freeze_inactive:
        step_only_active(training.optimizer)
    else:
        zero_fill_gradients(training.optimizer)
        training.optimizer.step()


def train_step(net: torch.nn.Module, training: Training, tr: TrainSettings, archs: list, batch: Any, where: Session):
    """One optimizer step on one batch (Mixup, the teacher's logits, the forward and backward passes of the
    step's subnets); the step's mean loss and its image count."""
    images, labels = (t.to(where.device, non_blocking=True) for t in batch)
    targets = labels
    if training.mixup is not None:
        images, targets = training.mixup(images, labels)
    teacher_logits = None
    if training.teacher is not None:
        with training.autocast():
            teacher_logits = training.teacher.logits(images)
    training.optimizer.zero_grad(set_to_none=True)
    model = training.subject.model
    loss = forward_backward(net, model, archs, images, targets, teacher_logits, training.loss_fn, training.autocast, tr)
    optimizer_step(training, tr)
    return loss.detach(), images.shape[0]


def train_one_epoch(
    net: torch.nn.Module,
    training: Training,
    loaders: Loaders,
    task: Task,
    epoch: int,
    state: dict[str, Any],
    where: Session,
    phase: str,
    watch: StopWatch,
) -> dict[str, Any] | None:
    """One pass over the training split (one sampled subnet per step for a supernet); the epoch's metrics, or
    None when the driver asked the run to stop (``state["partial"]`` then says where, for the checkpoint)."""
    tr = task.train
    partial = state.pop("partial", None)
    partial = partial if partial and partial["epoch"] == epoch else None
    first = start_epoch(tr, loaders, epoch, partial, where)
    net.train()
    start = time.perf_counter() - (partial["elapsed"] if partial else 0.0)
    totals = torch.zeros(2, dtype=torch.float64, device=where.device)
    if partial and where.rank == 0:
        totals += torch.tensor(partial["totals"], dtype=torch.float64, device=where.device)  # the ranks' sums so far
    steps = first + len(loaders.train)
    batches = iter(loaders.train)  # its creation draws from torch's random stream: the stopped run's state after it
    if partial and len(partial["random"]) == where.world:
        set_random_state(partial["random"][where.rank])
    waited = [0.0]
    for step, batch in enumerate(waiting(batches, waited), start=first):
        loss, count = train_step(net, training, tr, training.subject.step_architectures(epoch, step), batch, where)
        state["global_step"] += 1
        training.scheduler.step_update(state["global_step"])
        totals[0] += loss.double() * count
        totals[1] += count
        every = tr.keeping.log_every_steps
        if every and where.rank == 0 and (step + 1) % every == 0:
            say(f"[{phase}] epoch {epoch + 1} step {step + 1}/{steps} loss {loss.item():.4f}")
        asked = watch.requested(where.device)
        if asked == STOP:
            state["partial"] = _stopped_at(epoch, step + 1, totals, start, where)
            return None
        if asked == CHECKPOINT:
            checkpoint_on_notice(
                training, state, _stopped_at(epoch, step + 1, totals, start, where), where, phase, watch
            )
    _all_reduce(totals)
    train_time = _elapsed(start, where)
    wait = torch.tensor([waited[0]], dtype=torch.float64, device=where.device)
    return {
        "data_wait": float(_all_reduce(wait, dist.ReduceOp.MAX).item()) / max(train_time, 1e-9),
        "epoch": epoch + 1,
        "train_loss": float(totals[0] / max(totals[1], 1)),
        "lr": float(training.optimizer.param_groups[0]["lr"]),
        "images_per_s": float(totals[1]) / train_time,
        "epoch_time_s": train_time,
    }


def start_epoch(tr: TrainSettings, loaders: Loaders, epoch: int, partial: dict | None, where: Session) -> int:
    """Seed the epoch (data order, augmentation, Mixup, DropPath); when resuming a stopped epoch, skip the batches
    it trained. The first step's index."""
    _seed_epoch(tr.seed, epoch, where.rank)
    loaders.sampler.set_epoch(epoch)
    first = partial["step"] if partial else 0
    loaders.sampler.skip = first * (tr.batch_size // where.world)
    return first


def _elapsed(start: float, where: Session) -> float:
    """Seconds since ``start`` on the slowest rank."""
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=where.device)
    return float(_all_reduce(elapsed, dist.ReduceOp.MAX).item())


def _stopped_at(epoch: int, step: int, totals: torch.Tensor, start: float, where: Session) -> dict[str, Any]:
    """Where a stopped run is, for its checkpoint: the epoch and step, the loss sums of all ranks so far, the
    time spent, and every rank's random state."""
    summed = _all_reduce(totals.clone())
    states = [random_state()]
    if where.world > 1 and dist.is_available() and dist.is_initialized():
        states = [None] * where.world
        dist.all_gather_object(states, random_state())
    elapsed = _elapsed(start, where)
    return {"epoch": epoch, "step": step, "totals": summed.tolist(), "elapsed": elapsed, "random": states}


def checkpoint_on_notice(
    training: Training, state: dict[str, Any], at: dict[str, Any], where: Session, phase: str, watch: StopWatch
) -> None:
    """Ray's preemption notice: a checkpoint at this step (as a stopped run's), then training goes on; when the
    node goes, Ray Train restarts the workers from here. The line comes once the checkpoint is on storage: a
    node taken as soon as it is printed still leaves the run that checkpoint."""
    state["partial"] = at
    save_checkpoint(training, state, {"epoch": at["epoch"], "step": at["step"], "restarts": state["restarts"]}, where)
    del state["partial"]
    if where.rank == 0:
        info = watch.preemption
        deadline = getattr(info, "deadline_ms", None)
        left = f" (it goes in {max(0.0, deadline / 1000 - time.time()):.0f} s)" if deadline else ""
        nodes = ", ".join(getattr(info, "preempted_node_ids", []) or []) or "?"
        say(
            f"[{phase}] preemption notice for node {nodes}{left}: checkpointed at epoch {at['epoch'] + 1}, step "
            f"{at['step']}; training goes on, and continues from there on other nodes once it is gone"
        )


def split_scores(training: Training, arch: Any, batches: DataLoader, where: Session) -> dict[str, float]:
    """Top-1, top-5, loss and image count of one architecture (or the model) on a split, summed over ranks."""
    return each_split_scores(training, [arch], batches, where)[0]


def each_split_scores(
    training: Training, archs: Sequence[Any], batches: DataLoader, where: Session
) -> list[dict[str, float]]:
    """``split_scores`` of each of ``archs``, in one pass over the split (its images decoded once)."""
    model = training.subject.model
    model.eval()
    sums = _all_reduce(
        evaluate_each_sums(lambda x, a: logits(model, x, a), archs, batches, where.device, training.autocast())
    )
    return [{**finish(row), "count": int(row[3].item())} for row in sums]


def evaluate_tracked(training: Training, loaders: Loaders, where: Session) -> dict[str, float]:
    """Search-split top-1 of each tracked subnet, or of the model (each rank scores its shard)."""
    names, archs = zip(*training.subject.tracked)
    scores = each_split_scores(training, archs, loaders.search, where)
    return {f"search_top1/{name}": s["top1"] for name, s in zip(names, scores)}


def print_epoch(metrics: dict[str, Any], epochs: int, subject: Subject, phase: str, note: str = "") -> None:
    head = (
        f"[{phase}] epoch {metrics['epoch']}/{epochs}  loss {metrics['train_loss']:.4f}  lr {metrics['lr']:.2e}  "
        f"{metrics['images_per_s']:.0f} img/s  {_waiting(metrics)}search top-1: "
    )
    if subject.kind == MODEL:
        say(head + f"{metrics['search_top1/model']:.3f}")
        return
    sampled = [metrics[f"search_top1/{n}"] for n, _ in subject.tracked[2:]]
    spread = f"  subnets {statistics.mean(sampled):.3f}" if sampled else ""
    note = f"  {note}" if note else ""
    say(
        head
        + f"smallest {metrics['search_top1/smallest']:.3f}  largest {metrics['search_top1/largest']:.3f}{spread}{note}"
    )


DATA_WAIT_SHOWN = 0.05  # the epoch line says how long the slowest worker waited for data from this share on


def _waiting(metrics: dict[str, Any]) -> str:
    """``data wait 35%  `` when the workers waited for images (more CPU nodes, or loader workers, would help)."""
    share = metrics.get("data_wait", 0.0)
    return f"data wait {share:.0%}  " if share >= DATA_WAIT_SHOWN else ""


def final_scores(training: Training, task: Task, loaders: Loaders, where: Session) -> dict[str, Any]:
    """A stand-alone model's scores after its last epoch: the search split, and the test split (scored here once;
    nothing decides on it)."""
    search = split_scores(training, None, loaders.search, where)
    test = split_scores(training, None, test_loader(task, where), where)
    return {"search": search, "test": test}


def save_checkpoint(training: Training, state: dict[str, Any], metrics: dict[str, Any], where: Session) -> None:
    """Rank 0 writes the checkpoint; every rank reports (a barrier), so all call this at the same epochs."""
    with tempfile.TemporaryDirectory() as tmp:
        if where.rank == 0:
            write_checkpoint(Path(tmp), training.subject.model, training.optimizer, training.scheduler, state)
        where.report(metrics, tmp if where.rank == 0 else None)


def run_training(config: WorkerConfig, where: Session) -> dict[str, Any]:
    """The loop every run shares (supernet training, retrain, finetune, a fidelity trial); the final state."""
    task, phase = config.task, config.phase
    torch.set_num_threads(config.threads)
    loaders = build_loaders(task, where)
    subject = build_subject(config, task, loaders.space)
    training = build_training(task, subject, where, len(loaders.train))
    state = resume_or_init(config, task, training, loaders, where)
    probe = start_probe(config, task, loaders, state)
    state["nodes"] = rank_nodes(where)  # where this attempt's ranks run (the last attempt's, after a restart)
    net = where.prepare_model(subject.model, subject.unused_parameters)
    plan = config.tracking if where.rank == 0 else None
    recorded = state.get("tracking", {})
    watch = StopWatch(config.run, where.rank, where.world, notice=where.preemption)
    with open_trackers(plan, tracking_params(config, where), recorded, phase) as trackers:
        state["tracking"] = {**recorded, **trackers.ids}  # a resumed run continues the same tracking runs
        for epoch in range(state["epoch"], task.train.epochs):
            if stable(probe, history(state)):  # the stop rule ended this run before: nothing more to train
                break
            if not run_epoch(config, net, training, loaders, epoch, state, where, trackers, watch, probe):
                break
    watch.close()
    return state


def run_epoch(
    config: WorkerConfig,
    net: torch.nn.Module,
    training: Training,
    loaders: Loaders,
    epoch: int,
    state: dict[str, Any],
    where: Session,
    trackers: Any,
    watch: StopWatch,
    probe: Probe | None = None,
) -> bool:
    """One epoch: train, score the tracked subnets (or the model; its test split after the last epoch) and the
    probe when due, print the epoch line, log to the trackers, and checkpoint every ``checkpoint_every`` epochs
    and at the end. False when the run ends here: the driver asked it to stop (it is checkpointed where it
    stopped, mid-epoch), or the probe's stop rule holds (checkpointed as a last epoch)."""
    task, phase, subject = config.task, config.phase, training.subject
    epochs = task.train.epochs
    if epoch == fault_parameter("train_exit_at_epoch") and where.rank == where.world - 1 and claim_fault():
        exit_now(f"[{phase}] fault injection: rank {where.rank} exits at the start of epoch {epoch}")
    metrics = train_one_epoch(net, training, loaders, task, epoch, state, where, phase, watch)
    if metrics is None:
        stopped = {"epoch": epoch, "step": state["partial"]["step"], "restarts": state["restarts"]}
        if where.rank == 0:
            say(f"[{phase}] stopped at epoch {epoch + 1}, step {stopped['step']}: checkpointing there")
        save_checkpoint(training, state, stopped, where)
        return False
    metrics.update(evaluate_tracked(training, loaders, where))
    evaluation = probe and evaluate_probe(probe, state, epoch + 1, epochs, probe_scorer(training, loaders, where))
    stop = bool(evaluation) and stable(probe, history(state))
    state["epoch"] = epoch + 1
    state["history"].append(metrics)
    metrics.update(restarts=state["restarts"], resumes=state["resumes"], **config.extra_metrics)
    metrics.update(probe_metrics(evaluation))
    if where.rank == 0:
        print_epoch(metrics, epochs, subject, phase, epoch_note(evaluation) if evaluation else "")
        if stop:
            say(f"[{phase}] the probe ranking is stable (stop_when_stable {list(probe.rule)}): training ends after "
                f"epoch {epoch + 1} of {epochs}")  # fmt: skip
    last = epoch + 1 == epochs or stop
    if stop:
        state["stopped_early"] = epoch + 1  # what the driver tells from an interrupted run
    if last and subject.kind == MODEL:
        state["final"] = final_scores(training, task, loaders, where)
        metrics.update(search_top1=state["final"]["search"]["top1"], test_top1=state["final"]["test"]["top1"])
    trackers.log(metrics, epoch + 1)
    if last or (epoch + 1) % task.train.keeping.checkpoint_every == 0:
        save_checkpoint(training, state, metrics, where)
    # Between checkpoints nothing is reported to Ray: its controller takes reports on a ~2 s tick through a
    # one-slot queue, so a report every (short) epoch would stall training. The console line, the trackers rank 0
    # logs to (--log) and the run's own history (in every checkpoint and in the export) carry the per-epoch metrics.
    return not stop


def start_probe(config: WorkerConfig, task: Task, loaders: Loaders, state: dict[str, Any]) -> Probe | None:
    """A supernet run's probe, its record in the state (kept across restarts and resumes: the same architectures
    from the task's seed; only how often may change)."""
    if config.subject.kind == MODEL:
        return None
    probe = build_probe(task, loaders.space, loaders.splits["search"]["size"], loaders.splits["train"]["size"])
    if probe is None:
        return None
    kept = state.get("probe")
    if kept is None or kept["archs"] != [a.key for a in probe.archs]:
        state["probe"] = probe.record(loaders.space)
    else:
        kept["every"] = probe.every
    return probe


def probe_scorer(
    training: Training, loaders: Loaders, where: Session
) -> Callable[[Sequence[Architecture]], list[tuple[float, int]]]:
    def score(archs: Sequence[Architecture]) -> list[tuple[float, int]]:
        return [(s["top1"], s["count"]) for s in each_split_scores(training, archs, loaders.search, where)]

    return score


def probe_metrics(evaluation: Evaluation | None) -> dict[str, float]:
    """The probe's numbers for the trackers (what is undefined is left out: trackers take numbers)."""
    if not evaluation:
        return {}
    values = {"probe_tau": evaluation.tau, "probe_spread": evaluation.spread()}
    return {k: v for k, v in values.items() if v == v}


def tracking_params(config: WorkerConfig, where: Session) -> dict[str, Any]:
    """What a tracking run records once as its parameters: the phase, the task, what is trained and the recipe."""
    task, spec = config.task, config.subject
    trained = {"architecture": Architecture.from_dict(spec.architecture).key} if spec.kind == MODEL else {}
    return {
        "phase": config.phase,
        "task": task.name,
        "space": task.space_name,
        "subject": spec.kind,
        **trained,
        "workers": where.world,
        **{f"train.{k}": v for k, v in task.train.to_flat().items()},
    }


def rank_nodes(where: Session) -> list[str]:
    """The Ray node id of every rank, in rank order (gathered over DDP)."""
    mine = node_id()
    if not (dist.is_available() and dist.is_initialized()) or where.world == 1:
        return [mine]
    nodes: list[str] = [""] * where.world
    dist.all_gather_object(nodes, mine)
    return nodes


def train_loop_per_worker(config: dict[str, WorkerConfig]) -> None:
    """The Ray Train entry: one DDP rank (``train_loop_config`` is ``{"worker": WorkerConfig}``)."""
    quiet_worker()
    # A supernet step leaves most parameters unused, so DDP must look for them; the step that samples the
    # largest subnet uses all, and DDP warns about that every time: expected here, not a problem.
    warnings.filterwarnings("ignore", message=".*find_unused_parameters=True.*")
    try:
        run_training(config["worker"], train_session())
    except Exception as exc:
        line = fatal_line(exc)
        if line is None:
            raise
        raise FatalTrainingError(line) from None  # one line: the driver ends the run without a restart
