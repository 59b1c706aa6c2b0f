"""The training loop each Ray Train worker runs (one DDP rank), as named steps.

Every step samples one architecture uniformly with a seed derived from (seed, epoch, step), so all ranks run
the same subnet without any communication, and a resumed run draws exactly the draws it would have drawn.
Per-epoch RNG seeding (data order, augmentation, Mixup, DropPath) makes a resumed run continue the same
random stream. Rank 0 writes checkpoints; every rank calls ``ray.train.report`` (a barrier) at the same
checkpoint epochs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from timm.data import Mixup
from torch.utils.data import DataLoader, DistributedSampler, Subset

from pipeline.core.arch import Architecture
from pipeline.core.sampling import (
    largest_architecture,
    sample_architecture,
    sample_architectures,
    smallest_architecture,
)
from pipeline.core.space import SearchSpace
from pipeline.core.task import Task
from pipeline.data.sources import open_sources
from pipeline.data.splits import SplitDataset, plan_from_settings, require_role
from pipeline.data.transforms import eval_transform, train_transform
from pipeline.model.supernet import Supernet
from pipeline.model.supernet_dir import build_supernet, supernet_config
from pipeline.shared.faults import claim_fault, exit_now, fault_parameter
from pipeline.shared.metrics import autocast_factory, evaluate_sums, finish
from pipeline.shared.progress import say
from pipeline.training.checkpoint import read_checkpoint, read_state, write_checkpoint
from pipeline.training.exact_step import step_only_active
from pipeline.training.recipe import build_loss, build_mixup, build_optimizer, build_scheduler


@dataclasses.dataclass
class Rank:
    """Where this worker sits: its DDP rank, the world size and its device."""

    rank: int
    world: int
    device: torch.device
    autocast: Callable


@dataclasses.dataclass
class Loaders:
    space: SearchSpace  # the task's space with the class count found in the data
    train: DataLoader
    sampler: DistributedSampler
    search: DataLoader  # this rank's shard of the search split
    splits: dict[str, Any]  # the split plan's record (sizes, seed, fingerprints)


@dataclasses.dataclass
class Training:
    model: Supernet
    optimizer: torch.optim.Optimizer
    scheduler: Any
    mixup: Mixup | None
    loss_fn: torch.nn.Module


def step_architecture(space: SearchSpace, seed: int, epoch: int, step: int) -> Architecture:
    """The subnet of one training step: the same on every rank and on every re-run."""
    return sample_architecture(space, random.Random(f"{seed}:{epoch}:{step}"))


def tracked_subnets(space: SearchSpace, seed: int, count: int) -> list[tuple[str, Architecture]]:
    """The fixed subnets whose search-split accuracy is reported every epoch (comparable across epochs)."""
    fixed = sample_architectures(space, count, seed=seed + 7919)
    return [("smallest", smallest_architecture(space)), ("largest", largest_architecture(space))] + [
        (f"subnet{i}", arch) for i, arch in enumerate(fixed)
    ]


def _all_reduce(t: torch.Tensor, op: Any = None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def _quiet_ray_train_logs() -> None:
    """Ray Train logs every report at INFO (some of its loggers are named by file path, not module); our epoch
    lines are the progress."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("ray.train") or f"{os.sep}ray{os.sep}train{os.sep}" in name:
            logging.getLogger(name).setLevel(logging.WARNING)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    value = (seed * 1_000_003 + epoch * 1009 + rank) % (2**31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def build_loaders(task: Task, where: Rank) -> Loaders:
    """The training loader (DDP-sharded, augmented) and this rank's shard of the search split."""
    tr = task.train
    pool, own_test = open_sources(task.data)
    plan = plan_from_settings(pool.labels, task.splits, has_own_test=own_test is not None)
    space = task.space(num_classes=len(pool.classes))
    train_set = SplitDataset(pool, plan.train, train_transform(task.data, tr), "train")
    search_set = SplitDataset(pool, plan.search, eval_transform(task.data), "search")
    require_role(search_set, "search", "tracking subnets during training")

    workers = task.data["loader_workers"]
    sampler = DistributedSampler(
        train_set, num_replicas=where.world, rank=where.rank, shuffle=True, seed=tr["seed"], drop_last=True
    )
    loader = DataLoader(
        train_set,
        batch_size=tr["batch_size"] // where.world,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=where.device.type == "cuda",
        persistent_workers=workers > 0,
    )
    search = DataLoader(
        Subset(search_set, list(range(where.rank, len(search_set), where.world))),
        batch_size=tr["eval_batch_size"],
        num_workers=workers,
    )
    splits = plan.summary(len(own_test) if own_test is not None else None)
    return Loaders(space, ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False), sampler, search, splits)


def build_training(task: Task, space: SearchSpace, device: torch.device, steps_per_epoch: int) -> Training:
    """The supernet (seeded init) and the recipe's optimizer, schedule, Mixup/CutMix and loss."""
    torch.manual_seed(task.train["seed"])
    model = build_supernet(supernet_config(space.to_dict(), task.model["sharing"], task.model)).to(device)
    optimizer = build_optimizer(model, task.train)
    scheduler = build_scheduler(optimizer, task.train, steps_per_epoch)
    mixup = build_mixup(task.train, space.num_classes)
    return Training(model, optimizer, scheduler, mixup, build_loss(task.train, mixup))


def _resume_checkpoint(newest_on_storage: dict[str, Any] | None) -> ray.train.Checkpoint | None:
    """Ray's checkpoint for this run, or the newer complete one the driver found on storage.

    After an interrupted driver, Ray's run snapshot can lag behind the checkpoints already written; resuming
    from the newest complete one loses no finished epochs. After a worker failure within the same run, Ray's
    own checkpoint is the newer and wins.
    """
    checkpoint = ray.train.get_checkpoint()
    if newest_on_storage is None:
        return checkpoint
    ray_epoch = -1
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            ray_epoch = read_state(Path(d))["epoch"]
    if newest_on_storage["epoch"] > ray_epoch:
        return ray.train.Checkpoint(newest_on_storage["path"])
    return checkpoint


def resume_or_init(
    config: dict[str, Any], task: Task, training: Training, loaders: Loaders, where: Rank
) -> dict[str, Any]:
    """The run state: read from the checkpoint to continue from (counting a restart or a resume), or a new one."""
    checkpoint = _resume_checkpoint(config.get("newest_checkpoint"))
    if checkpoint is None:
        return {
            "epoch": 0,
            "global_step": 0,
            "restarts": 0,
            "resumes": 0,
            "attempt": config["attempt"],
            "history": [],
            "splits": loaders.splits,
            "task": task.to_dict(),
            "space": loaders.space.to_dict(),
            "workers": where.world,
        }
    with checkpoint.as_directory() as d:
        state = read_checkpoint(Path(d), training.model, training.optimizer, training.scheduler, where.device)
    if state["attempt"] == config["attempt"]:
        state["restarts"] += 1  # same fit() call: Ray restarted the workers after a failure
    else:
        state["resumes"] += 1  # a new fit() call on the same run: the command was run again
        state["attempt"] = config["attempt"]
        state["task"] = task.to_dict()  # the driver allowed only resumable changes (e.g. more epochs)
    if where.rank == 0:
        say(
            f"[train] continuing from epoch {state['epoch']} (restarts {state['restarts']}, resumes {state['resumes']})"
        )
    return state


def train_one_epoch(
    net: torch.nn.Module,
    training: Training,
    loaders: Loaders,
    task: Task,
    epoch: int,
    state: dict[str, Any],
    where: Rank,
) -> dict[str, Any]:
    """One pass over the training split, one sampled subnet per step; returns the epoch's training metrics."""
    tr = task.train
    _seed_epoch(tr["seed"], epoch, where.rank)
    loaders.sampler.set_epoch(epoch)
    net.train()
    start = time.perf_counter()
    totals = torch.zeros(2, dtype=torch.float64, device=where.device)
    steps = len(loaders.train)
    for step, (images, labels) in enumerate(loaders.train):
        arch = step_architecture(loaders.space, tr["seed"], epoch, step)
        images, labels = images.to(where.device, non_blocking=True), labels.to(where.device, non_blocking=True)
        targets = labels
        if training.mixup is not None:
            images, targets = training.mixup(images, labels)
        with where.autocast():
            loss = training.loss_fn(net(images, arch), targets)
        training.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tr["clip_grad"]:
            torch.nn.utils.clip_grad_norm_(training.model.parameters(), tr["clip_grad"])
        if tr["freeze_inactive"]:
            step_only_active(training.optimizer)
        else:
            training.optimizer.step()
        state["global_step"] += 1
        training.scheduler.step_update(state["global_step"])
        totals[0] += loss.detach().double() * images.shape[0]
        totals[1] += images.shape[0]
        if tr["log_every_steps"] and where.rank == 0 and (step + 1) % tr["log_every_steps"] == 0:
            say(f"[train] epoch {epoch + 1} step {step + 1}/{steps} loss {loss.item():.4f}")
    _all_reduce(totals)
    elapsed = _all_reduce(
        torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=where.device), dist.ReduceOp.MAX
    )
    train_time = float(elapsed.item())
    return {
        "epoch": epoch + 1,
        "train_loss": float(totals[0] / max(totals[1], 1)),
        "lr": float(training.optimizer.param_groups[0]["lr"]),
        "images_per_s": float(totals[1]) / train_time,
        "epoch_time_s": train_time,
    }


def evaluate_tracked(
    model: Supernet, subnets: list[tuple[str, Architecture]], loaders: Loaders, where: Rank
) -> dict[str, float]:
    """Search-split top-1 of each tracked subnet (each rank scores its shard; the sums are all-reduced)."""
    model.eval()
    return {
        f"search_top1/{name}": finish(
            _all_reduce(evaluate_sums(model, arch, loaders.search, where.device, where.autocast()))
        )["top1"]
        for name, arch in subnets
    }


def print_epoch(metrics: dict[str, Any], epochs: int, subnets: list[tuple[str, Architecture]]) -> None:
    sampled = [metrics[f"search_top1/{n}"] for n, _ in subnets[2:]]
    spread = f"  subnets {statistics.mean(sampled):.3f}" if sampled else ""
    say(
        f"[train] epoch {metrics['epoch']}/{epochs}  loss {metrics['train_loss']:.4f}  lr {metrics['lr']:.2e}  "
        f"{metrics['images_per_s']:.0f} img/s  search top-1: smallest {metrics['search_top1/smallest']:.3f}  "
        f"largest {metrics['search_top1/largest']:.3f}{spread}"
    )


def save_checkpoint(training: Training, state: dict[str, Any], metrics: dict[str, Any], where: Rank) -> None:
    """Rank 0 writes the checkpoint; every rank reports (a barrier), so all call this at the same epochs."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if where.rank == 0:
            write_checkpoint(Path(tmp), training.model, training.optimizer, training.scheduler, state)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    _quiet_ray_train_logs()
    task = Task.from_dict(config["task"])
    tr = task.train
    ctx = ray.train.get_context()
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()
    where = Rank(ctx.get_world_rank(), ctx.get_world_size(), device, autocast_factory(device, tr["precision"]))

    loaders = build_loaders(task, where)
    training = build_training(task, loaders.space, device, len(loaders.train))
    state = resume_or_init(config, task, training, loaders, where)
    net = ray.train.torch.prepare_model(training.model, parallel_strategy_kwargs={"find_unused_parameters": True})
    subnets = tracked_subnets(loaders.space, tr["seed"], tr["eval_subnets"])
    fail_at = fault_parameter("train_exit_at_epoch")

    for epoch in range(state["epoch"], tr["epochs"]):
        if epoch == fail_at and where.rank == where.world - 1 and claim_fault():
            exit_now(f"[train] fault injection: rank {where.rank} exits at the start of epoch {epoch}")
        metrics = train_one_epoch(net, training, loaders, task, epoch, state, where)
        metrics.update(evaluate_tracked(training.model, subnets, loaders, where))
        state["epoch"] = epoch + 1
        state["history"].append(metrics)
        metrics.update(restarts=state["restarts"], resumes=state["resumes"])
        if where.rank == 0:
            print_epoch(metrics, tr["epochs"], subnets)
        if epoch + 1 == tr["epochs"] or (epoch + 1) % tr["checkpoint_every"] == 0:
            save_checkpoint(training, state, metrics, where)
        # Between checkpoints nothing is reported to Ray: its controller takes reports on a ~2 s tick through a
        # one-slot queue, so a report every (short) epoch would stall training. The console line and the
        # run's own history (in every checkpoint and in the export) carry the per-epoch metrics.
