"""The Ray Tune experiment of a search: one trial per candidate, the ``EvolutionSearcher`` deciding which.

Trials are light clients: each hands its candidate to the router of the evaluator pool and reports what the
evaluator measured. Tune keeps every trial's result and the searcher's state on storage, which is what lets
``Tuner.restore`` continue an interrupted search, and what the records are collected from afterwards.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import signal
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
from ray import tune

from pipeline.core.arch import Architecture
from pipeline.core.records import CandidateRecord, candidate_record
from pipeline.search.evolution import Strategy
from pipeline.search.searcher import EvolutionSearcher
from pipeline.search.tracking import tune_callbacks
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.ray_console import quiet_tune
from pipeline.shared.storage import filesystem, join, read_bytes, write_bytes
from pipeline.shared.tracking import TrackingPlan

SEARCHER_STATE_PREFIX = "searcher-state-"  # Tune's name for the searcher's saved state in the experiment directory
# A trial whose actor dies (a crash, the OOM killer) is run again: the trial only asks the router, so a re-run asks
# for the same candidate once more and it is recorded once. Without retries Tune records such a trial as failed
# (Ray 2.60: FailureConfig(max_failures=0) is the default). A candidate whose evaluation itself raises is retried
# as often, then recorded as failed.
TRIAL_RETRIES = 3


class SearchInterrupted(KeyboardInterrupt):
    """The Tune run stopped before the strategy finished (Ctrl-C, SIGTERM, a lost driver connection); its state is
    saved. ``summary`` says what was kept, the message adds how to continue in this library's words (the CLI says
    it in its own). An interruption, not bad input: the CLI exits as interrupted programs do (130, or 143)."""

    def __init__(self, run_path: str, evaluated: int) -> None:
        self.summary = f"search {run_path!r} was interrupted after {evaluated} candidates; its state is saved"
        super().__init__(f"{self.summary}: run the search again with resume=True to continue")


# What a trial adds from its config to the evaluator's measurements, so that every logger callback (--log) has
# the candidate's counts and generation beside its scores, latency and node.
REPORTED_CONFIG = ("params", "macs", "generation", "latency_ms_pred")


def evaluate_trial(config: dict[str, Any], router_name: str, max_latency_ms: float | None) -> None:
    """One Tune trial: hand the candidate to the router and report what the evaluator measured."""
    router = ray.get_actor(router_name)
    measured = ray.get(router.evaluate.remote(config["arch"], max_latency_ms))
    tune.report({**measured, **{k: config[k] for k in REPORTED_CONFIG if k in config}})


def candidate_dirname(trial) -> str:
    return f"candidate_{trial.trial_id}"


# Ray gives the head node 1 of this marker resource, and no other node any (Ray 2.60).
HEAD_RESOURCE = "node:__internal_head__"


def trial_resources(concurrency: int) -> dict[str, float]:
    """What one trial asks Ray for: no CPU, and a ``1/concurrency`` share of the head's marker resource.

    Trials are light clients of the router, so they run on the head node, and:
    - exactly ``concurrency`` trial actors can exist, so Tune reuses them instead of starting new ones (a new
      process per candidate costs more than a digits evaluation);
    - they never take CPUs an evaluator needs. Asking for CPUs, they did: Tune starts an actor per queued trial
      while there is room (about one every 1.5 s here), so the CPUs of the node that replaced a lost one went
      to trial actors, the lost evaluator's replacement could not start, and the search waited forever;
    - losing a worker node loses no trial. Tune 2.60 records a trial as failed, retries left or not, when a
      second call to its dead actor fails after the first had already queued the retry.
    """
    return {"CPU": 0.0, HEAD_RESOURCE: max(1, 10_000 // concurrency) / 10_000}  # Ray counts in 1e-4 steps


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """Where and how the Tune experiment of a search runs (the ``Strategy`` it drives is passed beside it)."""

    storage: str
    name: str
    resume: bool  # restore the saved experiment instead of starting one
    router_name: str  # the evaluator pool's router, which every trial calls
    concurrency: int  # trials at once (one per evaluator, at most a generation)
    max_latency_ms: float | None  # the limit the evaluators check on measured latency (None: none, or predicted)
    tracking: TrackingPlan  # its logger callbacks are saved with the experiment: a restored one keeps them

    @property
    def run_path(self) -> str:
        return join(self.storage, self.name)


def run_experiment(strategy: Strategy, spec: ExperimentSpec) -> list[CandidateRecord]:
    """Run (or restore) the Tune experiment ``spec.run_path`` to the end; the records of every candidate."""
    quiet_tune()  # with verbose=0 and no tables: the searcher prints per generation, the trials per epoch
    trainable = tune.with_resources(
        tune.with_parameters(evaluate_trial, router_name=spec.router_name, max_latency_ms=spec.max_latency_ms),
        trial_resources(spec.concurrency),
    )
    if spec.resume:
        say(f"[search] resuming {spec.run_path}")
        tuner = tune.Tuner.restore(spec.run_path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = _new_tuner(strategy, spec, trainable)
    handler = signal.getsignal(signal.SIGINT)
    try:
        grid = tuner.fit()
    finally:  # Tune's own Ctrl-C handler stays installed after fit(): a Ctrl-C during export would be swallowed
        signal.signal(signal.SIGINT, handler)
    saved = saved_strategy(spec.run_path)
    records = records_from_results(grid)
    if saved is None or not saved.finished:
        # Tune stops gracefully on Ctrl-C (or a lost driver connection) and returns; its state is on storage.
        raise SearchInterrupted(spec.run_path, len(records))
    return records


def _new_tuner(strategy: Strategy, spec: ExperimentSpec, trainable: Any) -> tune.Tuner:
    """A new experiment: the searcher hands out the strategy's candidates, ``concurrency`` trials at once, each
    retried ``TRIAL_RETRIES`` times when its actor dies."""
    s = strategy.settings
    say(
        f"[search] {s.algorithm} ({s.objective}), population {s.population}, {s.generations} generations, "
        f"{s.budget:,} evaluations at most; run {spec.run_path}"
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=EvolutionSearcher(strategy),
            num_samples=-1,
            max_concurrent_trials=spec.concurrency,
            reuse_actors=True,
            trial_dirname_creator=candidate_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.storage,
            verbose=0,
            callbacks=tune_callbacks(spec.tracking),
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
        ),
    )


def search_exists(run_path: str) -> bool:
    return tune.Tuner.can_restore(run_path)


def saved_strategy(run_path: str) -> Strategy | None:
    """The strategy as Tune last saved it in the experiment directory (its ``searcher-state-*.pkl``)."""
    found = _newest_state(run_path, SEARCHER_STATE_PREFIX)
    return None if found is None else pickle.loads(read_bytes(found))["strategy"]


SEARCH_GENERATOR_PREFIX = "search_gen_state-"  # Tune's own state of the searcher wrapper (whether it finished)


def _newest_state(run_path: str, prefix: str) -> str | None:
    """The newest of Tune's state files named ``prefix*`` in the experiment directory (path or URI), or None."""
    fs, root = filesystem(run_path)
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        return None
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=False))
    # named by session start time; mtimes are not (storage sync rewrites all files)
    names = sorted(i.base_name for i in infos if i.base_name.startswith(prefix))
    return join(run_path, names[-1]) if names else None


def extend_saved_search(run_path: str, generations: int) -> None:
    """Let a saved search run on to ``generations``: the pickled strategy takes the new count (its random state,
    memo and generation continue), and Tune's searcher wrapper forgets that the searcher had said it was done.
    Both are Tune's files in the experiment directory, rewritten before ``Tuner.restore`` reads them."""
    import ray.cloudpickle as cloudpickle  # what Tune pickles its searcher wrapper's state with

    found = _newest_state(run_path, SEARCHER_STATE_PREFIX)
    if found is None:
        raise UserError(f"resume: search {run_path!r} has no saved searcher state to extend")
    state = pickle.loads(read_bytes(found))
    strategy: Strategy = state["strategy"]
    strategy.settings = dataclasses.replace(strategy.settings, generations=generations)
    write_bytes(found, pickle.dumps(state))
    wrapper = _newest_state(run_path, SEARCH_GENERATOR_PREFIX)
    if wrapper is not None:
        wrapper_state = cloudpickle.loads(read_bytes(wrapper))
        wrapper_state["finished"] = False
        write_bytes(wrapper, cloudpickle.dumps(wrapper_state))


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
