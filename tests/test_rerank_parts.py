"""Re-ranking's parts without Ray: the shortlist, the rankings on re-ranked scores, the settings and the refusals."""

from __future__ import annotations

import math

import pytest

from pipeline.core.arch import Architecture
from pipeline.core.records import candidate_record
from pipeline.core.shortlist import RERANK, ranking_pool, shortlist, with_reranked
from pipeline.core.task import load_task
from pipeline.rerank.launch import RerankRequest, rerank
from pipeline.search.settings import SearchSettings
from pipeline.shared.errors import UserError


def _record(i: int, top1: float, params: int, hits: str = "ff") -> dict:
    arch = Architecture(embed_dim=64, depth=1, num_heads=(1 + i % 4,), mlp_ratio=(1.0 + i,))
    outcome = {"status": "ok", "top1": top1, "top1_low": top1 - 0.1, "top1_high": top1 + 0.1, "images": 8}
    return candidate_record(arch, 0, "random", params, params * 10, {**outcome, "hits": hits})


def _scores(top1: float) -> dict:
    return {"top1": top1, "top1_low": top1 - 0.1, "top1_high": top1 + 0.1, "images": 8, "hits": "ff",
            "top5": 1.0, "loss": 0.5, "steps": 4, "seconds": 1.0}  # fmt: skip


def test_the_shortlist_is_the_best_a_pareto_front_then_the_ties() -> None:
    # hits as 8 images: ff = 8 right, 0f = 4 right (tied with 8? no: McNemar 4 vs 0 gives p 0.125: tied), 00 = 0
    records = [_record(0, 1.0, 500, "ff"), _record(1, 0.5, 100, "0f"), _record(2, 0.0, 50, "00"),
               _record(3, 0.5, 900, "0f")]  # fmt: skip
    keys = [r["key"] for r in records]
    assert [r["key"] for r in shortlist(records, "constrained", 10)] == [keys[0], keys[1], keys[3]]
    # pareto: the front on params comes before the ties (the 50-param one at 0.0 is on it; the 900-param one is
    # only tied), so a small K keeps every size the search would export
    assert [r["key"] for r in shortlist(records, "pareto", 10)] == [keys[0], keys[1], keys[2], keys[3]]
    assert [r["key"] for r in shortlist(records, "pareto", 3)] == [keys[0], keys[1], keys[2]]
    assert shortlist(records, "pareto", 0) == [] and shortlist([], "pareto", 3) == []


def test_rankings_are_taken_among_the_re_ranked_on_their_new_scores() -> None:
    records = [_record(0, 0.9, 500), _record(1, 0.8, 100), _record(2, 0.7, 50)]
    assert ranking_pool(records) == records  # nothing re-ranked: every record as it is
    scored = with_reranked(records, {records[0]["key"]: _scores(0.6), records[1]["key"]: _scores(0.95)})
    pool = ranking_pool(scored)
    assert [r["key"] for r in pool] == [records[0]["key"], records[1]["key"]]  # the third was not re-ranked
    assert [r["top1"] for r in pool] == [0.6, 0.95] and scored[0]["top1"] == 0.9  # the record keeps its own
    assert RERANK not in scored[2]


def test_rerank_settings_are_checked_with_the_search_section() -> None:
    settings = SearchSettings.from_task(load_task("digits", ["search.rerank_top=4", "search.rerank_steps=50"]))
    assert settings.rerank.on and (settings.rerank.rerank_top, settings.rerank.rerank_steps) == (4, 50)
    assert not SearchSettings.from_task(load_task("digits")).rerank.on  # off by default
    for bad, allowed in (("rerank_steps=0", ">= 1"), ("rerank_steps=-5", ">= 1"), ("rerank_top=-1", ">= 0")):
        with pytest.raises(UserError, match=f"search.{bad.split('=')[0]}.*an integer {allowed}"):
            load_task("digits", [f"search.{bad}"])


def test_re_ranking_candidates_without_per_image_scores_is_refused_before_anything_runs(tmp_path) -> None:
    """A search whose candidates lost their per-image hits (recorded before they were kept) cannot be re-ranked
    against: one line naming the candidate, nothing written."""
    records = [_record(0, 0.9, 500, hits="")]
    request = RerankRequest(load_task("digits"), str(tmp_path / "supernet"), records, {}, 3, 10)
    with pytest.raises(UserError, match=f"candidate {records[0]['key']} .* has no per-image search scores"):
        rerank(request, str(tmp_path / "search"))
    assert not (tmp_path / "search").exists()
    assert math.isclose(records[0]["top1"], 0.9)
