"""The search's settings as one typed object, built once from the task's ``search`` section.

The task schema (``pipeline.core.task``) checks each value of the section when the task loads, and holds the
defaults; command-line flags reach it as ``search.KEY=VALUE`` overrides, so a value is checked once, in one place,
on its way in. ``SearchSettings.from_task`` splits the section by key into its parts, each a dataclass whose
fields are the section's keys by the same names: the strategy's (``evolution.Settings``), the constraints
(``Constraints``), and the evaluation sizes here. The parts check only what relates their fields (min_params <=
max_params, mutations + crossovers <= population), which the schema cannot. ``EvaluatorResources`` is what a run
asks of the cluster (not part of the task).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pipeline.core.task import Task
from pipeline.search.constraints import Constraints
from pipeline.search.evolution import Settings
from pipeline.shared.errors import UserError

PARTS = ("strategy", "constraints", "rerank")  # the nested parts of SearchSettings; its other fields are keys


@dataclasses.dataclass(frozen=True)
class Rerank:
    """Re-ranking the shortlist after the search: ``rerank_top`` candidates (the best, a pareto front, the best's
    ties; ``pipeline.core.shortlist``) fine-tuned ``rerank_steps`` steps each from their inherited weights; off at ``rerank_top`` 0. It does not
    change which candidates the search evaluates, so a finished search can be re-ranked with other values."""

    rerank_top: int
    rerank_steps: int

    @property
    def on(self) -> bool:
        return self.rerank_top > 0


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """A search's settings: the strategy's and the constraints' parts, and the evaluation sizes."""

    strategy: Settings
    constraints: Constraints
    rerank: Rerank
    batch_size: int  # images per forward pass when scoring
    latency_batch: int  # images per timed forward pass
    latency_repeats: int  # how long a candidate is timed: 10 ms of blocked_autorange each (the median counts)
    latency_model: str | None = None  # a latency model file: predicted latency, no timing per candidate

    @classmethod
    def from_task(cls, task: Task) -> SearchSettings:
        """The task's search section as typed settings.

        ``parents``, ``mutations`` and ``crossovers`` are shares of a generation: they are capped to fit a
        smaller ``population`` (at most the population as parents, half of it as mutants, the rest as
        crossovers), so ``search.population=6`` works without restating the paper's 10/25/25.
        """
        s = task.search
        population = s["population"]
        mutations = min(s["mutations"], population // 2)
        shares = {
            "parents": min(s["parents"], population),
            "mutations": mutations,
            "crossovers": min(s["crossovers"], population - mutations),
        }
        own = {f.name: s[f.name] for f in dataclasses.fields(cls) if f.name not in PARTS}
        strategy = Settings(**{**_keys_of(Settings, s), **shares})
        return cls(strategy, Constraints(**_keys_of(Constraints, s)), Rerank(**_keys_of(Rerank, s)), **own)

    def to_section(self) -> dict[str, Any]:
        """Every key of the search section with the value this search runs with (the capped shares included),
        as a run records it."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in PARTS}
        rerank = dataclasses.asdict(self.rerank)
        return {**dataclasses.asdict(self.strategy), **self.constraints.to_dict(), **rerank, **own}


def _keys_of(part: type, section: Mapping[str, Any]) -> dict[str, Any]:
    """The section's values for the fields of ``part`` (a dataclass whose fields are section keys)."""
    return {f.name: section[f.name] for f in dataclasses.fields(part)}


@dataclasses.dataclass(frozen=True)
class EvaluatorResources:
    """What the evaluators ask of the cluster: how many, and a GPU or CPUs each."""

    count: int | None = None  # None: one per GPU with ``gpu``, else one per CPU the cluster has beyond one
    gpu: bool = False
    cpus: float = 1.0  # Ray CPUs reserved per evaluator (torch threads = max(1, floor))

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise UserError(f"evaluators {self.count}: must be at least 1")
        if not self.cpus > 0:
            raise UserError(f"cpus per evaluator {self.cpus:g}: must be positive")
