"""``autoformer retrain`` and ``autoformer finetune``: one architecture trained as a stand-alone model.

``retrain`` trains a found (or any) architecture from scratch with the task's ``retrain`` recipe; ``finetune``
continues from a model directory's weights with the ``finetune`` recipe, on its own task or, with ``--task``,
on another dataset (transfer learning: a new head, the position embedding resampled to the new image size).
Both are Ray Train runs: re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pipeline.cli.format import add_set_option
from pipeline.cli.options import add_run_options, add_selection, recorded_task, select_architecture, training_failed
from pipeline.cli.run_spec import run_spec
from pipeline.core.task import builtin_task_names, load_task


def add_parsers(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "retrain",
        help="train one architecture from scratch as a stand-alone model (Ray Train; re-running resumes)",
        description="Train one architecture from scratch as the plain model the export writes, with the task's "
        "retrain recipe (--set retrain.KEY=VALUE). Writes <storage>/<name>/model with its search and test top-1. "
        "Re-running the same command resumes from the last checkpoint.",
    )
    r.add_argument("task", metavar="TASK", help=f"built-in task ({', '.join(builtin_task_names())}) or a .yaml file")
    add_selection(r, task_option=False, model_option=True)
    add_run_options(r, "TASK-retrain-KEY")
    r.set_defaults(func=cmd_retrain)

    f = sub.add_parser(
        "finetune",
        help="finetune a model directory, on its task or transferred to another (Ray Train; re-running resumes)",
        description="Continue training a model directory's weights (inherited from a supernet, or retrained) with "
        "the finetune recipe (default 40 epochs at a tenth of the training lr; --set finetune.KEY=VALUE). With "
        "--task naming another dataset this is transfer learning: a new head for its classes, the absolute position "
        "embedding resampled to its image size; another channel count is refused.",
    )
    f.add_argument("--model", required=True, metavar="DIR", help="the model directory to start from")
    f.add_argument("--task", default=None, help="task to finetune on (default: the one the model recorded)")
    add_set_option(f, "finetune.epochs=10")
    add_run_options(f, "TASK-finetune-KEY")
    f.set_defaults(func=cmd_finetune)


def _origin(args: argparse.Namespace, row: dict[str, Any]) -> dict[str, Any]:
    """Where the retrained architecture came from, as the model's metadata records it."""
    if args.arch_model is not None:
        return {"kind": "model", "path": str(Path(args.arch_model).resolve())}
    if args.candidates is not None:
        keep = ("key", "top1", "top5", "loss", "params", "macs", "generation", "origin")
        return {"kind": "search", "candidates": args.candidates, **{k: row[k] for k in keep if k in row}}
    if not Path(args.arch).exists():
        return {"kind": "published", "name": args.arch}
    return {"kind": "file", "path": str(Path(args.arch).resolve())}


def _report(phase: str, outcome: Any, start: float) -> None:
    search, test = outcome.scores["search"], outcome.scores["test"]
    print(f"[{phase}] done in {time.perf_counter() - start:.1f} s; run {outcome.run_path}")
    print(
        f"[{phase}] epoch {outcome.epochs}: search top-1 {search['top1']:.4f} ({search['count']} images), test top-1 "
        f"{test['top1']:.4f} ({test['count']} images); restarts {outcome.restarts}, resumes {outcome.resumes}"
    )
    print(f"[{phase}] model written to {outcome.model_path}")


def cmd_retrain(args: argparse.Namespace) -> int:
    # CLI start-up: Ray and torch load only for the commands that use them
    from pipeline.model.subnet_dir import read_config
    from pipeline.training.retrain import check_same_design

    task = load_task(args.task, args.overrides)
    arch, row = select_architecture(args)
    if args.arch_model is not None:
        where = f"model directory {args.arch_model!r}"
        check_same_design(read_config(args.arch_model)["fixed"], task, task.space().fixed_parts(), where)
    return _train(args, task, arch, "retrain", _origin(args, row))


def cmd_finetune(args: argparse.Namespace) -> int:
    from pipeline.model.subnet_dir import load_model

    model, config = load_model(args.model)
    metadata = config.get("metadata") or {}
    task = recorded_task(args, metadata.get("task"), f"model directory {args.model!r}")
    origin = {"kind": "model", "path": str(Path(args.model).resolve()), "source": metadata.get("source")}
    return _train(args, task, model.arch, "finetune", origin, init=model)


def _train(args: argparse.Namespace, task: Any, arch: Any, phase: str, origin: dict[str, Any], init: Any = None) -> int:
    """Run the phase on Ray Train with the command's run options and print what it wrote."""
    from ray.train import TrainingFailedError

    from pipeline.training.retrain import train_model

    run = run_spec(args)
    start = time.perf_counter()
    try:
        outcome = train_model(task, arch, phase=phase, origin=origin, init=init, run=run)
    except TrainingFailedError as exc:
        return training_failed(exc, task.recipe(phase).keeping.max_failures)
    _report(phase, outcome, start)
    return 0
