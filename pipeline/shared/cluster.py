"""Joining or starting the Ray cluster a phase runs on (the driver side of training and search)."""

from __future__ import annotations

import os

import ray

from pipeline.shared.errors import UserError
from pipeline.shared.progress import say


def connect(gpu: bool, phase: str) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (or the one already joined), else start a local Ray.

    With ``gpu``, a local machine without a GPU is a clear error; a cluster without GPU nodes yet is waited on
    (its autoscaler may add them), with a line saying so.
    """
    joining = bool(os.environ.get("RAY_ADDRESS")) or ray.is_initialized()
    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    if gpu and ray.cluster_resources().get("GPU", 0) < 1:
        if not joining:
            raise UserError(f"--gpu was given but this machine has no GPU; drop --gpu to {phase} on CPUs")
        say(f"[{phase}] no GPU in the cluster yet: waiting for the autoscaler to add GPU nodes")
