"""The timing behind the latency profiler and the search's evaluators: torch.utils.benchmark's Timer, in
milliseconds per call, with the thread count asked for and the caller's restored afterwards."""

from __future__ import annotations

import time

import pytest
import torch

from pipeline.search import evaluator
from pipeline.shared.timing import median_ms


def test_median_ms_is_milliseconds_per_call_and_restores_threads() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []

    def run() -> None:
        seen.append(torch.get_num_threads())
        time.sleep(0.004)

    ms = median_ms(run, threads=1, min_run_time=0.05)
    assert 3.9 <= ms < 100  # sleep(4 ms) never returns early; a busy shared machine can make it much longer
    assert set(seen) == {1} and len(seen) >= 3  # warm-up plus timed calls, all with the thread count asked for
    assert torch.get_num_threads() == before


def test_evaluator_latency_repeats_set_the_time_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[float] = []
    monkeypatch.setattr(evaluator, "median_ms", lambda run, threads, min_run_time: asked.append(min_run_time) or 1.0)
    probe = evaluator.Evaluator.__new__(evaluator.Evaluator)  # only what latency_ms reads
    probe.latency_repeats, probe.latency_images = 5, torch.zeros(2, 3)
    probe.autocast = lambda: torch.autocast("cpu", enabled=False)
    assert probe.latency_ms(torch.nn.Identity()) == 1.0
    assert asked == [pytest.approx(5 * evaluator.LATENCY_REPEAT_S)]
