"""``autoformer train TASK``: train a weight-entangled (or classical) supernet with Ray Train."""

from __future__ import annotations

import argparse
import time

from pipeline.cli.format import add_set_option
from pipeline.cli.options import add_run_options, training_failed
from pipeline.cli.run_spec import run_spec
from pipeline.core.task import builtin_task_names, load_task


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a supernet on a task (Ray Train; re-running the same command resumes)",
        description="Train a supernet, sampling one subnet uniformly per step. Re-running the same command "
        "(same --storage and --name) resumes from the last checkpoint.",
    )
    p.add_argument("task", metavar="TASK", help=f"built-in task ({', '.join(builtin_task_names())}) or a .yaml file")
    add_run_options(p, "TASK-supernet")
    add_set_option(p, "train.epochs=50")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    # CLI start-up: Ray and torch load only for the commands that use them
    from ray.train import TrainingFailedError

    from pipeline.training.launch import train_supernet

    task = load_task(args.task, args.overrides)
    run = run_spec(args)
    start = time.perf_counter()
    try:
        outcome = train_supernet(task, run)
    except TrainingFailedError as exc:
        return training_failed(exc, task.train.keeping.max_failures)
    m = outcome.metrics
    print(f"[train] done in {time.perf_counter() - start:.1f} s; run {outcome.run_path}")
    print(
        f"[train] epoch {m.get('epoch')}: search top-1 smallest {m.get('search_top1/smallest', float('nan')):.4f}, "
        f"largest {m.get('search_top1/largest', float('nan')):.4f}; restarts {outcome.restarts}, resumes {outcome.resumes}"
    )
    print(f"[train] supernet exported to {outcome.export_path}")
    return 0
