"""The shortlist a search re-ranks, and the rankings taken from its re-ranked scores.

Inherited weights decide which candidates are worth a closer look; a short fine-tune of each (``search.rerank_top``
candidates, ``search.rerank_steps`` steps) then decides among them. The shortlist is what the search would hand
over: the candidates statistically tied with the best (McNemar's exact test on the same images) and, for a
``pareto`` search, its front on parameters; the ``rerank_top`` highest-scoring of those. After re-ranking, the
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
    """The ``top`` highest-scoring (inherited top-1) of: the best candidate, those tied with it, and, for the
    ``pareto`` objective, the parameter front. Highest first."""
    best = best_record(records)
    if best is None or top < 1:
        return []
    pool = {r["key"]: r for r in [best, *tied_with(best, records)]}
    if objective == "pareto":
        pool.update({r["key"]: r for r in pareto_front(records, "params")})
    return sorted(pool.values(), key=by_top1)[:top]


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
