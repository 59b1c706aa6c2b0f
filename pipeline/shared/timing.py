"""Timing a call on CPU or GPU with ``torch.utils.benchmark``: what the latency profiler and the search's
evaluators measure with (both layers use it, so it lives here); and the time a loop waits for its data."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MIN_SECONDS = 0.2  # the least a measurement runs, warm-up excluded


@functools.cache
def _timer_class() -> type:
    """``torch.utils.benchmark.Timer``, imported quietly: the import loads torch's C++-extension helper, which
    logs a warning on a machine with a CUDA toolkit but no GPU (a CPU node of the cluster); nothing is compiled."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        log.setLevel(level)
    return Timer


def median_ms(run: Callable[[], Any], threads: int, min_run_time: float = MIN_SECONDS) -> float:
    """Median milliseconds per call of ``run``, measured by ``Timer.blocked_autorange``.

    It warms up while it picks how many calls make one block (enough that the timer's own cost, an accelerator
    synchronization included, is negligible against the block), times blocks until ``min_run_time`` seconds are
    spent, and reports the median block's time per call: one slow call (a page fault, a scheduler hiccup) moves
    it little. ``threads`` is torch's intra-op thread count while timing (the Timer sets it and restores it).
    """
    timer = _timer_class()("run()", globals={"run": run}, num_threads=threads)
    return 1000.0 * timer.blocked_autorange(min_run_time=min_run_time).median


def waiting(items: Iterable[Any], waited: list[float]) -> Iterator[Any]:
    """``items``, adding the seconds spent waiting for each to ``waited[0]``: how a training loop knows it
    waits for data (the epoch line's "data wait")."""
    iterator = iter(items)
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        waited[0] += time.perf_counter() - start
        yield item
