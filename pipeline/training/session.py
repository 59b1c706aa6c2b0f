"""Where a training loop runs: a Ray Train worker (one DDP rank of ``autoformer train``/``retrain``/``finetune``)
or a Ray Tune trial (one stand-alone model of ``autoformer fidelity``, many side by side).

The loop itself (``worker.run_training``) is the same; only these few calls differ: which rank it is and on
what device, how the model and loader are wrapped for DDP, how a result and checkpoint are reported, and
where the checkpoint to resume from comes from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ray.train
import ray.train.torch
import ray.tune
import torch
from torch.utils.data import DataLoader


@dataclasses.dataclass
class Session:
    rank: int
    world: int
    device: torch.device
    prepare_model: Callable[[torch.nn.Module, bool], torch.nn.Module]  # (model, find_unused_parameters)
    prepare_loader: Callable[[DataLoader], DataLoader]
    report: Callable[[dict[str, Any], str | None], None]  # (metrics, checkpoint directory on rank 0 or None)
    checkpoint: Callable[[], Any]  # the framework's checkpoint to resume from, or None
    # Ray's notice that a node of the run is about to go (a spot reclaim: the node drains), or None; every rank
    # must call it together (Ray Train agrees one answer). A Tune trial has none.
    preemption: Callable[[], Any] | None = None


def train_session() -> Session:
    """One rank of a Ray Train run (DDP over gloo on CPUs, NCCL on GPUs)."""
    ctx = ray.train.get_context()

    def report(metrics: dict[str, Any], directory: str | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(directory) if directory else None
        ray.train.report(metrics, checkpoint=checkpoint)

    return Session(
        rank=ctx.get_world_rank(),
        world=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        prepare_model=lambda model, unused: ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": unused}
        ),
        # The loop moves each batch itself (pinned memory, non-blocking): Ray's device wrapper fetches a batch
        # ahead, which would draw the next batch's augmentation before a step's random state is checkpointed.
        prepare_loader=lambda loader: ray.train.torch.prepare_data_loader(
            loader, add_dist_sampler=False, move_to_device=False
        ),
        report=report,
        checkpoint=ray.train.get_checkpoint,
        preemption=ray.train.get_preemption_info,
    )


def tune_session(gpu: bool) -> Session:
    """A Ray Tune trial: one process, no DDP; the trial's checkpoints make the experiment resumable."""

    def report(metrics: dict[str, Any], directory: str | None) -> None:
        checkpoint = ray.tune.Checkpoint.from_directory(directory) if directory else None
        ray.tune.report(metrics, checkpoint=checkpoint)

    device = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
    return Session(
        rank=0,
        world=1,
        device=device,
        prepare_model=lambda model, unused: model.to(device),
        prepare_loader=lambda loader: loader,
        report=report,
        checkpoint=ray.tune.get_checkpoint,
    )
