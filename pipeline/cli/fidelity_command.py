"""``autoformer fidelity``: does the supernet rank architectures the way stand-alone training does?"""

from __future__ import annotations

import argparse

from pipeline.cli.format import add_set_option, si
from pipeline.cli.options import positive_int
from pipeline.shared.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fidelity",
        help="inherited against stand-alone top-1 over architectures spread across the space (Ray Tune; resumable)",
        description="Pick architectures spread over the supernet's size range (and a search's front with "
        "--candidates), score each with inherited weights, train each from scratch with the task's retrain recipe "
        "(--set retrain.KEY=VALUE) as parallel Ray Tune trials, and report Kendall tau and Spearman rho between "
        "inherited and stand-alone search top-1 with bootstrap 95%% intervals. Writes fidelity.parquet, "
        "fidelity.json and fidelity.png. Re-running the same command continues the unfinished trials.",
    )
    p.add_argument("--supernet", required=True, help="supernet directory (path or URI) from 'autoformer train'")
    p.add_argument(
        "--archs", type=positive_int, default=None, help="architectures spread over the size range (default 16)"
    )
    p.add_argument(
        "--candidates",
        default=None,
        metavar="RUN",
        help="also the Pareto front of this search run (its pareto.parquet)",
    )
    p.add_argument(
        "--standalone",
        default=None,
        metavar="RUN",
        help="reuse the architectures and stand-alone scores of this finished fidelity run (same task, splits and "
        "retrain recipe): only this supernet's inherited scores are computed, to compare supernets on one ground truth",
    )
    p.add_argument(
        "--storage", default=None, help="run storage: a local directory (default ./runs) or s3://, gs:// URI"
    )
    p.add_argument("--name", default=None, help="run name (default TASK-fidelity)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per stand-alone training (default 1)")
    p.add_argument("--gpu", action="store_true", help="one GPU per trial")
    p.add_argument("--seed", type=int, default=0, help="seed of the architecture picks and the bootstrap")
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="stand-alone trainings per architecture (default 1); 2 also reports the ceiling: the two trainings' "
        "Kendall tau against each other",
    )
    p.add_argument(
        "--rerank-steps",
        type=positive_int,
        nargs="+",
        default=[],
        metavar="N",
        help="also score each architecture after N fine-tuning steps from its inherited weights (the finetune "
        "recipe; what 'search --rerank-top' does), one column and one tau per N, e.g. --rerank-steps 50 100 200",
    )
    add_set_option(p, "retrain.epochs=30")
    p.set_defaults(func=cmd_fidelity)


def print_rows(rows: list[dict], rerank_steps: list[int]) -> None:
    """One line per architecture: inherited, re-ranked after each step count, stand-alone (each seed), test."""
    seeds = max((len(r["standalone_search_top1_by_seed"] or []) for r in rows), default=1)
    others = "".join(f"  {f's-a seed {i + 1}':>10}" for i in range(1, seeds))
    reranked = "".join(f"  {f'rr {n}':>8}" for n in rerank_steps)
    print(
        f"{'params':>8} {'picked':>8}  {'inherited':>9}{reranked}  {'stand-alone':>11}{others}  {'test inh.':>9}  "
        f"{'test s-a':>8}  key"
    )
    for r in rows:
        again = "".join(f"  {v:>10.4f}" for v in (r["standalone_search_top1_by_seed"] or [])[1:])
        scores = list(r["rerank_search_top1"] or [])
        tuned = "".join(f"  {scores[i]:>8.4f}" if i < len(scores) else f"  {'-':>8}" for i in range(len(rerank_steps)))
        print(
            f"{si(r['params']):>8} {r['picked']:>8}  {r['inherited_search_top1']:>9.4f}{tuned}  "
            f"{r['standalone_search_top1']:>11.4f}{again}  {r['inherited_test_top1']:>9.4f}  "
            f"{r['standalone_test_top1']:>8.4f}  {r['key']}"
        )


def cmd_fidelity(args: argparse.Namespace) -> int:
    from pipeline.fidelity.summary import describe  # CLI start-up: Ray and torch load only when needed
    from pipeline.run import fidelity_report

    if args.cpus_per_trial <= 0:
        raise UserError(f"--cpus-per-trial {args.cpus_per_trial}: must be positive")
    if args.standalone is not None and (args.archs is not None or args.candidates is not None):
        raise UserError("--standalone takes its run's architectures: leave out --archs and --candidates")
    if args.standalone is not None and args.seeds != 1:
        raise UserError("--standalone takes its run's stand-alone trainings, with their seeds: leave out --seeds")
    if args.standalone is not None and args.rerank_steps:
        raise UserError("--rerank-steps fine-tunes in the experiment's trials: leave out --standalone")
    run = fidelity_report(
        args.supernet,
        archs=args.archs,
        candidates=args.candidates,
        storage=args.storage,
        name=args.name,
        overrides=args.overrides,
        cpus_per_trial=args.cpus_per_trial,
        gpu=args.gpu,
        seed=args.seed,
        standalone=args.standalone,
        seeds=args.seeds,
        rerank_steps=args.rerank_steps,
    )
    print_rows(run.rows, args.rerank_steps)
    print(f"[fidelity] {describe(run.summary)}")
    print(f"[fidelity] done in {run.wall_s:.1f} s; fidelity.parquet, fidelity.json and fidelity.png in {run.run_path}")
    if run.summary["architectures"] < run.summary["planned"]:
        print(
            f"[fidelity] {run.summary['architectures']} of {run.summary['planned']} architectures finished; the same "
            f"command continues the others from their checkpoints"
        )
        for failure in run.summary.get("failed", []):
            print(f"[fidelity]   {failure}")
        return 1
    return 0
