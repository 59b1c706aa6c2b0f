"""``pareto.png``: search top-1 against parameters, every candidate coloured by generation, the front drawn with
the 95 % interval of each of its scores."""

from __future__ import annotations

import io
import math
from typing import Any

from pipeline.core.records import pareto_front
from pipeline.shared.storage import write_bytes

PLOT_FILE = "pareto.png"


def pareto_png(
    records: list[dict[str, Any]], target: str, title: str, min_params: int | None, max_params: int | None
) -> None:
    import matplotlib  # here, not at the top: the Agg backend must be chosen before pyplot is first imported

    matplotlib.use("Agg")  # files only: no display needed on cluster heads or CI
    import matplotlib.pyplot as plt

    scored = [r for r in records if not math.isnan(r["top1"])]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    if scored:
        points = ax.scatter(
            [r["params"] / 1e6 for r in scored],
            [100 * r["top1"] for r in scored],
            c=[r["generation"] for r in scored],
            cmap="viridis",
            s=14,
            alpha=0.75,
            linewidths=0,
        )
        fig.colorbar(points, ax=ax, label="generation (0: the random start)")
    front = pareto_front(records, "params")
    if front:
        xs, ys = [r["params"] / 1e6 for r in front], [100 * r["top1"] for r in front]
        ax.step(xs, ys, where="post", color="crimson", linewidth=1.5, label=f"Pareto front ({len(front)})")
        ax.scatter(xs, ys, color="crimson", s=26, zorder=3)
        if all(not math.isnan(r.get("top1_low", math.nan)) for r in front):
            spans = [
                [100 * (r["top1"] - r["top1_low"]) for r in front],
                [100 * (r["top1_high"] - r["top1"]) for r in front],
            ]
            ax.errorbar(xs, ys, yerr=spans, fmt="none", ecolor="crimson", alpha=0.5, capsize=2, label="95% interval")
    for bound, label in ((min_params, "min params"), (max_params, "max params")):
        if bound is not None:
            ax.axvline(bound / 1e6, color="0.3", linestyle="--", linewidth=1)
            ax.text(
                bound / 1e6,
                ax.get_ylim()[1],
                f"{label} {bound / 1e6:.3g}M ",
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
                color="0.3",
            )
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("search-split top-1 (%), inherited weights")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if front:
        ax.legend(loc="lower right")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes(target, buffer.getvalue())
