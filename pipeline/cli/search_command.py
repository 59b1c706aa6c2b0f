"""``autoformer search`` and ``autoformer run``: evolutionary search on a trained supernet, and the whole pipeline."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from pipeline.cli.format import si
from pipeline.task import Task, builtin_task_names, load_task


def _add_search_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search (defaults come from the task's search section)")
    g.add_argument("--algorithm", choices=("evolution", "random"), default=None, help="evolution (the paper) or the random baseline")
    g.add_argument("--objective", choices=("constrained", "pareto"), default=None,
                   help="constrained: best top-1 within the limits; pareto: the whole top-1/size front")
    g.add_argument("--min-params", type=int, default=None, metavar="N")
    g.add_argument("--max-params", type=int, default=None, metavar="N")
    g.add_argument("--max-macs", type=int, default=None, metavar="N", help="multiply-accumulates per image")
    g.add_argument("--max-latency-ms", type=float, default=None, metavar="X",
                   help="median ms per batch of search.latency_batch images, measured on the evaluators")
    g.add_argument("--population", type=int, default=None)
    g.add_argument("--generations", type=int, default=None)
    g.add_argument("--seed", type=int, default=None, help="search seed (default search.seed)")
    g.add_argument("--evaluators", type=int, default=None, help="evaluator actors (default: one per GPU with --gpu, else CPUs - 1)")
    g.add_argument("--cpus-per-evaluator", type=float, default=1.0)
    g.add_argument("--gpu", action="store_true", help="one GPU per evaluator (and per training worker in 'run')")
    g.add_argument("--storage", default=None, help="a local directory (default ./runs) or an s3://, gs:// URI")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a task value, e.g. search.parents=5 or data.root=/data (repeatable)")
    g.add_argument("--inject-evaluator-failure-after", type=int, default=None, metavar="N",
                   help="testing fault tolerance: the first evaluator dies when handed its (N+1)-th candidate")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="evolutionary search over a trained supernet (Ray Tune + evaluator actors)",
        description="Search architectures with inherited supernet weights; writes candidates.parquet, pareto.parquet, "
        "pareto.png and the chosen models (scored once on the test split) under STORAGE/NAME.",
    )
    p.add_argument("task", metavar="TASK", help=f"the task the supernet was trained on ({', '.join(builtin_task_names())} or a .yaml)")
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
    r.add_argument("task", metavar="TASK", nargs="?", default="digits", help="task (default: digits, the embedded data)")
    r.add_argument("--workers", type=int, default=1, help="Ray Train workers for the supernet")
    _add_search_options(r)
    r.set_defaults(func=cmd_run)


def search_inputs(task: Task, args: argparse.Namespace):
    from pipeline.search.constraints import Constraints
    from pipeline.search.evolution import Settings
    from pipeline.search.launch import EvaluatorSettings

    s = dict(task.search)
    for key in ("algorithm", "objective", "min_params", "max_params", "max_macs", "max_latency_ms", "population", "generations", "seed"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    settings = Settings(
        algorithm=s["algorithm"], objective=s["objective"], population=s["population"], generations=s["generations"],
        parents=min(s["parents"], s["population"]), mutations=min(s["mutations"], s["population"] // 2),
        crossovers=min(s["crossovers"], s["population"] - min(s["mutations"], s["population"] // 2)),
        depth_prob=s["depth_prob"], gene_prob=s["gene_prob"], pareto_costs=tuple(s["pareto_costs"]), seed=s["seed"],
    )
    constraints = Constraints(s["min_params"], s["max_params"], s["max_macs"], s["max_latency_ms"])
    evaluators = EvaluatorSettings(
        count=args.evaluators, gpu=args.gpu, cpus=args.cpus_per_evaluator, batch_size=s["batch_size"],
        latency_batch=s["latency_batch"], latency_repeats=s["latency_repeats"], die_after=args.inject_evaluator_failure_after,
    )
    return settings, constraints, evaluators


def _search_and_report(task: Task, supernet: str, args: argparse.Namespace, name: str | None, resume: bool) -> int:
    from pipeline.results.report import write_report
    from pipeline.search.launch import run_search

    settings, constraints, evaluators = search_inputs(task, args)
    start = time.perf_counter()
    outcome = run_search(task, supernet, settings, constraints, evaluators, storage=args.storage, name=name, resume=resume)
    search_s = time.perf_counter() - start
    evaluated = len(outcome.records)
    compute = sum(r["eval_s"] for r in outcome.records if not math.isnan(r["eval_s"]))
    print(
        f"[search] done: {evaluated} candidates in {search_s:.1f} s ({evaluated / max(search_s, 1e-9):.1f}/s; "
        f"evaluation compute {compute:.1f} s on {len(outcome.evaluators)} evaluator(s)"
        + (f"; {outcome.replaced_evaluators} evaluator(s) replaced" if outcome.replaced_evaluators else "") + ")"
    )
    start = time.perf_counter()
    report = write_report(outcome, task, supernet, gpu=args.gpu)
    print(f"[export] done in {time.perf_counter() - start:.1f} s")
    print(front_table(report.front))
    if report.best is not None:
        b = report.best
        limits = ", ".join(f"{k} {v:,}" for k, v in constraints.to_dict().items() if v is not None) or "no constraints"
        test = f", test top-1 {b['test_top1']:.4f}" if b.get("test_top1") is not None else ""
        print(f"best within {limits}: {b['key']} ({b['params']:,} params): search top-1 {b['top1']:.4f}{test}")
    else:
        print("no candidate satisfied the constraints")
    for f in report.files:
        print(f"wrote {f}")
    print(f"models in {report.run_path}/models/")
    return 0


def front_table(front: list[dict[str, Any]]) -> str:
    """The front as aligned text, smallest first: rank by top-1, size, latency, search and test top-1."""
    header = f"{'rank':>4}  {'params':>7}  {'MACs':>7}  {'latency':>9}  {'search':>6}  {'test':>6}  architecture"
    lines = [header, "-" * len(header)]
    for r in sorted(front, key=lambda r: (r["params"], -r["top1"])):
        test = r.get("test_top1")
        test_text = f"{test:6.3f}" if test is not None and not math.isnan(test) else f"{'-':>6}"
        lines.append(
            f"{r['rank']:>4}  {si(r['params']):>7}  {si(r['macs']):>7}  {r['latency_ms']:7.2f}ms  {r['top1']:6.3f}  {test_text}  {r['key']}"
        )
    return "\n".join(lines)


def cmd_search(args: argparse.Namespace) -> int:
    task = load_task(args.task, args.overrides)
    return _search_and_report(task, args.supernet, args, args.name, args.resume)


def cmd_run(args: argparse.Namespace) -> int:
    from ray import tune

    from pipeline.model.supernet_io import read_supernet_config
    from pipeline.training.launch import EXPORT_DIR, resolve_storage, train_supernet

    task = load_task(args.task, args.overrides)
    search_inputs(task, args)  # bad search settings fail before hours of training
    storage = resolve_storage(args.storage)
    train_name, search_name = f"{task.name}-supernet", f"{task.name}-search"
    supernet = f"{storage.rstrip('/')}/{train_name}/{EXPORT_DIR}"
    start = time.perf_counter()
    done = None
    if "://" not in supernet and (Path(supernet) / "config.json").is_file():
        done = read_supernet_config(supernet)
    if done is not None and done.get("epochs") == task.train["epochs"]:
        print(f"[run] phase 1/3: supernet already trained ({done['epochs']} epochs): {supernet}")
    else:
        print(f"[run] phase 1/3: training the supernet ({task.train['epochs']} epochs)")
        outcome = train_supernet(task, workers=args.workers, gpu=args.gpu, storage=storage, name=train_name)
        supernet = outcome.export_path
        print(f"[run] supernet trained in {time.perf_counter() - start:.1f} s: {supernet}")
    from pipeline.search.launch import saved_strategy

    search_path = f"{storage.rstrip('/')}/{search_name}"
    resume = tune.Tuner.can_restore(search_path)
    saved = saved_strategy(search_path) if resume else None
    state = "search" if not resume else "search already complete: collecting its results" if saved and saved.finished else "resuming the interrupted search"
    print(f"[run] phase 2/3: {state} (phase 3/3, export, follows)")
    code = _search_and_report(task, supernet, args, search_name, resume)
    print(f"[run] all phases done in {time.perf_counter() - start:.1f} s")
    return code


