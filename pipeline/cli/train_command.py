"""``autoformer train TASK``: train a weight-entangled (or classical) supernet with Ray Train."""

from __future__ import annotations

import argparse
import sys
import time

from pipeline.cli.format import add_set_option
from pipeline.core.task import builtin_task_names, load_task


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a supernet on a task (Ray Train; re-running the same command resumes)",
        description="Train a supernet, sampling one subnet uniformly per step. Re-running the same command "
        "(same --storage and --name) resumes from the last checkpoint.",
    )
    p.add_argument("task", metavar="TASK", help=f"built-in task ({', '.join(builtin_task_names())}) or a .yaml file")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP ranks), default 1")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL, bf16 autocast)")
    p.add_argument(
        "--storage", default=None, help="run storage: a local directory (default ./runs) or s3://, gs:// URI"
    )
    p.add_argument("--name", default=None, help="run name (default TASK-supernet)")
    p.add_argument(
        "--cpus-per-worker", type=float, default=None, help="CPUs reserved per worker (default: a fair share)"
    )
    add_set_option(p, "train.epochs=50")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    # CLI start-up: Ray and torch load only for the commands that use them
    from ray.train import TrainingFailedError

    from pipeline.training.launch import train_supernet

    task = load_task(args.task, args.overrides)
    start = time.perf_counter()
    try:
        outcome = train_supernet(
            task,
            workers=args.workers,
            gpu=args.gpu,
            storage=args.storage,
            name=args.name,
            cpus_per_worker=args.cpus_per_worker,
        )
    except TrainingFailedError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"autoformer: error: training failed after train.max_failures={task.train['max_failures']} restarts "
            f"({first}); the workers' errors are above. Re-running the same command resumes from the last checkpoint.",
            file=sys.stderr,
        )
        return 1
    m = outcome.metrics
    print(f"[train] done in {time.perf_counter() - start:.1f} s; run {outcome.run_path}")
    print(
        f"[train] epoch {m.get('epoch')}: search top-1 smallest {m.get('search_top1/smallest', float('nan')):.4f}, "
        f"largest {m.get('search_top1/largest', float('nan')):.4f}; restarts {outcome.restarts}, resumes {outcome.resumes}"
    )
    print(f"[train] supernet exported to {outcome.export_path}")
    return 0
