"""Driver side of the search: check everything, start the evaluators, run the Tune experiment, collect records.

Order matters for users: constraints that exclude the space, a supernet trained on other splits, or a run name
already taken fail *before* Ray starts anything; the evaluators load the supernet and the search split once,
before the first trial; then Tune drives the ``EvolutionSearcher``. Re-running with ``resume=True`` restores
the experiment (``Tuner.restore``) with the searcher's saved state, so finished candidates are not evaluated
again and the generation count continues.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from pipeline.arch import Architecture
from pipeline.complexity import count_macs, count_params
from pipeline.errors import UserError
from pipeline.progress import say
from pipeline.sampling import smallest_architecture
from pipeline.search.constraints import Constraints
from pipeline.search.evolution import Settings, Strategy
from pipeline.search.split_data import check_same_splits, load_split
from pipeline.space import SearchSpace
from pipeline.task import Task
from pipeline.storage import filesystem, is_uri
from pipeline.training.launch import resolve_storage

SUPERNET_WEIGHTS = "supernet.safetensors"


@dataclasses.dataclass(frozen=True)
class EvaluatorSettings:
    count: int | None = None  # None: one per GPU with gpu, else one per CPU the cluster has beyond one
    gpu: bool = False
    cpus: float = 1.0  # Ray CPUs reserved per evaluator (torch threads = max(1, floor))
    batch_size: int = 512
    latency_batch: int = 64
    latency_repeats: int = 5
    trials_per_evaluator: int = 1  # concurrent Tune trials per evaluator
    die_after: int | None = None  # fault injection for tests: the first evaluator dies at its (N+1)-th candidate


@dataclasses.dataclass
class SearchOutcome:
    run_path: str
    records: list[dict[str, Any]]
    settings: Settings
    constraints: Constraints
    space: SearchSpace
    supernet_config: dict[str, Any]
    evaluators: list[dict[str, Any]]
    replaced_evaluators: int
    wall_s: float  # the whole call: checks, evaluator start-up, the Tune run
    tune_s: float  # the Tune run alone (what orchestration overhead is measured against)


@contextmanager
def local_supernet(path: str) -> Iterator[Path]:
    """The supernet directory on local disk (downloaded to a temporary directory when ``path`` is a URI)."""
    if not is_uri(path):
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"--supernet {path!r}: no supernet there (expected the 'supernet' directory that 'autoformer train' writes)")
        yield Path(path)
        return
    import pyarrow.fs

    with tempfile.TemporaryDirectory() as tmp:
        pyarrow.fs.copy_files(path.rstrip("/"), tmp)
        yield Path(tmp)


def check_task_matches(task: Task, supernet_config: dict[str, Any], where: str) -> SearchSpace:
    """The supernet's space, after checking the task describes the same images and space."""
    space = SearchSpace.from_dict(supernet_config["space"], source=where)
    task_space = task.space(num_classes=space.num_classes)
    if task_space.to_dict() != space.to_dict():
        raise UserError(
            f"{where}: task {task.name!r} gives search space {task_space.name!r} at {task_space.image_size} px with {task_space.num_classes} classes, "
            f"but the supernet was trained on {space.name!r} at {space.image_size} px with {space.num_classes} classes; use the training task"
        )
    return space


def default_evaluators(gpu: bool, cpus: float) -> int:
    import ray

    resources = ray.cluster_resources()
    if gpu:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int((resources.get("CPU", 1) - 1) // cpus))


def evaluate_trial(config: dict[str, Any], router_name: str, max_latency_ms: float | None) -> None:
    """One Tune trial: hand the candidate to the router and report what the evaluator measured."""
    import ray
    from ray import tune

    router = ray.get_actor(router_name)
    tune.report(ray.get(router.evaluate.remote(config["arch"], max_latency_ms)))


def run_search(
    task: Task,
    supernet: str,
    settings: Settings,
    constraints: Constraints,
    evaluators: EvaluatorSettings,
    storage: str | None = None,
    name: str | None = None,
    resume: bool = False,
) -> SearchOutcome:
    start = time.perf_counter()
    storage = resolve_storage(storage)
    name = name or f"{task.name}-search"
    run_path = f"{storage.rstrip('/')}/{name}"
    if evaluators.count is not None and evaluators.count < 1:
        raise UserError(f"--evaluators {evaluators.count}: must be at least 1")
    if evaluators.cpus <= 0:
        raise UserError(f"--cpus-per-evaluator {evaluators.cpus}: must be positive")
    with local_supernet(supernet) as supernet_dir:
        from pipeline.model.supernet_io import read_supernet_config

        sconf = read_supernet_config(supernet_dir)
        where = f"supernet {supernet!r}"
        space = check_task_matches(task, sconf, where)
        constraints.check_feasible(space)
        strategy = Strategy(space, constraints, settings)
        strategy.start()  # generation 0 now: constraints that no architecture meets fail here

        import ray
        from ray import tune

        from pipeline.search.searcher import EvolutionSearcher

        exists = tune.Tuner.can_restore(run_path)
        if exists and not resume:
            raise UserError(f"search {run_path!r} already exists; pass --resume to continue it, or choose another --name")
        if resume and not exists:
            raise UserError(f"--resume: there is no search at {run_path!r} to resume")

        split = load_split(task, "search", batch_size=evaluators.batch_size)
        check_same_splits(sconf.get("splits", {}), split.summary, where)
        from safetensors.numpy import load_file

        weights = load_file(str(supernet_dir / SUPERNET_WEIGHTS))

    joining = bool(os.environ.get("RAY_ADDRESS")) or ray.is_initialized()
    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    if evaluators.gpu and ray.cluster_resources().get("GPU", 0) < 1 and not joining:
        raise UserError("--gpu was given but this machine has no GPU; drop --gpu to evaluate on CPUs")
    count = evaluators.count or default_evaluators(evaluators.gpu, evaluators.cpus)

    from pipeline.search.evaluator_pool import Router

    refs = [ray.put(weights), ray.put(split.images), ray.put(split.labels)]
    del weights
    options: dict[str, Any] = {"num_cpus": evaluators.cpus, "scheduling_strategy": "SPREAD"}
    if evaluators.gpu:
        options["num_gpus"] = 1
    kwargs = {
        "supernet_config": {k: sconf[k] for k in ("space", "sharing", "regularization")},
        "normalization": {"mean": task.data["mean"], "std": task.data["std"]},
        "batch_size": evaluators.batch_size,
        "latency_batch": evaluators.latency_batch,
        "latency_repeats": evaluators.latency_repeats,
        "device": "cuda" if evaluators.gpu else "cpu",
        "threads": max(1, int(evaluators.cpus)),
    }
    router_name = f"autoformer-router-{name}"
    router = Router.options(name=router_name).remote(options, kwargs, refs, count, evaluators.die_after)
    try:
        say(f"[search] starting {count} evaluator(s) ({'1 GPU' if evaluators.gpu else f'{evaluators.cpus:g} CPU'} each), "
            f"loading the supernet and {len(split.labels):,} search images into each")
        ready_start = time.perf_counter()
        infos = ray.get(router.ready.remote())
        say(f"[search] {count} evaluator(s) ready after {time.perf_counter() - ready_start:.1f} s")
        for i, info in enumerate(infos):
            say(f"[search]   evaluator {i}: {info['node']} pid {info['pid']}, {info['device']}, ready in {info['load_s']:.1f} s")
        if constraints.max_latency_ms is not None:
            _check_latency_feasible(router, space, constraints.max_latency_ms)
        tune_start = time.perf_counter()
        records = _fit(task, settings, constraints, strategy, router_name, count, evaluators, storage, name, run_path, resume, EvolutionSearcher)
        tune_s = time.perf_counter() - tune_start
        stats = ray.get(router.stats.remote())
    finally:
        ray.kill(router)
    return SearchOutcome(run_path, records, settings, constraints, space, sconf, infos, stats["replaced"], time.perf_counter() - start, tune_s)


def _check_latency_feasible(router, space: SearchSpace, max_latency_ms: float) -> None:
    import ray

    smallest = smallest_architecture(space)
    result = ray.get(router.evaluate.remote(smallest.to_dict(), None))
    if result["latency_ms"] > max_latency_ms:
        raise UserError(
            f"max_latency_ms {max_latency_ms:g}: even the smallest architecture of search space {space.name!r} takes "
            f"{result['latency_ms']:.2f} ms per batch on the evaluators; nothing to search"
        )


def trial_cpus(evaluators: EvaluatorSettings, count: int, concurrency: int) -> float:
    """CPUs per trial: the cluster's CPUs left beside the evaluators, shared by the concurrent trials (at most 1).

    Trials only wait on the router, but asking for a mere sliver lets Tune start actors for trials it then
    runs on cached ones: on small machines that process churn costs more than the evaluations. Filling the
    leftover CPUs exactly leaves no room for it.
    """
    import ray

    left = ray.cluster_resources().get("CPU", 1) - (0 if evaluators.gpu else count * evaluators.cpus)
    return round(min(1.0, max(0.01, left / concurrency)), 2)


def _fit(task, settings, constraints, strategy, router_name, count, evaluators, storage, name, run_path, resume, searcher_class) -> list[dict[str, Any]]:
    import logging

    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables; the searcher prints per generation
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    concurrency = min(evaluators.trials_per_evaluator * count, settings.population)
    trainable = tune.with_resources(
        tune.with_parameters(evaluate_trial, router_name=router_name, max_latency_ms=constraints.max_latency_ms),
        {"CPU": trial_cpus(evaluators, count, concurrency)},
    )
    if resume:
        say(f"[search] resuming {run_path}")
        tuner = tune.Tuner.restore(run_path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        s = settings
        say(
            f"[search] {s.algorithm} ({s.objective}), population {s.population}, {s.generations} generations, "
            f"{s.budget:,} evaluations at most; run {run_path}"
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher_class(strategy),
                num_samples=-1,
                max_concurrent_trials=concurrency,
                reuse_actors=True,
                trial_dirname_creator=candidate_dirname,
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0),
        )
    grid = tuner.fit()
    saved = saved_strategy(run_path)
    records = records_from_results(grid, strategy.space)
    if saved is None or not saved.finished:
        # Tune stops gracefully on Ctrl-C (or a lost driver connection) and returns; its state is on storage.
        raise SearchInterrupted(
            f"search {run_path!r} was interrupted after {len(records)} candidates; its state is saved: run the same "
            f"command again with --resume (autoformer run resumes by itself) to continue"
        )
    return records


class SearchInterrupted(UserError):
    pass


def candidate_dirname(trial) -> str:
    return f"candidate_{trial.trial_id}"


def saved_strategy(run_path: str) -> Strategy | None:
    """The strategy as Tune last saved it in the experiment directory (its ``searcher-state-*.pkl``)."""
    import pickle

    import pyarrow.fs

    fs, root = filesystem(run_path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=False))
    states = sorted(
        (i for i in infos if i.base_name.startswith("searcher-state-") and i.base_name.endswith(".pkl")),
        key=lambda i: i.base_name,  # named by session start time; mtimes are not (storage sync rewrites all files)
    )
    if not states:
        return None
    with fs.open_input_stream(states[-1].path) as f:
        return pickle.loads(f.read())["strategy"]


def records_from_results(grid, space: SearchSpace) -> list[dict[str, Any]]:
    """One record per finished trial (Tune's own result store: it includes trials finished before a resume)."""
    records = []
    for result in grid:
        config = result.config or {}
        if "arch" not in config:
            continue
        arch = Architecture.from_dict(config["arch"])
        metrics = result.metrics or {}
        status = metrics.get("status", "error") if result.error is None else "error"
        records.append({
            "key": arch.key,
            "arch": arch.to_dict(),
            "generation": config["generation"],
            "origin": config["origin"],
            "params": count_params(arch, space),
            "macs": count_macs(arch, space),
            "status": status,
            **{k: metrics.get(k, float("nan")) for k in ("top1", "top5", "loss", "latency_ms", "eval_s")},
            "evaluator": metrics.get("evaluator", ""),
            "trial_id": metrics.get("trial_id", getattr(result, "path", "") and Path(result.path).name),
        })
    records.sort(key=lambda r: (r["generation"], r["key"]))
    return records
