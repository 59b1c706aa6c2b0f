"""The search's settings as typed values, built once from the task's ``search`` section.

The task schema (``pipeline.core.task``) validates each value of the section; command-line flags reach it
as ``search.KEY=VALUE`` overrides, so a value is checked once, in one place, on its way in.
``SearchSettings.from_task`` turns the section into the strategy's settings, the constraints and the
evaluation sizes; ``EvaluatorResources`` is what a run asks of the cluster (not part of the task).
"""

from __future__ import annotations

import dataclasses

from pipeline.core.task import Task
from pipeline.search.constraints import Constraints
from pipeline.search.evolution import Settings
from pipeline.shared.errors import UserError


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    strategy: Settings
    constraints: Constraints
    batch_size: int  # images per forward pass when scoring
    latency_batch: int  # images per timed forward pass
    latency_repeats: int  # timed passes per candidate (the median counts)
    latency_model: str | None = None  # a latency model file: predicted latency, no timing per candidate

    @classmethod
    def from_task(cls, task: Task) -> SearchSettings:
        """The task's search section as typed settings.

        ``parents``, ``mutations`` and ``crossovers`` are shares of a generation: they are capped to fit a
        smaller ``population`` (at most the population as parents, half of it as mutants, the rest as
        crossovers), so ``--population 6`` works without restating the paper's 10/25/25.
        """
        s = task.search
        population = s["population"]
        mutations = min(s["mutations"], population // 2)
        strategy = Settings(
            algorithm=s["algorithm"],
            objective=s["objective"],
            population=population,
            generations=s["generations"],
            parents=min(s["parents"], population),
            mutations=mutations,
            crossovers=min(s["crossovers"], population - mutations),
            depth_prob=s["depth_prob"],
            gene_prob=s["gene_prob"],
            mutation=s["mutation"],
            pareto_costs=tuple(s["pareto_costs"]),
            seed=s["seed"],
        )
        constraints = Constraints(s["min_params"], s["max_params"], s["max_macs"], s["max_latency_ms"])
        return cls(strategy, constraints, s["batch_size"], s["latency_batch"], s["latency_repeats"], s["latency_model"])


@dataclasses.dataclass(frozen=True)
class EvaluatorResources:
    """What the evaluators ask of the cluster: how many, and a GPU or CPUs each."""

    count: int | None = None  # None: one per GPU with ``gpu``, else one per CPU the cluster has beyond one
    gpu: bool = False
    cpus: float = 1.0  # Ray CPUs reserved per evaluator (torch threads = max(1, floor))

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise UserError(f"--evaluators {self.count}: must be at least 1")
        if self.cpus <= 0:
            raise UserError(f"--cpus-per-evaluator {self.cpus}: must be positive")
