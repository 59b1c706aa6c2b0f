"""What the fidelity report concludes from its rows: rank agreement between inherited and stand-alone top-1
(Kendall tau, Spearman rho, each with a bootstrap 95 % interval over architectures), top-k overlap, and the
mean gap inherited minus stand-alone. Decisions use the search split; the test split is reported beside it."""

from __future__ import annotations

import math
import statistics
from typing import Any

from pipeline.core.agreement import bootstrap_interval, kendall_tau, spearman_rho, top_k_overlap


def summarize(rows: list[dict[str, Any]], seed: int = 0, planned: int | None = None) -> dict[str, Any]:
    """Rows carry ``inherited_search_top1``, ``standalone_search_top1`` and the test equivalents; ``planned`` is
    how many architectures the experiment has (an interrupted one has rows only for the trials it started)."""
    done = [r for r in rows if not math.isnan(r.get("standalone_search_top1", math.nan))]
    inherited = [r["inherited_search_top1"] for r in done]
    alone = [r["standalone_search_top1"] for r in done]
    k = max(1, len(done) // 4)
    out: dict[str, Any] = {"architectures": len(done), "planned": planned or len(rows), "top_k": k}
    if len(done) < 3:
        return {**out, "kendall_tau": math.nan, "spearman_rho": math.nan}
    out["kendall_tau"] = kendall_tau(inherited, alone)
    out["kendall_tau_95"] = list(bootstrap_interval(kendall_tau, inherited, alone, seed=seed))
    out["spearman_rho"] = spearman_rho(inherited, alone)
    out["spearman_rho_95"] = list(bootstrap_interval(spearman_rho, inherited, alone, seed=seed))
    out["top_k_overlap"] = top_k_overlap(inherited, alone, k)
    out["mean_gap_search"] = statistics.fmean(i - a for i, a in zip(inherited, alone))
    out["mean_gap_test"] = statistics.fmean(r["inherited_test_top1"] - r["standalone_test_top1"] for r in done)
    out["kendall_tau_test"] = kendall_tau(
        [r["inherited_test_top1"] for r in done], [r["standalone_test_top1"] for r in done]
    )
    out.update(ceiling(rows, seed))
    out.update(reranked(done, seed))
    return out


def reranked(done: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Kendall tau (with its bootstrap interval) of the re-ranked search top-1 after each fine-tuning step count
    against stand-alone, over the finished architectures; nothing when the report re-ranked none."""
    steps = next((r["rerank_steps"] for r in done if r.get("rerank_steps")), [])
    entries = []
    for i, n in enumerate(steps):
        pairs = [
            (r["rerank_search_top1"][i], r["standalone_search_top1"])
            for r in done
            if len(r.get("rerank_search_top1") or []) > i
        ]
        entry: dict[str, Any] = {"steps": n, "architectures": len(pairs), "kendall_tau": math.nan}
        if len(pairs) >= 3:
            first, second = [p[0] for p in pairs], [p[1] for p in pairs]
            entry["kendall_tau"] = kendall_tau(first, second)
            entry["kendall_tau_95"] = list(bootstrap_interval(kendall_tau, first, second, seed=seed))
            entry["mean_gap_search"] = statistics.fmean(a - b for a, b in pairs)
        entries.append(entry)
    return {"rerank": entries} if entries else {}


def ceiling(rows: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """The ceiling any supernet can reach: Kendall tau of the first two seeds' stand-alone search top-1 against
    each other (with its bootstrap interval) over the architectures both finished. Nothing without two seeds."""
    pairs = [
        r["standalone_search_top1_by_seed"][:2]
        for r in rows
        if len(r.get("standalone_search_top1_by_seed") or []) >= 2
        and not any(math.isnan(v) for v in r["standalone_search_top1_by_seed"][:2])
    ]
    if not any(len(r.get("standalone_search_top1_by_seed") or []) >= 2 for r in rows):
        return {}
    first, second = [p[0] for p in pairs], [p[1] for p in pairs]
    out: dict[str, Any] = {"ceiling_architectures": len(pairs), "ceiling_tau": math.nan}
    if len(pairs) >= 3:
        out["ceiling_tau"] = kendall_tau(first, second)
        out["ceiling_tau_95"] = list(bootstrap_interval(kendall_tau, first, second, seed=seed))
    return out


def describe(summary: dict[str, Any]) -> str:
    """One line for the console and the plot's title."""
    if summary["architectures"] < 3:
        return f"{summary['architectures']} of {summary['planned']} architectures finished: too few for a correlation"
    if math.isnan(summary["kendall_tau"]):
        return (
            f"Kendall tau undefined over {summary['architectures']} architectures: the inherited or the stand-alone "
            f"scores are all equal, so there is no ranking to compare{describe_rerank(summary)}{describe_ceiling(summary)}"
        )
    lo, hi = summary["kendall_tau_95"]
    rlo, rhi = summary["spearman_rho_95"]
    return (
        f"Kendall tau {summary['kendall_tau']:.2f} [{lo:.2f}, {hi:.2f}], Spearman rho {summary['spearman_rho']:.2f} "
        f"[{rlo:.2f}, {rhi:.2f}] over {summary['architectures']} architectures; top-{summary['top_k']} overlap "
        f"{summary['top_k_overlap']:.0%}; inherited - stand-alone {100 * summary['mean_gap_search']:+.1f} pt (search)"
        f"{describe_rerank(summary)}{describe_ceiling(summary)}"
    )


def describe_rerank(summary: dict[str, Any]) -> str:
    """``; re-ranked after 100 steps tau 0.55 [0.20, 0.80]`` per step count, or nothing."""
    parts = []
    for entry in summary.get("rerank", []):
        if math.isnan(entry["kendall_tau"]):
            parts.append(f"; re-ranked after {entry['steps']} steps: tau undefined")
            continue
        lo, hi = entry["kendall_tau_95"]
        parts.append(f"; re-ranked after {entry['steps']} steps tau {entry['kendall_tau']:.2f} [{lo:.2f}, {hi:.2f}]")
    return "".join(parts)


def describe_ceiling(summary: dict[str, Any]) -> str:
    """``; ceiling (stand-alone seed 1 against seed 2) tau 0.71 [0.52, 0.86]``, or nothing without two seeds."""
    if "ceiling_tau" not in summary:
        return ""
    if math.isnan(summary["ceiling_tau"]):
        return f"; ceiling undefined ({summary['ceiling_architectures']} architectures with two finished seeds)"
    lo, hi = summary["ceiling_tau_95"]
    return f"; ceiling (stand-alone seed 1 against seed 2) tau {summary['ceiling_tau']:.2f} [{lo:.2f}, {hi:.2f}]"
