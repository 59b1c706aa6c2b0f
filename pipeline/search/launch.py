"""Driver side of the search, as named steps: pre-flight checks, the evaluator pool, the Tune experiment, the
records it leaves.

Order matters for users: constraints that exclude the space, a supernet trained on other splits, or a run name
already taken fail *before* Ray starts anything; the evaluators load the supernet and the search split once,
before the first trial; then Tune drives the ``EvolutionSearcher``. Re-running with ``resume=True`` restores
the experiment (``Tuner.restore``) with the searcher's saved state, so finished candidates are not evaluated
again and the generation count continues.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray
from safetensors.numpy import load_file

from pipeline.core.records import CandidateRecord
from pipeline.core.space import SearchSpace
from pipeline.core.task import Task
from pipeline.data.arrays import load_split
from pipeline.model.supernet_dir import local_supernet, read_supernet_config, weights_path
from pipeline.search.evaluator_pool import default_evaluator_count, start_pool
from pipeline.search.evolution import Strategy
from pipeline.search.experiment import run_experiment, search_exists, trial_cpus
from pipeline.search.preflight import (
    check_latency_feasible,
    check_run_name,
    check_search_split,
    check_task_matches,
)
from pipeline.search.settings import EvaluatorResources, SearchSettings
from pipeline.shared.cluster import connect
from pipeline.shared.storage import join, resolve_storage


@dataclasses.dataclass
class SearchOutcome:
    run_path: str
    records: list[CandidateRecord]
    settings: SearchSettings
    space: SearchSpace
    supernet_config: dict[str, Any]
    evaluators: list[dict[str, Any]]  # each evaluator's node, pid, device and load time
    replaced_evaluators: int
    tune_s: float  # the Tune run alone (what orchestration overhead is measured against)

    def metadata(self, supernet: str) -> dict[str, Any]:
        """The search's provenance, as the result files record it."""
        return {
            "settings": dataclasses.asdict(self.settings.strategy),
            "constraints": self.settings.constraints.to_dict(),
            "space": self.space.name,
            "supernet": supernet,
            "supernet_epochs": self.supernet_config.get("epochs"),
            "evaluators": self.evaluators,
            "replaced_evaluators": self.replaced_evaluators,
        }


def run_search(
    task: Task,
    supernet: str,
    settings: SearchSettings,
    resources: EvaluatorResources,
    storage: str | None = None,
    name: str | None = None,
    resume: bool = False,
) -> SearchOutcome:
    storage = resolve_storage(storage)
    name = name or f"{task.name}-search"
    run_path = join(storage, name)
    with local_supernet(supernet) as supernet_dir:
        sconf = read_supernet_config(supernet_dir)
        where = f"supernet {supernet!r}"
        space = check_task_matches(task, sconf, where)
        settings.constraints.check_feasible(space)
        strategy = Strategy(space, settings.constraints, settings.strategy)
        strategy.start()  # generation 0 now: constraints that no architecture meets fail here
        check_run_name(run_path, search_exists(run_path), resume)
        split = load_split(task, "search", batch_size=settings.batch_size)
        check_search_split(sconf, split.summary, where)
        weights = load_file(str(weights_path(supernet_dir)))

    connect(resources.gpu, "search")
    count = resources.count or default_evaluator_count(resources.gpu, resources.cpus)
    evaluator_kwargs = {
        "supernet_config": {k: sconf[k] for k in ("space", "sharing", "regularization")},
        "normalization": {"mean": task.data["mean"], "std": task.data["std"]},
        "batch_size": settings.batch_size,
        "latency_batch": settings.latency_batch,
        "latency_repeats": settings.latency_repeats,
    }
    router_name = f"autoformer-router-{name}"
    router, infos = start_pool(router_name, count, resources.gpu, resources.cpus, weights, split, evaluator_kwargs)
    del weights
    try:
        if settings.constraints.max_latency_ms is not None:
            check_latency_feasible(router, space, settings.constraints.max_latency_ms)
        concurrency = min(count, settings.strategy.population)
        trial_cpu = trial_cpus(0 if resources.gpu else count * resources.cpus, concurrency)
        start = time.perf_counter()
        records = run_experiment(
            strategy, router_name, settings.constraints.max_latency_ms, concurrency, trial_cpu, storage, name, resume
        )
        tune_s = time.perf_counter() - start
        replaced = ray.get(router.replaced_count.remote())
    finally:
        ray.kill(router)
    return SearchOutcome(run_path, records, settings, space, sconf, infos, replaced, tune_s)
