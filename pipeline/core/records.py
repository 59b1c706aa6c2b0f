"""The candidate record: one evaluated architecture, as the strategy, the result tables and the reports see it.

A record is a plain dict (it travels through Tune results, pickled strategies and Parquet rows alike) with a
declared shape, ``CandidateRecord``, and one constructor, ``candidate_record``. The rankings every "best" and
every front is taken from live here too, so the search, the result files and the console agree on them.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

from pipeline.core.agreement import mcnemar_p
from pipeline.core.arch import Architecture
from pipeline.core.pareto import front_of

OUTCOME_KEYS = (
    "status",
    "top1",
    "top1_low",
    "top1_high",
    "images",
    "hits",
    "top5",
    "loss",
    "latency_ms",
    "eval_s",
    "evaluator",
    "node",
    "trial_id",
)


class CandidateRecord(TypedDict):
    key: str  # Architecture.key
    arch: dict[str, Any]  # Architecture.to_dict()
    generation: int  # 0-based
    origin: str  # random, mutation or crossover
    params: int  # exact, counted once when the candidate is proposed
    macs: int
    status: str  # ok, over_latency (not scored) or error
    top1: float  # search split, inherited weights (NaN unless status is "ok")
    top1_low: float  # its 95 % Wilson interval on the search split's images
    top1_high: float
    images: int  # search images scored (0 when not scored)
    hits: str  # which search images were right at top-1: packed bits (numpy.packbits order) as hex ("" if none)
    top5: float
    loss: float
    latency_ms: (
        float  # median per batch: measured on the evaluator (or, with a latency model, on the target for exports)
    )
    latency_ms_pred: float  # the latency model's prediction (NaN without one)
    eval_s: float  # the evaluator's wall time for this candidate
    evaluator: str  # hostname:pid of the evaluator that scored it
    node: str  # the Ray node id it ran on
    trial_id: str


def failed_outcome(trial_id: str = "") -> dict[str, Any]:
    """The outcome of a candidate whose evaluation failed (no scores)."""
    nan = math.nan
    return {
        "status": "error",
        "top1": nan,
        "top1_low": nan,
        "top1_high": nan,
        "images": 0,
        "hits": "",
        "top5": nan,
        "loss": nan,
        "latency_ms": nan,
        "eval_s": nan,
        "evaluator": "",
        "node": "",
        "trial_id": trial_id,
    }


def candidate_record(
    arch: Architecture,
    generation: int,
    origin: str,
    params: int,
    macs: int,
    outcome: dict[str, Any],
    latency_ms_pred: float = math.nan,
) -> CandidateRecord:
    """The one place a record is made: the candidate's identity and counts plus what its evaluation measured."""
    full = {**failed_outcome(), **{k: outcome[k] for k in OUTCOME_KEYS if k in outcome}}
    return CandidateRecord(
        key=arch.key,
        arch=arch.to_dict(),
        generation=generation,
        origin=origin,
        params=params,
        macs=macs,
        latency_ms_pred=latency_ms_pred,
        **full,
    )


def cost_of(record: dict[str, Any], cost: str) -> float:
    """A Pareto cost of a record; ``latency_ms`` is the latency model's prediction when the search had one."""
    if cost == "latency_ms" and not math.isnan(record.get("latency_ms_pred", math.nan)):
        return record["latency_ms_pred"]
    return record[cost]


def by_top1(record: dict[str, Any]) -> tuple:
    """Highest search top-1 first; fewer params, then the key, break ties (so rankings are deterministic)."""
    return (-record["top1"], record["params"], record["key"])


def best_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The scored candidate inside the constraints with the highest search top-1 (what ``constrained`` returns)."""
    return min((r for r in records if r.get("status") == "ok"), key=by_top1, default=None)


def pareto_front(records: list[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """Scored candidates not dominated in (top-1 up, ``cost`` down), ordered by cost."""
    scored = [r for r in records if r.get("status") == "ok"]
    front = [scored[i] for i in front_of([(-r["top1"], r[cost]) for r in scored])]
    return sorted(front, key=lambda r: (r[cost], -r["top1"], r["key"]))


def hits_mask(record: dict[str, Any]) -> int:
    """A record's per-image top-1 hits as one integer bit mask (0 when it has none)."""
    return int.from_bytes(bytes.fromhex(record.get("hits") or ""), "big")


def tied_with(best: dict[str, Any], records: list[dict[str, Any]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Scored candidates statistically tied with ``best``: paired on the same search images, McNemar's exact
    test does not reject equal accuracy at ``alpha``. Candidates without per-image hits are left out."""
    if not best.get("hits"):
        return []
    mask, count = hits_mask(best), best["images"]
    tied = []
    for r in records:
        if r.get("status") != "ok" or r["key"] == best["key"] or not r.get("hits") or r["images"] != count:
            continue
        other = hits_mask(r)
        if mcnemar_p((other & ~mask).bit_count(), (mask & ~other).bit_count()) >= alpha:
            tied.append(r)
    return sorted(tied, key=lambda r: (r["params"], -r["top1"], r["key"]))
