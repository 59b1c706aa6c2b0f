"""The run options of the commands that train (``--workers``, ``--gpu``, ``--storage``, ``--name``,
``--cpus-per-worker``, ``--log``) as the training layer's ``RunSpec``: the flags are checked here, in the
flags' words, and the library never speaks of flags."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.shared.errors import UserError


def run_spec(args: argparse.Namespace) -> Any:
    """The command's run options as a ``RunSpec`` (``add_run_options`` declares them)."""
    from pipeline.training.run_spec import RunSpec  # CLI start-up: the training layer loads only when it runs

    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be at least 1")
    if args.cpus_per_worker is not None and args.cpus_per_worker <= 0:
        raise UserError(f"--cpus-per-worker {args.cpus_per_worker}: must be positive")
    return RunSpec(
        workers=args.workers,
        gpu=args.gpu,
        storage=args.storage,
        name=args.name,
        cpus_per_worker=args.cpus_per_worker,
        log=tuple(args.log or ()),
    )
