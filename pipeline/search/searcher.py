"""The Ray Tune ``Searcher``: a thin adapter between Tune's trial loop and a ``Strategy``.

Tune asks for a config per trial; the searcher answers with the next candidate of the current generation,
``None`` while the generation is still being evaluated (Tune asks again), and ``FINISHED`` at the end. Each
finished trial's metrics go back to the strategy. ``save``/``restore`` pickle the whole strategy (its random
state included), which is what lets ``Tuner.restore`` continue an interrupted search with the same candidates.
"""

from __future__ import annotations

import math
import pickle
import time
from typing import Any

from ray.tune.search import Searcher

from pipeline.core.records import OUTCOME_KEYS, best_record, failed_outcome, pareto_front
from pipeline.search.evolution import Candidate, Strategy
from pipeline.shared.progress import say


def trial_config(candidate: Candidate) -> dict[str, Any]:
    """What a trial is given: the candidate with its counts, so its record is built without counting again. The
    predicted latency goes in only when there is one: Tune logs configs as hyperparameters, and a NaN there
    prints a warning per trial."""
    config = {
        "arch": candidate.arch.to_dict(),
        "key": candidate.key,
        "generation": candidate.generation,
        "origin": candidate.origin,
        "params": candidate.params,
        "macs": candidate.macs,
    }
    if not math.isnan(candidate.latency_ms_pred):
        config["latency_ms_pred"] = candidate.latency_ms_pred
    return config


class EvolutionSearcher(Searcher):
    def __init__(self, strategy: Strategy) -> None:
        super().__init__(metric="top1", mode="max")
        self.strategy = strategy
        self.trials: dict[str, str] = {}  # trial id -> candidate key
        self.generation_started = time.perf_counter()

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        candidate = self.strategy.next()
        if candidate is None:
            return Searcher.FINISHED if self.strategy.finished else None
        self.trials[trial_id] = candidate.key
        return trial_config(candidate)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        key = self.trials.pop(trial_id, None)
        if key is None or key not in self.strategy.pending:
            return
        if error or not result or "status" not in result:
            outcome = failed_outcome(trial_id)
        else:
            outcome = {**{k: result[k] for k in OUTCOME_KEYS if k in result}, "trial_id": trial_id}
        self.strategy.complete(key, outcome)
        if self.strategy.generation_done():
            self._report_generation()

    def _report_generation(self) -> None:
        s = self.strategy
        records = s.records()
        this = [r for r in records if r["generation"] == s.generation]
        best = best_record(records)
        rejected = sum(r["status"] == "over_latency" for r in this)
        failed = sum(r["status"] == "error" for r in this)
        origins = ", ".join(f"{sum(r['origin'] == o for r in this)} {o}" for o in ("mutation", "crossover", "random"))
        extra = (f", {rejected} over the latency limit" if rejected else "") + (f", {failed} FAILED" if failed else "")
        lead = (
            f"best top-1 {best['top1']:.4f} ({best['params']:,} params)"
            if best
            else "no candidate within the constraints yet"
        )
        if best and s.settings.objective == "pareto":
            lead += f"; front of {len(pareto_front(records, 'params'))}"
        elapsed = time.perf_counter() - self.generation_started
        say(
            f"[search] generation {s.generation} (of 0-{s.settings.generations - 1}): {len(this)} evaluated ({origins}{extra}) in {elapsed:.1f} s; "
            f"{len(records)} in total; {lead}"
        )
        self.generation_started = time.perf_counter()

    # ---- persistence for Tuner.restore ------------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"strategy": self.strategy, "trials": self.trials}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.strategy, self.trials = state["strategy"], state["trials"]
        self.generation_started = time.perf_counter()
