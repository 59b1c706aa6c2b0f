"""``fidelity.parquet``, ``fidelity.json`` and ``fidelity.png``: the supernet-fidelity report. This module owns
those files.

One row per architecture: genes, parameters, MACs, where it was picked from (a size stratum or a search's
front), inherited top-1 and stand-alone top-1 on the search and test splits, each with its 95 % Wilson
interval, the epochs of the stand-alone training, and with ``--seeds N`` the stand-alone top-1 of each seed's
training (the first is the one the other columns hold; NaN for one not finished), and with ``--rerank-steps``
the search top-1 after each of those fine-tuning step counts from inherited weights. The JSON holds the summary (rank correlations with
bootstrap intervals, top-k overlap, mean gap); the picture plots inherited against stand-alone top-1.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.agreement import wilson_interval
from pipeline.results.tables import ARCH_COLUMNS, arch_fields
from pipeline.shared.storage import join, read_bytes, write_bytes

FIDELITY_FILE = "fidelity.parquet"
SUMMARY_FILE = "fidelity.json"
PLOT_FILE = "fidelity.png"
SCORES = ("inherited_search_top1", "standalone_search_top1", "inherited_test_top1", "standalone_test_top1")

SCHEMA = pa.schema(
    [
        *ARCH_COLUMNS,
        ("picked", pa.string()),
        ("params", pa.int64()),
        ("macs", pa.int64()),
        *[(name, pa.float64()) for score in SCORES for name in (score, f"{score}_low", f"{score}_high")],
        ("search_images", pa.int64()),
        ("test_images", pa.int64()),
        ("epochs", pa.int32()),
        ("status", pa.string()),
        ("standalone_search_top1_by_seed", pa.list_(pa.float64())),
        ("standalone_test_top1_by_seed", pa.list_(pa.float64())),
        # --rerank-steps: search top-1 after each step count of fine-tuning from inherited weights
        ("rerank_steps", pa.list_(pa.int32())),
        ("rerank_search_top1", pa.list_(pa.float64())),
    ]
)
BY_SEED = {"search_top1": "standalone_search_top1_by_seed", "test_top1": "standalone_test_top1_by_seed"}


def _by_seed(results: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per architecture key, each seed's stand-alone search and test top-1 (NaN where a training is not done).
    A reused report's results carry their seeds' scores in their metrics (``*_by_seed``)."""
    seeds = 1 + max((r.get("seed_index", 0) for r in results), default=0)
    out: dict[str, dict[str, list[float]]] = {}
    for result in results:
        key, index, m = result["arch"].key, result.get("seed_index", 0), result["metrics"]
        scores = out.setdefault(key, {column: [math.nan] * seeds for column in BY_SEED.values()})
        for metric, column in BY_SEED.items():
            if column in m:
                scores[column] = [float(v) for v in m[column]]
            elif result["done"]:
                scores[column][index] = float(m[metric])
    return out


def fidelity_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows from the experiment's per-trial results (unfinished trials keep NaN stand-alone scores): one
    per architecture, its first seed's training in the score columns, every seed's in the ``*_by_seed`` ones."""
    by_seed = _by_seed(results)
    rows = []
    for result in results:
        if result.get("seed_index", 0):
            continue
        arch, m = result["arch"], result["metrics"]
        row: dict[str, Any] = {
            **arch_fields(arch.to_dict()),
            "picked": result["picked"],
            "params": int(m.get("params", 0)),
            "macs": int(m.get("macs", 0)),
            "inherited_search_top1": m.get("inherited_search_top1", math.nan),
            "inherited_test_top1": m.get("inherited_test_top1", math.nan),
            "standalone_search_top1": m["search_top1"] if result["done"] else math.nan,
            "standalone_test_top1": m["test_top1"] if result["done"] else math.nan,
            "search_images": int(m.get("search_images", 0)),
            "test_images": int(m.get("test_images", 0)),
            "epochs": int(m.get("epoch", 0)),
            "status": "done" if result["done"] else "unfinished",
            **by_seed[arch.key],
            "rerank_steps": [int(n) for n in m.get("rerank_steps") or []],
            "rerank_search_top1": [float(v) for v in m.get("rerank_search_top1_by_steps") or []],
        }
        for score in SCORES:
            images = row["search_images"] if "search" in score else row["test_images"]
            value = row[score]
            low, high = wilson_interval(round(value * images), images) if not math.isnan(value) else (math.nan,) * 2
            row[f"{score}_low"], row[f"{score}_high"] = low, high
        rows.append(row)
    return sorted(rows, key=lambda r: (r["params"], r["key"]))


def read_fidelity(run_path: str) -> list[dict[str, Any]] | None:
    """The rows of the report at ``run_path``, or None when it has none."""
    try:
        data = read_bytes(join(run_path, FIDELITY_FILE))
    except (FileNotFoundError, OSError):
        return None
    return pq.read_table(io.BytesIO(data)).to_pylist()


def write_fidelity(run_path: str, rows: list[dict[str, Any]], summary: dict[str, Any], title: str) -> None:
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    write_bytes(join(run_path, FIDELITY_FILE), sink.getvalue())
    write_bytes(join(run_path, SUMMARY_FILE), (json.dumps(_no_nan(summary), indent=2) + "\n").encode("utf-8"))
    write_bytes(join(run_path, PLOT_FILE), fidelity_png(rows, title))


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: undefined statistics are written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def fidelity_png(rows: list[dict[str, Any]], title: str) -> bytes:
    """Inherited (x) against stand-alone (y) search top-1 with 95 % intervals, the y = x line, tau in the title."""
    import matplotlib  # here, not at the top: the Agg backend must be chosen before pyplot is first imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done"]
    fig, ax = plt.subplots(figsize=(6.5, 6), dpi=120)
    if done:
        x = [100 * r["inherited_search_top1"] for r in done]
        y = [100 * r["standalone_search_top1"] for r in done]
        xerr = [
            [100 * (r["inherited_search_top1"] - r["inherited_search_top1_low"]) for r in done],
            [100 * (r["inherited_search_top1_high"] - r["inherited_search_top1"]) for r in done],
        ]
        yerr = [
            [100 * (r["standalone_search_top1"] - r["standalone_search_top1_low"]) for r in done],
            [100 * (r["standalone_search_top1_high"] - r["standalone_search_top1"]) for r in done],
        ]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor="0.75", elinewidth=0.8, zorder=1)
        points = ax.scatter(x, y, c=[r["params"] / 1e6 for r in done], cmap="viridis", s=30, zorder=2)
        fig.colorbar(points, ax=ax, label="parameters (M)")
        front = [(xi, yi) for r, xi, yi in zip(done, x, y) if r["picked"] == "front"]
        if front:
            ax.scatter(*zip(*front), facecolors="none", edgecolors="crimson", s=90, zorder=3, label="search front")
        lo, hi = min(x + y) - 1, max(x + y) + 1
        ax.plot([lo, hi], [lo, hi], color="0.4", linestyle="--", linewidth=1, label="y = x")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.legend(loc="upper left")
    ax.set_xlabel("inherited top-1 on the search split (%)")
    ax.set_ylabel("stand-alone top-1 on the search split (%)")
    ax.set_title(title, fontsize=8, wrap=True)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()
