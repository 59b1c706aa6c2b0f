"""The tables of docs/fidelity.md, made from the files ``benchmarks/fidelity_experiments.sh`` wrote.

    python benchmarks/fidelity_tables.py [--runs /work/bench-runs]

Prints Markdown: the supernets (final tracked top-1, wall time), evolution against random search per seed,
the best architecture under the limit per sharing mode (inherited against retrained), the Table 4 analogue
(inherited, finetuned, retrained for three architectures of the front) and the fidelity summary. A part whose
runs are missing or unfinished is printed as such, so the tables can be made at any point of the chain.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.shared.storage import write_bytes

SHARINGS = ("entangled", "classical", "classical_strict")


def _config(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _model_scores(run: Path) -> tuple[float, float] | None:
    config = _config(run / "model" / "config.json")
    if config is None:
        return None
    scores = config["metadata"]["scores"]
    return scores["search"]["top1"], scores["test"]["top1"]


def _times(runs: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    path = runs / "times.txt"
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, _, seconds, _ = line.split(" ")
        out[name] = out.get(name, 0) + int(seconds)
    return out


def _tau(runs: Path, name: str) -> str:
    """Kendall tau [95 %] of the fidelity report of supernet ``name`` (``entangled`` owns the trainings; every
    other supernet is scored against them with ``fidelity --standalone``)."""
    summary = _config(runs / ("cifar-fidelity" if name == "entangled" else f"cifar-fidelity-{name}") / "fidelity.json")
    if not summary or not summary.get("kendall_tau_95") or summary["architectures"] < summary["planned"]:
        return "-"
    lo, hi = summary["kendall_tau_95"]
    return f"{summary['kendall_tau']:.2f} [{lo:.2f}, {hi:.2f}]"


def supernets(runs: Path, times: dict[str, int]) -> None:
    print("| supernet | epochs | smallest | largest | tracked subnet | images/s | wall | Kendall tau [95 %] |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for sharing in SHARINGS:
        config = _config(runs / f"cifar-{sharing}" / "supernet" / "config.json")
        if config is None:
            print(f"| {sharing} | not trained yet | | | | | | |")
            continue
        m = config["metrics"]
        speed = statistics.median(h["images_per_s"] for h in config["history"])
        wall = times.get(f"train-{sharing}")
        print(
            f"| {sharing} | {config['epochs']} | {_pct(m['search_top1/smallest'])} | {_pct(m['search_top1/largest'])} "
            f"| {_pct(m['search_top1/subnet0'])} | {speed:.0f} | {f'{wall / 60:.0f} min' if wall else '-'} "
            f"| {_tau(runs, sharing)} |"
        )


def best_row(run: Path) -> dict | None:
    path = run / "pareto.parquet"
    if not path.is_file():
        return None
    return min(pq.read_table(path).to_pylist(), key=lambda r: r["rank"])


def sharing_comparison(runs: Path) -> None:
    """The same architectures (the fidelity report's) scored with each supernet's inherited weights: the mean,
    the gap to stand-alone training and the per-architecture margin of entanglement over each other mode."""
    reports = {}
    for sharing in SHARINGS:
        path = runs / ("cifar-fidelity" if sharing == "entangled" else f"cifar-fidelity-{sharing}") / "fidelity.parquet"
        if path.is_file():
            reports[sharing] = {r["key"]: r for r in pq.read_table(path).to_pylist()}
    print(
        "| supernet | mean inherited top-1 (search / test) | inherited - stand-alone | Kendall tau [95 %] "
        "| entangled - this, per architecture (search: mean [min, max]) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for sharing in SHARINGS:
        rows = reports.get(sharing)
        if rows is None:
            print(f"| {sharing} | not scored yet | | | |")
            continue
        mean = {
            f: statistics.fmean(r[f] for r in rows.values())
            for f in ("inherited_search_top1", "inherited_test_top1", "standalone_search_top1")
        }
        margin = "-"
        if sharing != "entangled" and "entangled" in reports:
            d = [reports["entangled"][k]["inherited_search_top1"] - r["inherited_search_top1"] for k, r in rows.items()]
            margin = f"{100 * statistics.fmean(d):+.1f} [{100 * min(d):+.1f}, {100 * max(d):+.1f}]"
        gap = mean["inherited_search_top1"] - mean["standalone_search_top1"]
        print(
            f"| {sharing} | {_pct(mean['inherited_search_top1'])} / {_pct(mean['inherited_test_top1'])} "
            f"| {100 * gap:+.1f} pt | {_tau(runs, sharing)} | {margin} |"
        )


def evolution_vs_random(runs: Path) -> None:
    """Each search's pick: its search top-1 (the score it was picked by, so biased upwards by the pick) with its
    interval, and its test top-1 (scored once, after the search: the unbiased comparison)."""
    print("| seed | evolution: search [95 %] / test (params) | random: search [95 %] / test (params) |")
    print("| --- | --- | --- |")
    found: dict[str, list[tuple[float, float | None]]] = {"evolution": [], "random": []}
    for seed in (0, 1, 2):
        cells = []
        for algorithm in ("evolution", "random"):
            row = best_row(runs / f"cifar-{algorithm}-{seed}")
            if row is None:
                cells.append("not run yet")
                continue
            found[algorithm].append((row["top1"], row.get("test_top1")))
            cells.append(
                f"{_pct(row['top1'])} [{_pct(row['top1_low'])}, {_pct(row['top1_high'])}] / "
                f"{_pct(row.get('test_top1'))} ({row['params'] / 1e6:.2f}M)"
            )
        print(f"| {seed} | {cells[0]} | {cells[1]} |")
    if found["evolution"] and found["random"]:
        cells = []
        for algorithm in ("evolution", "random"):
            search = statistics.mean(s for s, _ in found[algorithm])
            tests = [t for _, t in found[algorithm] if t is not None]
            cells.append(f"{_pct(search)} / {_pct(statistics.mean(tests)) if tests else '-'}")
        print(f"| mean | {cells[0]} | {cells[1]} |")


def best_per_sharing(runs: Path) -> None:
    print(
        "| sharing | best under the limit | params | inherited search | inherited test | retrained search | retrained test |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for sharing in SHARINGS:
        row = best_row(runs / f"cifar-best-{sharing}")
        if row is None:
            print(f"| {sharing} | not searched yet | | | | | |")
            continue
        retrained = _model_scores(runs / f"cifar-retrain-{row['key']}")
        print(
            f"| {sharing} | {row['key']} | {row['params'] / 1e6:.2f}M | {_pct(row['top1'])} | {_pct(row.get('test_top1'))} "
            f"| {_pct(retrained[0]) if retrained else '-'} | {_pct(retrained[1]) if retrained else '-'} |"
        )


def table4(runs: Path) -> None:
    front = runs / "cifar-front" / "pareto.parquet"
    if not front.is_file():
        print("(the front search has not run yet)")
        return
    rows = {r["key"]: r for r in pq.read_table(front).to_pylist() if r["on_params_front"]}
    print("| architecture | params | inherited (search / test) | finetuned | retrained |")
    print("| --- | --- | --- | --- | --- |")
    for run in sorted(runs.glob("cifar-retrain-e*")):
        key = run.name.removeprefix("cifar-retrain-")
        row = rows.get(key)
        if row is None:
            continue
        tuned = _model_scores(runs / f"cifar-finetune-{key}")
        retrained = _model_scores(run)
        cell = lambda s: f"{_pct(s[0])} / {_pct(s[1])}" if s else "-"  # noqa: E731
        print(
            f"| {key} | {row['params'] / 1e6:.2f}M | {_pct(row['top1'])} / {_pct(row.get('test_top1'))} | {cell(tuned)} "
            f"| {cell(retrained)} |"
        )


def fidelity(runs: Path) -> None:
    """The report's rows and its rank agreement; for a report whose command has not finished (it writes its files
    when it ends), the finished trials' last results, read from their ``result.json``."""
    run = runs / "cifar-fidelity"
    summary = _config(run / "fidelity.json")
    if summary is not None and summary["architectures"] >= summary["planned"]:
        rows = pq.read_table(run / "fidelity.parquet").to_pylist()
    else:
        rows = []
        for path in sorted(run.glob("arch_*/result.json")):
            finished = [r for r in map(json.loads, path.read_text().splitlines()) if "test_top1" in r]
            rows += [
                {**r, "standalone_search_top1": r["search_top1"], "standalone_test_top1": r["test_top1"]}
                for r in finished[-1:]
            ]
        print(f"(unfinished: {len(rows)} architectures finished; from the trials' result.json)\n")
    print("| architecture | params | inherited search | stand-alone search | inherited test | stand-alone test |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: r["params"]):
        print(
            f"| {r['key']} | {r['params'] / 1e6:.2f}M | {_pct(r['inherited_search_top1'])} | "
            f"{_pct(r['standalone_search_top1'])} | {_pct(r['inherited_test_top1'])} | {_pct(r['standalone_test_top1'])} |"
        )
    if len(rows) >= 3:
        print(f"\n{_agreement(rows)}")


def _agreement(rows: list[dict]) -> str:
    from pipeline.core.agreement import bootstrap_interval, kendall_tau, spearman_rho

    inherited, alone = [r["inherited_search_top1"] for r in rows], [r["standalone_search_top1"] for r in rows]
    lo, hi = bootstrap_interval(kendall_tau, inherited, alone, seed=0)
    test = kendall_tau([r["inherited_test_top1"] for r in rows], [r["standalone_test_top1"] for r in rows])
    gap = statistics.fmean(i - a for i, a in zip(inherited, alone))
    return (
        f"Kendall tau {kendall_tau(inherited, alone):.2f} [{lo:.2f}, {hi:.2f}], Spearman rho "
        f"{spearman_rho(inherited, alone):.2f}, test-split tau {test:.2f}, mean gap {100 * gap:+.1f} pt "
        f"over {len(rows)} architectures"
    )


VARIANTS = ("entangled", "sandwich", "sandwich-kl", "sandwich-alpha", "teacher")  # distillation_experiments.sh
RULES = (
    "uniform",
    "sandwich",
    "sandwich-kl",
    "sandwich-kl-proj-largest",
    "sandwich-kl-proj-others",
    "sandwich-alpha",
    "teacher",
)  # its short runs: RULE-<epochs>ep


def distillation(runs: Path) -> None:
    """Uniform sampling against the sandwich rule, in-place and teacher distillation: the front's mean inherited
    top-1 (search split, and test split scored once after the search), the extreme subnets' search top-1, Kendall
    tau and the training speed."""
    short = [
        p.name.removeprefix("cifar-")
        for p in (*runs.glob("cifar-uniform-*ep"), *runs.glob("cifar-sandwich*-*ep"), *runs.glob("cifar-teacher-*ep"))
    ]
    rule = lambda n: n.rsplit("-", 1)[0]  # noqa: E731
    order = lambda n: (RULES.index(rule(n)) if rule(n) in RULES else len(RULES), int(n.rsplit("-", 1)[1][:-2]))  # noqa: E731
    names = list(VARIANTS) + sorted(short, key=order)  # most at the uniform supernet's wall-clock
    print(
        "| supernet | epochs | training | images/s | front mean top-1 (search / test) | smallest | largest "
        "| Kendall tau [95 %] |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    fronts: dict[str, list[dict]] = {}
    for name in names:
        config = _config(runs / f"cifar-{name}" / "supernet" / "config.json")
        if config is None:
            print(f"| {name} | not trained yet | | | | | | |")
            continue
        m = config["metrics"]
        speed = statistics.median(h["images_per_s"] for h in config["history"])
        front_run = runs / ("cifar-front" if name == "entangled" else f"cifar-front-{name}")
        front = front_run / "pareto.parquet"
        rows = [r for r in pq.read_table(front).to_pylist() if r["on_params_front"]] if front.is_file() else []
        mean = statistics.mean(r["top1"] for r in rows) if rows else None
        mean_test = statistics.mean(r["test_top1"] for r in rows) if rows else None
        if rows:
            fronts[f"{'uniform' if name == 'entangled' else name} ({config['epochs']} epochs)"] = rows
        tau = _tau(runs, name)
        training = sum(h["epoch_time_s"] for h in config["history"])  # across resumes; no start-up or evaluation
        print(
            f"| {name} | {config['epochs']} | {training / 60:.0f} min | {speed:.0f} "
            f"| {_pct(mean)} / {_pct(mean_test)} "
            f"| {_pct(m['search_top1/smallest'])} | {_pct(m['search_top1/largest'])} | {tau} |"
        )
    if fronts:
        fronts_png(fronts, runs / "distillation-fronts.png")
        print(f"\nThe fronts side by side: {runs / 'distillation-fronts.png'}")
    teacher = _model_scores(runs / "cifar-retrain-largest")
    if teacher is not None:
        print(
            f"\nThe teacher (the space's largest architecture retrained, 30 epochs): search {_pct(teacher[0])}, "
            f"test {_pct(teacher[1])}"
        )


def fronts_png(fronts: dict[str, list[dict]], target: Path) -> None:
    """Each supernet's front (inherited search top-1 against parameters) on one plot: the comparison at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for label, rows in fronts.items():
        rows = sorted(rows, key=lambda r: r["params"])
        xs, ys = [r["params"] / 1e6 for r in rows], [100 * r["top1"] for r in rows]
        ax.step(xs, ys, where="post", marker="o", markersize=4, label=label)
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("search-split top-1 (%), inherited weights")
    ax.set_title("Front per supernet-training rule (CIFAR-10 subset, compact-32)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes(str(target), buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="/work/bench-runs", type=Path)
    runs = parser.parse_args().runs
    times = _times(runs)
    for title, part in (
        ("Supernets", lambda: supernets(runs, times)),
        (
            "Entangled against classical sharing, on the fidelity report's architectures",
            lambda: sharing_comparison(runs),
        ),
        ("Evolution against random search", lambda: evolution_vs_random(runs)),
        ("The best architecture under the limit, per sharing mode", lambda: best_per_sharing(runs)),
        ("Table 4 analogue", lambda: table4(runs)),
        ("Fidelity", lambda: fidelity(runs)),
        ("Better subnets: sampling and distillation", lambda: distillation(runs)),
    ):
        print(f"\n### {title}\n")
        part()
    print("\nWall times (s):", json.dumps(times))


if __name__ == "__main__":
    main()
