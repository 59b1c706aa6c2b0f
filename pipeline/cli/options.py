"""Options several commands share: which architecture (``--arch`` / ``--candidates`` with ``--row`` or
``--key`` / ``--model``), which task (the one recorded, or ``--task``), and where a Ray Train run goes."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.cli.format import add_set_option
from pipeline.core.arch import Architecture
from pipeline.core.published import load_published, published_names
from pipeline.core.task import Task, load_task
from pipeline.shared.errors import UserError
from pipeline.shared.storage import is_uri, join
from pipeline.shared.tracking import BACKENDS


def add_selection(p: argparse.ArgumentParser, task_option: bool = True, model_option: bool = False) -> None:
    g = p.add_argument_group("which architecture")
    g.add_argument(
        "--arch", default=None, metavar="FILE", help="architecture JSON file, or a published one (autoformer-t/s/b)"
    )
    g.add_argument(
        "--candidates", default=None, metavar="PATH", help="a search run directory or its candidates.parquet"
    )
    g.add_argument("--row", type=int, default=None, help="row of candidates.parquet (0-based)")
    g.add_argument("--key", default=None, help="architecture key in candidates.parquet, e.g. e64-d3-h4,4,2-r2,2,2")
    if model_option:
        g.add_argument(
            "--model", dest="arch_model", default=None, metavar="DIR", help="the architecture of this model directory"
        )
    if task_option:
        p.add_argument(
            "--task", default=None, help="task to take data and normalisation from (default: the one recorded)"
        )
    add_set_option(p, "data.root=/data")


def select_architecture(args: argparse.Namespace) -> tuple[Architecture, dict[str, Any]]:
    """The chosen architecture and where it came from: a search row (scores, generation, ...) or nothing."""
    model = getattr(args, "arch_model", None)
    given = [x for x in (args.arch, args.candidates, model) if x is not None]
    if len(given) != 1:
        sources = "--arch FILE, --candidates PATH (with --row N or --key KEY)" + (
            " or --model DIR" if hasattr(args, "arch_model") else ""
        )
        raise UserError(f"give exactly one of {sources}")
    if model is not None:
        from pipeline.model.subnet_dir import read_config  # CLI start-up: torch loads only when needed

        return read_config(model)["architecture"], {}
    if args.arch is not None:
        if not Path(args.arch).exists() and args.arch in published_names():
            return load_published(args.arch).architecture, {}
        return Architecture.load(args.arch), {}
    if (args.row is None) == (args.key is None):
        raise UserError("--candidates needs exactly one of --row N or --key KEY")
    from pipeline.results.tables import CANDIDATES_FILE, read_table  # CLI start-up: pyarrow loads only when needed

    source = args.candidates
    if not source.endswith(".parquet"):
        source = join(source, CANDIDATES_FILE)
    if not is_uri(source) and not Path(source).is_file():
        raise UserError(f"--candidates: {source!r} does not exist")
    rows = read_table(source, "--candidates").to_pylist()
    if args.row is not None:
        if not 0 <= args.row < len(rows):
            raise UserError(f"--row {args.row}: {source} has rows 0..{len(rows) - 1}")
        row = rows[args.row]
    else:
        matches = [r for r in rows if r["key"] == args.key]
        if not matches:
            raise UserError(f"--key {args.key!r} is not in {source}")
        row = matches[0]
    return Architecture.from_json(row["architecture"], source=f"{source} row {row['key']}"), row


def recorded_task(args: argparse.Namespace, recorded: dict[str, Any] | None, where: str) -> Task:
    """``--task`` (with ``--set``) when given, else the task ``where`` recorded (with ``--set``)."""
    if args.task is not None:
        return load_task(args.task, args.overrides)
    if not recorded:
        raise UserError(f"{where} records no task; pass --task")
    return Task.from_dict(recorded).with_overrides(args.overrides)


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type`` for an integer flag of at least ``low``: a bad value is argparse's usual one line
    naming the flag (``argument --evaluators: ...``, exit 2), before anything starts."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, not {text!r}")
        return value

    return parse


positive_int = int_at_least(1)


def positive_float(text: str) -> float:
    """An argparse ``type`` for a number flag above 0 (CPUs per evaluator), refused like ``int_at_least``."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text!r}")
    return value


def add_log_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--log BACKEND`` (repeatable): the experiment trackers a run also logs to, collected in ``args.log``."""
    p.add_argument(
        "--log",
        action="append",
        default=[],
        choices=BACKENDS,
        metavar="BACKEND",
        help=f"also log metrics to an experiment tracker: {', '.join(BACKENDS)} (repeatable; MLFLOW_TRACKING_URI, "
        f"WANDB_PROJECT and WANDB_MODE are honoured)",
    )


def add_run_options(p: argparse.ArgumentParser, default_name: str) -> None:
    """Where and how a Ray Train run goes: workers, GPU, storage, run name, CPUs per worker, trackers."""
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP ranks), default 1")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL, bf16 autocast)")
    p.add_argument(
        "--storage", default=None, help="run storage: a local directory (default ./runs) or s3://, gs:// URI"
    )
    p.add_argument("--name", default=None, help=f"run name (default {default_name})")
    p.add_argument(
        "--cpus-per-worker", type=float, default=None, help="CPUs reserved per worker (default: a fair share)"
    )
    add_log_option(p)


def training_failed(exc: Exception, max_failures: int) -> int:
    """The one line a failed Ray Train run ends with (the workers' tracebacks are printed above it)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(
        f"autoformer: error: training failed after train.max_failures={max_failures} restarts ({first}); the "
        f"workers' errors are above. Re-running the same command resumes from the last checkpoint.",
        file=sys.stderr,
    )
    return 1
