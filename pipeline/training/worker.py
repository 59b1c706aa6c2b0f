"""The training loop each Ray Train worker runs (one DDP rank).

Every step samples one architecture uniformly with a seed derived from (seed, epoch, step), so all ranks run
the same subnet without any communication, and a resumed run draws exactly the draws it would have drawn.
Per-epoch RNG seeding (data order, augmentation, Mixup, DropPath) makes a resumed run continue the same
random stream. Rank 0 writes checkpoints; every rank calls ``ray.train.report`` (a barrier) at the same
checkpoint epochs.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Subset

from pipeline.arch import Architecture
from pipeline.data.sources import open_sources
from pipeline.data.splits import SplitDataset, plan_from_settings, require_role
from pipeline.data.transforms import eval_transform, train_transform
from pipeline.model.supernet import Supernet
from pipeline.progress import say
from pipeline.sampling import largest_architecture, sample_architecture, sample_architectures, smallest_architecture
from pipeline.task import Task
from pipeline.training.evaluate import autocast_factory, evaluate_sums, finish
from pipeline.training.exact_step import step_only_active
from pipeline.training.recipe import build_loss, build_mixup, build_optimizer, build_scheduler
from pipeline.training.state import read_checkpoint, read_state, write_checkpoint


def step_architecture(space, seed: int, epoch: int, step: int) -> Architecture:
    """The subnet of one training step: the same on every rank and on every re-run."""
    return sample_architecture(space, random.Random(f"{seed}:{epoch}:{step}"))


def tracked_subnets(space, seed: int, count: int) -> list[tuple[str, Architecture]]:
    """The fixed subnets whose search-split accuracy is reported every epoch (comparable across epochs)."""
    fixed = sample_architectures(space, count, seed=seed + 7919)
    return [("smallest", smallest_architecture(space)), ("largest", largest_architecture(space))] + [
        (f"subnet{i}", arch) for i, arch in enumerate(fixed)
    ]


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t



def _quiet_ray_train_logs() -> None:
    """Ray Train logs every report at INFO (some of its loggers are named by file path, not module); our epoch
    lines are the progress."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("ray.train") or f"{os.sep}ray{os.sep}train{os.sep}" in name:
            logging.getLogger(name).setLevel(logging.WARNING)


def _resume_checkpoint(newest_on_storage: dict[str, Any] | None):
    """Ray's checkpoint for this run, or the newer complete one the driver found on storage.

    After an interrupted driver, Ray's run snapshot can lag behind the checkpoints already written; resuming
    from the newest complete one loses no finished epochs. After a worker failure within the same run, Ray's
    own checkpoint is the newer and wins.
    """
    import ray.train

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


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    value = (seed * 1_000_003 + epoch * 1009 + rank) % (2**31)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    _quiet_ray_train_logs()
    task = Task.from_dict(config["task"])
    tr = task.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()
    autocast = autocast_factory(device, tr["precision"])

    pool, own_test = open_sources(task.data)
    plan = plan_from_settings(pool.labels, task.splits, has_own_test=own_test is not None)
    space = task.space(num_classes=len(pool.classes))
    train_set = SplitDataset(pool, plan.train, train_transform(task.data, tr), "train")
    search_set = SplitDataset(pool, plan.search, eval_transform(task.data), "search")
    require_role(search_set, "search", "tracking subnets during training")

    loader_workers = task.data["loader_workers"]
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=tr["seed"], drop_last=True)
    loader = DataLoader(
        train_set,
        batch_size=tr["batch_size"] // world,
        sampler=sampler,
        drop_last=True,
        num_workers=loader_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=loader_workers > 0,
    )
    loader = ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)
    search_loader = DataLoader(
        Subset(search_set, list(range(rank, len(search_set), world))),
        batch_size=tr["eval_batch_size"],
        num_workers=loader_workers,
    )
    steps_per_epoch = len(loader)

    torch.manual_seed(tr["seed"])
    model = Supernet(space, sharing=task.model["sharing"], **{k: task.model[k] for k in ("drop_rate", "attn_drop_rate", "drop_path_rate")})
    model.to(device)
    optimizer = build_optimizer(model, tr)
    scheduler = build_scheduler(optimizer, tr, steps_per_epoch)
    mixup = build_mixup(tr, space.num_classes)
    loss_fn = build_loss(tr, mixup)

    checkpoint = _resume_checkpoint(config.get("newest_checkpoint"))
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = read_checkpoint(Path(d), model, optimizer, scheduler, device)
        if state["attempt"] == config["attempt"]:
            state["restarts"] += 1  # same fit() call: Ray restarted the workers after a failure
        else:
            state["resumes"] += 1  # a new fit() call on the same run: the command was run again
            state["attempt"] = config["attempt"]
            state["task"] = task.to_dict()  # the driver allowed only resumable changes (e.g. more epochs)
        if rank == 0:
            say(f"[train] continuing from epoch {state['epoch']} (restarts {state['restarts']}, resumes {state['resumes']})")
    else:
        state = {
            "epoch": 0,
            "global_step": 0,
            "restarts": 0,
            "resumes": 0,
            "attempt": config["attempt"],
            "history": [],
            "splits": plan.summary(len(own_test) if own_test is not None else None),
            "task": task.to_dict(),
            "space": space.to_dict(),
            "workers": world,
        }
    net = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    subnets = tracked_subnets(space, tr["seed"], tr["eval_subnets"])

    for epoch in range(state["epoch"], tr["epochs"]):
        if config.get("fail_at_epoch") == epoch and state["restarts"] == 0 and rank == world - 1:
            say(f"[train] fault injection: rank {rank} exits at the start of epoch {epoch}")
            os._exit(1)
        _seed_epoch(tr["seed"], epoch, rank)
        sampler.set_epoch(epoch)
        net.train()
        start = time.perf_counter()
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        for step, (images, labels) in enumerate(loader):
            arch = step_architecture(space, tr["seed"], epoch, step)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            targets = labels
            if mixup is not None:
                images, targets = mixup(images, labels)
            with autocast():
                loss = loss_fn(net(images, arch), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tr["clip_grad"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tr["clip_grad"])
            if tr["freeze_inactive"]:
                step_only_active(optimizer)
            else:
                optimizer.step()
            state["global_step"] += 1
            scheduler.step_update(state["global_step"])
            totals[0] += loss.detach().double() * images.shape[0]
            totals[1] += images.shape[0]
            if tr["log_every_steps"] and rank == 0 and (step + 1) % tr["log_every_steps"] == 0:
                say(f"[train] epoch {epoch + 1} step {step + 1}/{steps_per_epoch} loss {loss.item():.4f}")
        _all_reduce(totals)
        elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        train_time = float(elapsed.item())

        model.eval()
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": float(totals[0] / max(totals[1], 1)),
            "lr": float(optimizer.param_groups[0]["lr"]),
            "images_per_s": float(totals[1]) / train_time,
            "epoch_time_s": train_time,
        }
        for name, arch in subnets:
            scores = finish(_all_reduce(evaluate_sums(model, arch, search_loader, device, autocast())))
            metrics[f"search_top1/{name}"] = scores["top1"]
        state["epoch"] = epoch + 1
        state["history"].append(metrics)
        metrics.update(restarts=state["restarts"], resumes=state["resumes"])
        if rank == 0:
            sampled = [metrics[f"search_top1/{n}"] for n, _ in subnets[2:]]
            spread = f"  subnets {statistics.mean(sampled):.3f}" if sampled else ""
            say(
                f"[train] epoch {epoch + 1}/{tr['epochs']}  loss {metrics['train_loss']:.4f}  lr {metrics['lr']:.2e}  "
                f"{metrics['images_per_s']:.0f} img/s  search top-1: smallest {metrics['search_top1/smallest']:.3f}  "
                f"largest {metrics['search_top1/largest']:.3f}{spread}"
            )

        last = epoch + 1 == tr["epochs"]
        if last or (epoch + 1) % tr["checkpoint_every"] == 0:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt = None
                if rank == 0:
                    write_checkpoint(Path(tmp), model, optimizer, scheduler, state)
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report(metrics, checkpoint=ckpt)
        # Between checkpoints nothing is reported to Ray: its controller takes reports on a ~2 s tick through a
        # one-slot queue, so a report every (short) epoch would stall training. The console line and the
        # run's own history (in every checkpoint and in the export) carry the per-epoch metrics.
