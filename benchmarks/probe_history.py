"""The convergence probe's history of supernet runs (their probe.parquet): tau against the previous evaluation
and the spread per evaluation, and the epoch at which stop rules [tau, n] would have fired.

    python benchmarks/probe_history.py RUNS/cifar-entangled RUNS/cifar-entangled-75
"""

from __future__ import annotations

import argparse
import math

import pyarrow.parquet as pq

RULES = ((0.8, 2), (0.8, 3), (0.9, 2), (0.9, 3))


def history(run: str) -> list[tuple[int, float, float]]:
    """(epoch, tau, spread) per probe evaluation."""
    rows = pq.read_table(f"{run}/probe.parquet", columns=["epoch", "tau", "spread"]).to_pylist()
    seen = {}
    for r in rows:
        seen.setdefault(r["epoch"], (r["epoch"], r["tau"], r["spread"]))
    return [seen[e] for e in sorted(seen)]


def fired(evaluations: list[tuple[int, float, float]], tau: float, n: int) -> int | None:
    """The epoch at which ``n`` evaluations in a row held tau >= ``tau``, or None."""
    streak = 0
    for epoch, value, _ in evaluations:
        streak = streak + 1 if not math.isnan(value) and value >= tau else 0
        if streak >= n:
            return epoch
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="supernet training runs (directories holding probe.parquet)")
    args = parser.parse_args()
    for run in args.runs:
        evaluations = history(run)
        print(f"{run}: {len(evaluations)} probe evaluations")
        print("| epoch | tau vs previous | spread |\n| --- | --- | --- |")
        for epoch, tau, spread in evaluations:
            print(
                f"| {epoch} | {'-' if math.isnan(tau) else f'{tau:.2f}'} | {'-' if math.isnan(spread) else f'{spread:.1f}'} |"
            )
        rules = ", ".join(f"[{t}, {n}]: {fired(evaluations, t, n) or 'never'}" for t, n in RULES)
        print(f"stop rules fire at epoch: {rules}\n")


if __name__ == "__main__":
    main()
