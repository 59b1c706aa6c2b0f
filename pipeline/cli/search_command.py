"""``autoformer search`` and ``autoformer run``: evolutionary search on a trained supernet, and the whole pipeline.

The search flags are shorthands for ``--set search.KEY=VALUE`` overrides (each flag's destination is its key):
the task validates them, and ``pipeline.run`` does the work; this module only turns flags into overrides, checks
its own flags (the evaluators), and prints the outcome.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

from pipeline.cli.format import add_set_option, si
from pipeline.cli.options import add_log_option, positive_float, positive_int
from pipeline.core.task import SEARCH_ALGORITHMS, SEARCH_OBJECTIVES, Task, builtin_task_names, load_task

if TYPE_CHECKING:  # CLI start-up: the search package (Ray) loads only for the commands that use it
    from pipeline.search.settings import EvaluatorResources

SEARCH_KEY = "search."  # the destination of a search flag: the key it sets (``--max-params`` -> search.max_params)


def _add_key_flag(g: argparse._ArgumentGroup, key: str, **kwargs: Any) -> None:
    """``--KEY-WITH-DASHES`` for the search section's ``key``; its value goes to the task as an override."""
    g.add_argument(f"--{key.replace('_', '-')}", dest=SEARCH_KEY + key, default=None, **kwargs)


def _add_search_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "search (defaults come from the task's search section; each flag is a --set search.KEY=VALUE)"
    )
    _add_key_flag(g, "algorithm", choices=SEARCH_ALGORITHMS, help="evolution (the paper) or the random baseline")
    _add_key_flag(
        g,
        "objective",
        choices=SEARCH_OBJECTIVES,
        help="constrained: best top-1 within the limits; pareto: the whole top-1/size front",
    )
    _add_key_flag(g, "min_params", metavar="N")
    _add_key_flag(g, "max_params", metavar="N")
    _add_key_flag(g, "max_macs", metavar="N", help="multiply-accumulates per image")
    _add_key_flag(
        g,
        "max_latency_ms",
        metavar="X",
        help="median ms per batch of search.latency_batch images, measured on the evaluators",
    )
    _add_key_flag(g, "population", metavar="N")
    _add_key_flag(g, "generations", metavar="N")
    _add_key_flag(g, "seed", metavar="N", help="search seed (default search.seed)")
    _add_key_flag(
        g,
        "latency_model",
        metavar="FILE",
        help="predict latency with this model ('autoformer latency build') instead of timing every candidate; "
        "the exported models are then measured on its device",
    )
    _add_key_flag(
        g,
        "rerank_top",
        metavar="K",
        help="after the search, fine-tune K candidates (the best, a pareto front, then the best's ties) from "
        "their inherited weights and pick on those scores (default 0: off)",
    )
    _add_key_flag(g, "rerank_steps", metavar="N", help="fine-tuning steps per re-ranked candidate (default 100)")
    g.add_argument(
        "--evaluators",
        type=positive_int,
        default=None,
        help="evaluator actors (default: one per GPU with --gpu, else CPUs - 1)",
    )
    g.add_argument("--cpus-per-evaluator", type=positive_float, default=1.0)
    g.add_argument("--gpu", action="store_true", help="one GPU per evaluator (and per training worker in 'run')")
    g.add_argument("--storage", default=None, help="a local directory (default ./runs) or an s3://, gs:// URI")
    add_log_option(g)
    add_set_option(g, "search.parents=5 or data.root=/data")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="evolutionary search over a trained supernet (Ray Tune + evaluator actors)",
        description="Search architectures with inherited supernet weights; writes candidates.parquet, pareto.parquet, "
        "pareto.png and the chosen models (scored once on the test split) under STORAGE/NAME.",
    )
    p.add_argument(
        "task",
        metavar="TASK",
        help=f"the task the supernet was trained on ({', '.join(builtin_task_names())} or a .yaml)",
    )
    p.add_argument("--supernet", required=True, help="the supernet directory 'autoformer train' exported (path or URI)")
    p.add_argument("--name", default=None, help="search run name (default TASK-search)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search (Tuner.restore)")
    _add_search_options(p)
    p.set_defaults(func=cmd_search)

    r = sub.add_parser(
        "run",
        help="the whole pipeline: train the supernet, search, export, print the front",
        description="Train (or reuse) the supernet, run the search (resuming one that was interrupted), export the chosen "
        "models and print the front. Re-running the same command continues where it stopped.",
    )
    r.add_argument(
        "task", metavar="TASK", nargs="?", default="digits", help="task (default: digits, the embedded data)"
    )
    r.add_argument("--workers", type=int, default=1, help="Ray Train workers for the supernet")
    _add_search_options(r)
    r.set_defaults(func=cmd_run)


def _task(args: argparse.Namespace) -> Task:
    """The task with the search flags applied after ``--set`` (a flag wins over a --set of its key)."""
    flags = [
        f"{dest}={value}" for dest, value in vars(args).items() if dest.startswith(SEARCH_KEY) and value is not None
    ]
    return load_task(args.task, [*args.overrides, *flags])


def _resources(args: argparse.Namespace) -> EvaluatorResources:
    """The evaluators' flags, already checked by their argparse types."""
    from pipeline.search.settings import EvaluatorResources

    return EvaluatorResources(count=args.evaluators, gpu=args.gpu, cpus=args.cpus_per_evaluator)


def front_table(front: list[dict]) -> str:
    """The front as aligned text, smallest first: rank by top-1, size, latency, search top-1 with its 95 %
    interval, the re-ranked top-1 (a re-ranked search), and test top-1."""
    reranked = any("rerank" in r for r in front)
    extra = f"  {'re-ranked':>9}" if reranked else ""
    header = (
        f"{'rank':>4}  {'params':>7}  {'MACs':>7}  {'latency':>9}  {'search':>6} {'(95% interval)':>14}{extra}  "
        f"{'test':>6}  architecture"
    )
    lines = [header, "-" * len(header)]
    for r in sorted(front, key=lambda r: (r["params"], -r["top1"])):
        test = r.get("test_top1")
        test_text = f"{test:6.3f}" if test is not None and not math.isnan(test) else f"{'-':>6}"
        interval = f"[{r['top1_low']:.3f}, {r['top1_high']:.3f}]" if not math.isnan(r["top1_low"]) else "-"
        column = f"  {r['rerank']['top1']:9.3f}" if "rerank" in r else (f"  {'-':>9}" if reranked else "")
        lines.append(
            f"{r['rank']:>4}  {si(r['params']):>7}  {si(r['macs']):>7}  {r['latency_ms']:7.2f}ms  {r['top1']:6.3f} "
            f"{interval:>14}{column}  {test_text}  {r['key']}"
        )
    if any(r.get("on_params_front") is False for r in front):
        lines.append("(test -: on the MACs front only; the parameter front's models are exported and scored on test)")
    if reranked:
        steps = next(r["rerank"]["steps"] for r in front if "rerank" in r)
        lines.append(
            f"(search: inherited weights; re-ranked: after {steps} fine-tuning steps, what the ranks and picks use)"
        )
    return "\n".join(lines)


def print_report(searched) -> None:
    report, constraints = searched.report, searched.outcome.settings.constraints
    print(front_table(report.front))
    if report.best is not None:
        b = report.best
        limits = ", ".join(f"{k} {v:,}" for k, v in constraints.to_dict().items() if v is not None) or "no constraints"
        test = f", test top-1 {b['test_top1']:.4f}" if b.get("test_top1") is not None else ""
        scored = f"search top-1 {b['top1']:.4f} [{b['top1_low']:.4f}, {b['top1_high']:.4f}] on {b['images']:,} images"
        if "rerank" in b:
            rr = b["rerank"]
            scored = (
                f"re-ranked search top-1 {rr['top1']:.4f} [{rr['top1_low']:.4f}, {rr['top1_high']:.4f}] after "
                f"{rr['steps']} steps (inherited {b['top1']:.4f}) on {rr['images']:,} images"
            )
        print(f"best within {limits}: {b['key']} ({b['params']:,} params): {scored}{test}")
        if report.tied:
            names = ", ".join(f"{r['key']} ({si(r['params'])}, {r['top1']:.3f})" for r in report.tied[:5])
            more = f" and {len(report.tied) - 5} more" if len(report.tied) > 5 else ""
            print(
                f"statistically tied with it (paired on the same images, McNemar's exact test p >= 0.05): {len(report.tied)} "
                f"candidate(s), smallest first: {names}{more}; candidates.parquet marks them (tied_with_best)"
            )
        else:
            print("no other candidate is statistically tied with it (McNemar's exact test on the same images)")
    else:
        print("no candidate satisfied the constraints")
    for f in report.files:
        print(f"wrote {f}")
    print(f"models in {report.run_path}/models/")


def cmd_search(args: argparse.Namespace) -> int:
    # CLI start-up: Ray and torch load only for the commands that use them
    from pipeline.run import search_supernet
    from pipeline.search.experiment import SearchInterrupted

    task = _task(args)
    try:
        searched = search_supernet(
            task,
            args.supernet,
            _resources(args),
            storage=args.storage,
            name=args.name,
            resume=args.resume,
            log=args.log,
        )
    except SearchInterrupted as exc:
        print(f"autoformer: {exc.summary}: run the same command again with --resume to continue", file=sys.stderr)
        raise
    print_report(searched)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # CLI start-up: Ray and torch load only for the commands that use them
    from pipeline.run import run_pipeline
    from pipeline.search.experiment import SearchInterrupted

    task = _task(args)
    try:
        run = run_pipeline(task, workers=args.workers, resources=_resources(args), storage=args.storage, log=args.log)
    except SearchInterrupted as exc:
        print(f"autoformer: {exc.summary}: run the same command again to continue", file=sys.stderr)
        raise
    print_report(run.search)
    return 0
