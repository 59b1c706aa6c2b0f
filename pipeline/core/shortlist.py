"""The shortlist a search re-ranks, and the rankings taken from its re-ranked scores.

Inherited weights decide which candidates are worth a closer look; a short fine-tune of each (``search.rerank_top``
candidates, ``search.rerank_steps`` steps) then decides among them. The shortlist is what the search would hand
over: for a ``pareto`` search its front on parameters, and the candidates statistically tied with the best
(McNemar's exact test on the same images); the first ``rerank_top`` of those, the front before the ties. After re-ranking, the
picks (the best, its ties, the fronts) are taken among the shortlist on the re-ranked scores: a fine-tuned score
and an inherited one are not comparable, so a candidate that was not re-ranked is never preferred over one that
was on the strength of its lower-fidelity score.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.records import best_record, by_top1, pareto_front, tied_with

# What a re-ranked score replaces in a record when the rankings are taken from it (the record keeps its own)
SCORE_KEYS = ("top1", "top1_low", "top1_high", "images", "hits", "top5", "loss")
RERANK = "rerank"  # the record key that holds a candidate's re-ranked scores (SCORE_KEYS, steps, seconds)


def shortlist(records: list[dict[str, Any]], objective: str, top: int) -> list[dict[str, Any]]:
    """The first ``top`` of: the best candidate; for the ``pareto`` objective, the parameter front (what the search
    would export: every size keeps its candidate); then the candidates tied with the best. Each part highest
    inherited top-1 first."""
    best = best_record(records)
    if best is None or top < 1:
        return []
    front = sorted(pareto_front(records, "params"), key=by_top1) if objective == "pareto" else []
    pool: dict[str, dict[str, Any]] = {}
    for r in [best, *front, *sorted(tied_with(best, records), key=by_top1)]:
        pool.setdefault(r["key"], r)
    return list(pool.values())[:top]


def with_reranked(records: list[dict[str, Any]], scores: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with their re-ranked scores (by key) added under ``RERANK``; the others as they are."""
    return [{**r, RERANK: scores[r["key"]]} if r["key"] in scores else r for r in records]


def ranked_on_rerank(record: dict[str, Any]) -> dict[str, Any]:
    """A re-ranked record as the rankings see it: its re-ranked scores in place of the inherited ones."""
    return {**record, **{k: record[RERANK][k] for k in SCORE_KEYS}}


def ranking_pool(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the best pick, its ties and the fronts are taken from: the re-ranked candidates on their re-ranked
    scores when there are any, else every record as it is."""
    reranked = [ranked_on_rerank(r) for r in records if RERANK in r]
    return reranked or records
