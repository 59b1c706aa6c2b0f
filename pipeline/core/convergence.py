"""Whether a supernet's ranking of architectures has settled: the convergence probe's arithmetic. Pure Python.

A fixed probe set of architectures, spread over the space's sizes, is scored on the search split during
training. When the ranking the supernet gives them no longer changes from one evaluation to the next (Kendall's
tau near 1), more epochs would not change which architecture the search prefers; when the scores lie within one
score's interval of each other, the ranking says nothing yet, whatever its tau. Users of one-shot NAS ask "has
my supernet converged?"; this is the answer the tool gives while it trains.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core.agreement import kendall_tau, wilson_interval

PROBE_COST = 0.10  # at ``probe_every: auto``, the probe costs at most this share of an epoch
# What scoring one image costs against training on it (forward, backward, optimizer step), measured on 2 CPU cores
# with the probe scored in one pass over the split: 0.26 on digits, 0.53 on the CIFAR-10 subset (compact-32).
# Larger models on GPUs spend relatively more in the backward pass (about a third); a GPU run errs towards fewer
# evaluations than the tenth allows, never more.
FORWARD_SHARE = 0.6
STABLE_TAU = 0.8  # without a stop rule, "stable" means the tau has held at least this


def probe_interval(
    every: int | str, archs: int, search_images: int, train_images: int, subnets_per_step: int = 1
) -> int:
    """Epochs between probe evaluations. ``auto``: the fewest that keep scoring ``archs`` architectures on the
    search split at most ``PROBE_COST`` of the epochs in between (counted in images through the network: the
    forward passes of the probe against the training steps of an epoch, each training one or more subnets)."""
    if every != "auto":
        return int(every)
    probe = archs * search_images * FORWARD_SHARE
    epoch = max(1, train_images) * max(1, subnets_per_step)
    return max(1, math.ceil(probe / (PROBE_COST * epoch)))


def probe_due(epoch: int, every: int, epochs: int) -> bool:
    """Whether the probe is scored after (1-based) ``epoch``: after the last and every ``every`` epochs before it.
    Counted back from the last epoch, every tau compares two evaluations ``every`` epochs apart; counted forward,
    the last one could follow its predecessor by a single epoch at a near-zero learning rate and look stable
    whatever the ranking (a 75-epoch CIFAR run, scored every 18: tau 0.45-0.58 at 18 epochs, then 0.90 at 3)."""
    return (epochs - epoch) % every == 0


@dataclass(frozen=True)
class Evaluation:
    """One probe evaluation: the epoch after which it was scored, each architecture's top-1 and image count, the
    ranking's tau against the previous evaluation (NaN for the first, or when either ranking is all ties), and
    the seconds its scoring took (what the probe costs; NaN where not measured)."""

    epoch: int
    top1: tuple[float, ...]
    count: int
    tau: float
    seconds: float = math.nan

    def intervals(self) -> list[tuple[float, float]]:
        return [wilson_interval(t * self.count, self.count) for t in self.top1]

    def spread(self) -> float:
        """How far apart the scores are, in units of one score's 95 % interval: the range of the top-1 values
        over the median interval width. Below about 1 the probe cannot tell its architectures apart."""
        widths = [hi - lo for lo, hi in self.intervals()]
        width = statistics.median(widths) if widths else math.nan
        return (max(self.top1) - min(self.top1)) / width if width and width > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "top1": list(self.top1),
            "count": self.count,
            "tau": self.tau,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evaluation:
        top1 = tuple(float(t) for t in d["top1"])
        return cls(int(d["epoch"]), top1, int(d["count"]), float(d["tau"]), float(d.get("seconds", math.nan)))


def next_evaluation(
    history: Sequence[Evaluation], epoch: int, top1: Sequence[float], count: int, seconds: float = math.nan
) -> Evaluation:
    """The evaluation after ``epoch``, its tau taken against the last one of ``history``."""
    tau = kendall_tau(history[-1].top1, top1) if history else math.nan
    return Evaluation(epoch, tuple(float(t) for t in top1), int(count), tau, float(seconds))


def probe_cost(history: Sequence[Evaluation], training_s: float) -> tuple[float, float]:
    """Seconds spent scoring the probe (evaluations that were timed) and their share of ``training_s``."""
    seconds = sum(e.seconds for e in history if not math.isnan(e.seconds))
    return seconds, seconds / training_s if training_s > 0 else math.nan


def held(history: Sequence[Evaluation], tau: float, times: int) -> bool:
    """Whether the last ``times`` evaluations each had a tau of at least ``tau`` (NaN never counts)."""
    last = [e.tau for e in history[-times:]]
    return len(last) == times and all(t >= tau for t in last)


def stable_since(history: Sequence[Evaluation], tau: float) -> int | None:
    """The epoch from whose evaluation on every tau has been at least ``tau`` (None when the last was not)."""
    since = None
    for e in history:
        since = (since or e.epoch) if e.tau >= tau else None
    return since


def summary(history: Sequence[Evaluation], rule: Sequence[float] | None) -> dict[str, Any]:
    """What a run records of its probe: the last tau and spread, and since when the ranking has been stable (at
    the stop rule's tau, or ``STABLE_TAU`` without one)."""
    threshold = float(rule[0]) if rule else STABLE_TAU
    last = history[-1] if history else None
    return {
        "evaluations": len(history),
        "last_epoch": last.epoch if last else None,
        "last_tau": None if last is None or math.isnan(last.tau) else last.tau,
        "last_spread": None if last is None or math.isnan(last.spread()) else round(last.spread(), 4),
        "threshold": threshold,
        "stable_since": stable_since(history, threshold),
        "stop_when_stable": list(rule) if rule else None,
    }


def epoch_note(evaluation: Evaluation) -> str:
    """The epoch line's probe part: ``probe tau 0.82 spread 3.1``."""
    tau = "-" if math.isnan(evaluation.tau) else f"{evaluation.tau:.2f}"
    spread = evaluation.spread()
    return f"probe tau {tau} spread {'-' if math.isnan(spread) else f'{spread:.1f}'}"
