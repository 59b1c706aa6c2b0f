"""Evolution vs random search at the same budget on the same trained supernet, under the same constraint.

    python benchmarks/evolution_vs_random.py --supernet runs/digits-supernet/supernet [--task digits]
        [--max-params 60000] [--population 50] [--generations 10] [--seeds 0 1 2]

Prints, per seed, the best search top-1 within the constraint that each algorithm found, and how many
evaluations it took to get there; then the mean over seeds. Needs a trained supernet (``autoformer run`` or
``autoformer train`` makes one).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.task import load_task  # noqa: E402
from pipeline.search.launch import run_search  # noqa: E402
from pipeline.search.settings import EvaluatorResources, SearchSettings  # noqa: E402


def best_and_when(records: list[dict]) -> tuple[float, int]:
    """Best top-1 within the constraints, and the evaluation count (in proposal order) at which it was first reached."""
    ordered = sorted(records, key=lambda r: (r["generation"], r["trial_id"]))
    best, when = -1.0, 0
    for i, r in enumerate(ordered, 1):
        if r["status"] == "ok" and r["top1"] > best:
            best, when = r["top1"], i
    return best, when


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--supernet", default="runs/digits-supernet/supernet")
    parser.add_argument("--task", default="digits")
    parser.add_argument("--max-params", type=int, default=60_000)
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    task = load_task(args.task)
    storage = Path(tempfile.mkdtemp(prefix="evo-vs-random-"))
    results: dict[str, list[float]] = {"evolution": [], "random": []}
    try:
        for seed in args.seeds:
            line = []
            for algorithm in ("evolution", "random"):
                settings = SearchSettings.from_task(
                    task.with_overrides(
                        [
                            f"search.algorithm={algorithm}",
                            "search.objective=constrained",
                            f"search.population={args.population}",
                            f"search.generations={args.generations}",
                            f"search.parents={max(2, args.population // 5)}",
                            f"search.mutations={args.population // 2}",
                            f"search.crossovers={args.population // 2}",
                            f"search.seed={seed}",
                            "search.min_params=null",
                            f"search.max_params={args.max_params}",
                            "search.max_macs=null",
                            "search.max_latency_ms=null",
                            "search.batch_size=512",
                            "search.latency_batch=64",
                            "search.latency_repeats=1",
                            "search.latency_model=null",
                        ]
                    )
                )
                outcome = run_search(
                    task,
                    args.supernet,
                    settings,
                    EvaluatorResources(count=1, cpus=1.0),
                    storage=str(storage),
                    name=f"{algorithm}-{seed}",
                )
                best, when = best_and_when(outcome.records)
                results[algorithm].append(best)
                line.append(f"{algorithm} {best:.4f} (reached at evaluation {when} of {len(outcome.records)})")
            print(f"seed {seed}: " + ";  ".join(line), flush=True)
        ev, rnd = statistics.mean(results["evolution"]), statistics.mean(results["random"])
        print(
            f"mean best search top-1 within max_params {args.max_params:,}: evolution {ev:.4f}, random {rnd:.4f} "
            f"(difference {100 * (ev - rnd):+.2f} points, budget {args.population * args.generations} evaluations each)"
        )
    finally:
        shutil.rmtree(storage, ignore_errors=True)


if __name__ == "__main__":
    main()
