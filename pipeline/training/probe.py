"""The convergence probe while a supernet trains: which architectures, when, and what it records.

The arithmetic (when it is due, tau, spread, the stop rule) is pure Python in ``pipeline/core/convergence.py``;
here it meets the run: the probe set is drawn from the task's seed (so a resumed or restarted run scores the
same architectures), its evaluations live in the run's state (in every checkpoint, hence in the export), and the
scoring is handed in by the worker (each rank scores its shard of the search split).
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.arch import Architecture
from pipeline.core.complexity import count_params
from pipeline.core.convergence import (
    Evaluation,
    held,
    next_evaluation,
    probe_cost,
    probe_due,
    probe_interval,
    summary,
)
from pipeline.core.space import SearchSpace
from pipeline.core.strata import spread_by_params
from pipeline.core.task import Task
from pipeline.core.training_settings import TrainSettings
from pipeline.shared.errors import UserError
from pipeline.shared.storage import write_bytes

PROBE_SEED_OFFSET = 7919  # the probe set's draw is seeded apart from anything else the task's seed drives


@dataclasses.dataclass(frozen=True)
class Probe:
    """The probe of one run: its architectures (smallest first), the epochs between evaluations, the stop rule."""

    archs: tuple[Architecture, ...]
    every: int
    rule: tuple[float, int] | None

    def record(self, space: SearchSpace) -> dict[str, Any]:
        """What the run's state keeps of the probe besides its evaluations."""
        return {
            "archs": [a.key for a in self.archs],
            "params": [count_params(a, space) for a in self.archs],
            "every": self.every,
            "history": [],
        }


def check_probe_size(task: Task, space: SearchSpace) -> None:
    """``train.probe_archs`` larger than the space: one line naming the key, before anything starts."""
    count = task.train.supernet.probe_archs
    if count > space.num_architectures():
        raise UserError(
            f"task {task.name!r}: key 'train.probe_archs': {count} is more than the {space.num_architectures():,} "
            f"architectures of space {space.name!r}; give at most that many, or 0 for no probe"
        )


def build_probe(task: Task, space: SearchSpace, search_images: int, train_images: int) -> Probe | None:
    """The probe of a supernet run, or None when ``train.probe_archs`` is 0."""
    rules = task.train.supernet
    if rules.probe_archs == 0:
        return None
    archs = spread_by_params(space, rules.probe_archs, task.train.seed + PROBE_SEED_OFFSET)
    every = probe_interval(rules.probe_every, len(archs), search_images, train_images, rules.subnets_per_step)
    rule = tuple(rules.stop_when_stable) if rules.stop_when_stable else None
    return Probe(tuple(archs), every, rule)  # type: ignore[arg-type]


def history(state: dict[str, Any]) -> list[Evaluation]:
    return [Evaluation.from_dict(e) for e in state.get("probe", {}).get("history", [])]


def evaluate_probe(
    probe: Probe,
    state: dict[str, Any],
    epoch: int,
    epochs: int,
    score: Callable[[Sequence[Architecture]], list[tuple[float, int]]],
) -> Evaluation | None:
    """Score the probe after (1-based) ``epoch`` when it is due, and append the evaluation to the state."""
    if not probe_due(epoch, probe.every, epochs):
        return None
    start = time.perf_counter()
    scores = score(probe.archs)
    seconds = time.perf_counter() - start
    evaluation = next_evaluation(history(state), epoch, [t for t, _ in scores], scores[0][1], seconds)
    state["probe"]["history"].append(evaluation.to_dict())
    return evaluation


def stable(probe: Probe | None, evaluations: Sequence[Evaluation]) -> bool:
    """Whether the stop rule holds on ``evaluations`` (never without a rule)."""
    return bool(probe and probe.rule and held(evaluations, probe.rule[0], int(probe.rule[1])))


def probe_record(state: dict[str, Any]) -> dict[str, Any]:
    """What the exported supernet's config.json records of the probe: its architectures and interval, and the
    last tau, the spread and since when the ranking has been stable (``convergence.summary``)."""
    kept = state["probe"]
    rule = TrainSettings.from_flat(state["task"]["train"]).supernet.stop_when_stable
    return {"archs": kept["archs"], "every": kept["every"], **summary(history(state), rule)}


def probe_summary(state: dict[str, Any], epochs: int) -> str:
    """The end of training's line on the probe: stable and since when, or not, and what continues it."""
    record = probe_record(state)
    if not record["evaluations"]:
        return "[train] probe: not scored yet"
    tau = "-" if record["last_tau"] is None else f"{record['last_tau']:.2f}"
    spread = "-" if record["last_spread"] is None else f"{record['last_spread']:.1f}"
    head = (
        f"[train] probe of {len(record['archs'])} architectures{_cost(state)}: tau {tau}, spread {spread} at "
        f"epoch {record['last_epoch']}"
    )
    since, rule = record["stable_since"], record["stop_when_stable"]
    if since is not None:
        ended = (
            f"; stopped at epoch {state['epoch']} of {epochs} by stop_when_stable" if state["epoch"] < epochs else ""
        )
        return f"{head}; stable (tau >= {record['threshold']:g}) since epoch {since}{ended}"
    more = "" if rule is None else f" (stop_when_stable {rule} has not held)"
    return (
        f"{head}; not stable yet{more}: more epochs may still change the ranking (the same command with a larger "
        f"train.epochs continues this run)"
    )


def _cost(state: dict[str, Any]) -> str:
    """`` (N evaluations, S s: P % of the training time)``: what scoring the probe cost this run."""
    evaluations = history(state)
    training_s = sum(float(m.get("epoch_time_s", 0.0)) for m in state.get("history", []))
    seconds, share = probe_cost(evaluations, training_s)
    if not seconds:
        return ""
    return f" ({len(evaluations)} evaluations, {seconds:.0f} s: {100 * share:.1f} % of the training time)"


def probe_table(state: dict[str, Any]) -> pa.Table:
    """One row per evaluation and architecture: epoch, architecture, its parameters, top-1 and 95 % interval,
    the images scored, and the evaluation's tau against the one before, spread and scoring time."""
    kept = state["probe"]
    rows = []
    for e in history(state):
        spread = e.spread()
        for key, params, top1, (lo, hi) in zip(kept["archs"], kept["params"], e.top1, e.intervals()):
            rows.append(
                {
                    "epoch": e.epoch,
                    "architecture": key,
                    "params": params,
                    "top1": top1,
                    "top1_low": lo,
                    "top1_high": hi,
                    "images": e.count,
                    "tau": e.tau,
                    "spread": spread,
                    "seconds": e.seconds,
                }  # fmt: skip
            )
    return pa.Table.from_pylist(rows, schema=PROBE_SCHEMA)


PROBE_SCHEMA = pa.schema(
    [
        ("epoch", pa.int32()),
        ("architecture", pa.string()),
        ("params", pa.int64()),
        ("top1", pa.float64()),
        ("top1_low", pa.float64()),
        ("top1_high", pa.float64()),
        ("images", pa.int64()),
        ("tau", pa.float64()),
        ("spread", pa.float64()),
        ("seconds", pa.float64()),
    ]  # fmt: skip
)


def write_probe_table(state: dict[str, Any], target: str) -> None:
    buffer = io.BytesIO()
    pq.write_table(probe_table(state), buffer)
    write_bytes(target, buffer.getvalue())
