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
import functools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray
from safetensors.numpy import load_file

from pipeline.core.latency_model import LatencyModel
from pipeline.core.recorded import Rules, check_recorded
from pipeline.core.records import CandidateRecord
from pipeline.core.sampling import smallest_architecture
from pipeline.core.space import SearchSpace
from pipeline.core.task import Task
from pipeline.data.arrays import SplitArrays
from pipeline.data.ray_ingest import load_split
from pipeline.model.supernet_dir import local_supernet, read_supernet_config, read_weights
from pipeline.search.evaluator_pool import default_evaluator_count, start_pool
from pipeline.search.evolution import Strategy
from pipeline.search.experiment import ExperimentSpec, extend_saved_search, run_experiment, search_exists
from pipeline.search.preflight import (
    check_latency_feasible,
    check_population,
    check_run_name,
    check_search_split,
    check_task_matches,
)
from pipeline.search.settings import EvaluatorResources, Rerank, SearchSettings
from pipeline.shared.cluster import check_resources, connect
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.storage import is_uri, join, read_bytes, resolve_storage, run_lock, safe_run_name, write_bytes
from pipeline.shared.tracking import plan_tracking


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
            "latency_model": self.settings.latency_model,
        }


RERANK_KEYS = {f.name for f in dataclasses.fields(Rerank)}  # after the search: a finished search may be re-ranked
SETTINGS_FILE = "search-settings.json"  # a search run's settings, fixed when it starts
# What may differ when a search is resumed: more generations extend it; ``extensions`` records those extensions.
RESUME_RULES = Rules(ignored=("extensions",), may_grow=("search.generations",))
RESUME_HINT = "only search.generations may grow: re-run with the same settings to resume it, or choose another run name"


def recorded_settings(settings: SearchSettings, supernet: str) -> dict[str, Any]:
    """What fixes a search's results (as JSON values): a resumed run must have exactly these."""
    record = {
        "supernet": supernet if is_uri(supernet) else str(Path(supernet).resolve()),
        **{f"search.{k}": v for k, v in settings.to_section().items() if k not in RERANK_KEYS},
    }
    return json.loads(json.dumps(record))


def check_recorded_settings(
    run_path: str, settings: dict[str, Any], resume: bool
) -> tuple[int | None, dict[str, Any] | None]:
    """A new search records its settings; a resumed one must match them (one line naming what differs), so
    the results, their Parquet footers and the report never mix settings or claim ones they were not run with.

    The one change that extends a run instead of altering it is more generations: the candidates evaluated so
    far are exactly those the longer run would have evaluated first (the strategy's random stream continues).
    It is allowed and recorded (``extensions`` in the settings file). Returns the earlier generation count when
    the run is extended (else None) and the settings file's new content (None when it stays as it is); nothing
    is written here, so a check that fails later (resources) leaves the run as it was.
    """
    if not resume:
        return None, settings
    try:
        recorded = json.loads(read_bytes(join(run_path, SETTINGS_FILE)).decode("utf-8"))
    except (FileNotFoundError, OSError):
        return None, None  # a search from before settings were recorded: nothing to compare with
    grown = check_recorded(f"search {run_path!r}", recorded, settings, RESUME_RULES, RESUME_HINT)
    if not grown:
        return None, None
    extended_from = grown[0].recorded
    recorded["search.generations"] = settings["search.generations"]
    recorded.setdefault("extensions", []).append(
        {"generations_from": extended_from, "generations_to": settings["search.generations"], "at": _now()}
    )
    return extended_from, recorded


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def load_latency_model(settings: SearchSettings, space: SearchSpace) -> LatencyModel | None:
    """The search's latency model, checked against the space and batch; a latency limit it excludes everything
    under fails here."""
    if settings.latency_model is None:
        return None
    where = f"latency model {settings.latency_model!r}"
    model = LatencyModel.load(settings.latency_model)
    model.check_matches(space, settings.latency_batch, where)
    limit = settings.constraints.max_latency_ms
    smallest = smallest_architecture(space)
    if limit is not None and model.predict(smallest) > limit:
        raise UserError(
            f"max_latency_ms {limit:g}: {where} predicts {model.predict(smallest):.3g} ms for the smallest architecture "
            f"of search space {space.name!r}; nothing to search"
        )
    return model


@dataclasses.dataclass
class Prepared:
    """What the pre-flight checks leave for the search: the supernet (config, space, weights), the strategy with
    generation 0 built, the latency model if any, and the search split."""

    supernet_config: dict[str, Any]
    space: SearchSpace
    strategy: Strategy
    latency_model: LatencyModel | None
    split: SplitArrays
    weights: dict[str, Any]


def prepare(task: Task, supernet: str, settings: SearchSettings, run_path: str, resume: bool) -> Prepared:
    """Every check that needs no cluster, in the order users meet them: the supernet fits the task, the
    constraints leave part of the space, the run name is free (or, resuming, taken), the search split is the one
    held out of training; then the weights, read once and checked against their checksum."""
    with local_supernet(supernet) as supernet_dir:
        sconf = read_supernet_config(supernet_dir)
        where = f"supernet {supernet!r}"
        space = check_task_matches(task, sconf, where)
        settings.constraints.check_feasible(space)
        check_population(settings.strategy.population, space)
        latency_model = load_latency_model(settings, space)
        predict = latency_model.predict if latency_model is not None else None
        strategy = Strategy(space, settings.constraints, settings.strategy, predict)
        strategy.start()  # generation 0 now: constraints that no architecture meets fail here
        check_run_name(run_path, search_exists(run_path), resume)
        split = load_split(task, "search", batch_size=settings.batch_size, deferred=True)
        check_search_split(sconf, split.summary, where)
        weights = read_weights(supernet_dir, sconf, load_file)
    return Prepared(sconf, space, strategy, latency_model, split, weights)


def claim_evaluators(resources: EvaluatorResources) -> int:
    """Join (or start) the cluster and check it can hold the evaluators; how many there will be."""
    joined = connect(resources.gpu, "search")
    count = resources.count or default_evaluator_count(resources.gpu, resources.cpus)
    unit = {"CPU": resources.cpus, **({"GPU": 1.0} if resources.gpu else {})}
    check_resources(unit, count, "evaluators", "search", joined)
    return count


def write_settings_record(
    run_path: str, settings_file: dict[str, Any] | None, extended_from: int | None, generations: int
) -> None:
    """Write the settings file (a new search, or an extended one), and let an extended search's saved state run
    on to ``generations``; after every check has passed, so a refused run is left as it was."""
    if settings_file is not None:
        write_bytes(join(run_path, SETTINGS_FILE), (json.dumps(settings_file, indent=2) + "\n").encode("utf-8"))
    if extended_from is not None:
        extend_saved_search(run_path, generations)
        say(
            f"[search] extending {run_path} from {extended_from} to {generations} generations "
            f"(recorded in {SETTINGS_FILE})"
        )


def evaluator_kwargs(task: Task, settings: SearchSettings, prepared: Prepared) -> dict[str, Any]:
    """What every evaluator is built with besides the weights and the split."""
    return {
        "supernet_config": {k: prepared.supernet_config[k] for k in ("space", "sharing", "regularization")},
        "normalization": {"mean": task.data["mean"], "std": task.data["std"]},
        "batch_size": settings.batch_size,
        "latency_batch": settings.latency_batch,
        "latency_repeats": settings.latency_repeats,
        "time_latency": prepared.latency_model is None,
    }


def search_with_pool(
    task: Task,
    settings: SearchSettings,
    resources: EvaluatorResources,
    count: int,
    prepared: Prepared,
    spec: ExperimentSpec,
    record: Callable[[], None],
) -> SearchOutcome:
    """Start the pool of ``count`` evaluators, check a timed latency limit on it, ``record`` the run's settings,
    run the Tune experiment, and stop the pool whatever happens. The settings are recorded only after the limit
    is known to admit the smallest architecture: a refused search leaves no run directory behind."""
    kwargs = evaluator_kwargs(task, settings, prepared)
    router, infos, refs = start_pool(
        spec.router_name, count, resources.gpu, resources.cpus, prepared.weights, prepared.split, kwargs
    )
    prepared.weights = {}  # the object store holds them now: not kept twice in the driver's memory
    try:
        if spec.max_latency_ms is not None:
            check_latency_feasible(router, prepared.space, spec.max_latency_ms)
        record()
        start = time.perf_counter()
        records = run_experiment(prepared.strategy, spec)
        tune_s = time.perf_counter() - start
        replaced = ray.get(router.replaced_count.remote())
    finally:
        ray.kill(router)
        del refs  # held until here: a restarted router starts its evaluators from them
    return SearchOutcome(
        spec.run_path, records, settings, prepared.space, prepared.supernet_config, infos, replaced, tune_s
    )


def run_search(
    task: Task,
    supernet: str,
    settings: SearchSettings,
    resources: EvaluatorResources,
    storage: str | None = None,
    name: str | None = None,
    resume: bool = False,
    log: Sequence[str] = (),
) -> SearchOutcome:
    """Search ``supernet`` under run ``storage/name`` (resuming it with ``resume``); ``log``: experiment
    trackers that get one result per candidate. Everything that can be refused is checked before the cluster is
    asked for anything, and nothing is written before the cluster is known to hold the evaluators (and, with a
    timed latency limit, before the evaluators have timed the smallest architecture under it)."""
    storage = resolve_storage(storage)
    name = safe_run_name(name or f"{task.name}-search")
    run_path = join(storage, name)
    tracking = plan_tracking(log, storage, name, by_tune=True)
    prepared = prepare(task, supernet, settings, run_path, resume)
    with run_lock(run_path, "search"):
        extended_from, settings_file = check_recorded_settings(run_path, recorded_settings(settings, supernet), resume)
        count = claim_evaluators(resources)
        spec = ExperimentSpec(
            storage=storage,
            name=name,
            resume=resume,
            router_name=f"autoformer-router-{name}",
            concurrency=min(count, settings.strategy.population),
            max_latency_ms=settings.constraints.max_latency_ms if prepared.latency_model is None else None,
            tracking=tracking,
        )
        generations = settings.strategy.generations
        record = functools.partial(write_settings_record, run_path, settings_file, extended_from, generations)
        return search_with_pool(task, settings, resources, count, prepared, spec, record)
