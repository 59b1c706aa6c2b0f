"""The Ray Tune experiment of a search: one trial per candidate, the ``EvolutionSearcher`` deciding which.

Trials are light clients: each hands its candidate to the router of the evaluator pool and reports what the
evaluator measured. Tune keeps every trial's result and the searcher's state on storage, which is what lets
``Tuner.restore`` continue an interrupted search, and what the records are collected from afterwards.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
from ray import tune

from pipeline.core.arch import Architecture
from pipeline.core.records import CandidateRecord, candidate_record
from pipeline.search.evolution import Strategy
from pipeline.search.searcher import EvolutionSearcher
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.storage import filesystem, join

SEARCHER_STATE_PREFIX = "searcher-state-"  # Tune's name for the searcher's saved state in the experiment directory


class SearchInterrupted(UserError):
    pass


def evaluate_trial(config: dict[str, Any], router_name: str, max_latency_ms: float | None) -> None:
    """One Tune trial: hand the candidate to the router and report what the evaluator measured."""
    router = ray.get_actor(router_name)
    tune.report(ray.get(router.evaluate.remote(config["arch"], max_latency_ms)))


def candidate_dirname(trial) -> str:
    return f"candidate_{trial.trial_id}"


def trial_cpus(evaluators_cpus: float, concurrency: int) -> float:
    """CPUs per trial: the cluster's CPUs left beside the evaluators, shared by the concurrent trials (at most 1).

    Trials only wait on the router, but asking for a mere sliver lets Tune start actors for trials it then
    runs on cached ones: on small machines that process churn costs more than the evaluations. Filling the
    leftover CPUs exactly leaves no room for it.
    """
    left = ray.cluster_resources().get("CPU", 1) - evaluators_cpus
    return round(min(1.0, max(0.01, left / concurrency)), 2)


def run_experiment(
    strategy: Strategy,
    router_name: str,
    max_latency_ms: float | None,
    concurrency: int,
    trial_cpu: float,
    storage: str,
    name: str,
    resume: bool,
) -> list[CandidateRecord]:
    """Run (or restore) the Tune experiment ``storage/name`` to the end; the records of every candidate."""
    run_path = join(storage, name)
    os.environ.setdefault(
        "RAY_AIR_NEW_OUTPUT", "0"
    )  # with verbose=0: no Tune tables; the searcher prints per generation
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    trainable = tune.with_resources(
        tune.with_parameters(evaluate_trial, router_name=router_name, max_latency_ms=max_latency_ms),
        {"CPU": trial_cpu},
    )
    if resume:
        say(f"[search] resuming {run_path}")
        tuner = tune.Tuner.restore(run_path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        s = strategy.settings
        say(
            f"[search] {s.algorithm} ({s.objective}), population {s.population}, {s.generations} generations, "
            f"{s.budget:,} evaluations at most; run {run_path}"
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=EvolutionSearcher(strategy),
                num_samples=-1,
                max_concurrent_trials=concurrency,
                reuse_actors=True,
                trial_dirname_creator=candidate_dirname,
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0),
        )
    grid = tuner.fit()
    saved = saved_strategy(run_path)
    records = records_from_results(grid)
    if saved is None or not saved.finished:
        # Tune stops gracefully on Ctrl-C (or a lost driver connection) and returns; its state is on storage.
        raise SearchInterrupted(
            f"search {run_path!r} was interrupted after {len(records)} candidates; its state is saved: run the same "
            f"command again with --resume (autoformer run resumes by itself) to continue"
        )
    return records


def search_exists(run_path: str) -> bool:
    return tune.Tuner.can_restore(run_path)


def saved_strategy(run_path: str) -> Strategy | None:
    """The strategy as Tune last saved it in the experiment directory (its ``searcher-state-*.pkl``)."""
    fs, root = filesystem(run_path)
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        return None
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=False))
    states = sorted(
        (i for i in infos if i.base_name.startswith(SEARCHER_STATE_PREFIX) and i.base_name.endswith(".pkl")),
        key=lambda i: i.base_name,  # named by session start time; mtimes are not (storage sync rewrites all files)
    )
    if not states:
        return None
    with fs.open_input_stream(states[-1].path) as f:
        return pickle.loads(f.read())["strategy"]


def records_from_results(grid) -> list[CandidateRecord]:
    """One record per finished trial (Tune's own result store: it includes trials finished before a resume)."""
    records = []
    for result in grid:
        config = result.config or {}
        if "arch" not in config:
            continue
        metrics = dict(result.metrics or {})
        if result.error is not None:
            metrics["status"] = "error"
        metrics.setdefault("status", "error")
        metrics.setdefault("trial_id", getattr(result, "path", "") and Path(result.path).name)
        arch = Architecture.from_dict(config["arch"])
        records.append(
            candidate_record(
                arch,
                config["generation"],
                config["origin"],
                config["params"],
                config["macs"],
                metrics,
                config.get("latency_ms_pred", math.nan),
            )
        )
    records.sort(key=lambda r: (r["generation"], r["key"]))
    return records
