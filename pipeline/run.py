"""The whole pipeline, and a search with its result files, as functions: what ``autoformer run`` and
``autoformer search`` call, and what scripts and notebooks call (``pipeline.run_pipeline``, ``pipeline.search_supernet``).

Phase 1 trains (or reuses) the supernet, phase 2 searches it (resuming an interrupted search), phase 3 exports
the chosen models, scores them once on the test split, and writes the Parquet tables and the picture. Progress
goes to stdout as it happens; the returned values carry what a caller prints or inspects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pipeline.core.arch import Architecture
from pipeline.core.latency_model import LatencyModel
from pipeline.core.shortlist import shortlist
from pipeline.core.task import Task
from pipeline.fidelity.experiment import PLAN_FILE, read_plan
from pipeline.fidelity.report import FidelityRequest, run_fidelity_report
from pipeline.fidelity.summary import describe, summarize
from pipeline.latency.build import BuildSettings, open_profiler
from pipeline.model.supernet_dir import (
    EXPORT_DIR,
    trained_supernet_config,
)
from pipeline.rerank.launch import Reranked, RerankRequest, rerank
from pipeline.results.fidelity import FIDELITY_FILE, fidelity_rows, read_fidelity, write_fidelity
from pipeline.results.report import SearchReport, write_report
from pipeline.results.tables import PARETO_FILE, read_table
from pipeline.search.experiment import saved_strategy, search_exists
from pipeline.search.launch import SearchOutcome, run_search
from pipeline.search.settings import EvaluatorResources, SearchSettings
from pipeline.shared.arguments import require_type
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.storage import absolute, is_uri, join, resolve_storage
from pipeline.training.launch import train_supernet
from pipeline.training.run_spec import RunSpec


@dataclasses.dataclass
class SearchRun:
    outcome: SearchOutcome
    report: SearchReport
    search_s: float  # checks, evaluator start-up and the Tune run
    export_s: float  # export, test scoring and the result files
    rerank_s: float = 0.0  # fine-tuning and re-scoring the shortlist (search.rerank_top)


@dataclasses.dataclass
class PipelineRun:
    supernet: str  # the exported supernet directory (path or URI)
    search: SearchRun
    wall_s: float


def search_supernet(
    task: Task,
    supernet: str,
    resources: EvaluatorResources | None = None,
    storage: str | None = None,
    name: str | None = None,
    resume: bool = False,
    log: Sequence[str] = (),
) -> SearchRun:
    """Search ``supernet`` with the task's search settings, then export, test-score and write the results;
    ``log``: experiment trackers that get one result per candidate (tensorboard, mlflow, wandb)."""
    require_type(task, Task, "search_supernet: task", "a Task (from pipeline.load_task)")
    settings = SearchSettings.from_task(task)
    return _search_and_report(task, supernet, settings, resources or EvaluatorResources(), storage, name, resume, log)


def _search_and_report(
    task: Task,
    supernet: str,
    settings: SearchSettings,
    resources: EvaluatorResources,
    storage: str | None,
    name: str | None,
    resume: bool,
    log: Sequence[str],
) -> SearchRun:
    start = time.perf_counter()
    outcome = run_search(task, supernet, settings, resources, storage=storage, name=name, resume=resume, log=log)
    search_s = time.perf_counter() - start
    evaluated = len(outcome.records)
    compute = sum(r["eval_s"] for r in outcome.records if not math.isnan(r["eval_s"]))
    replaced = f"; {outcome.replaced_evaluators} evaluator(s) replaced" if outcome.replaced_evaluators else ""
    say(
        f"[search] done: {evaluated} candidates in {search_s:.1f} s ({evaluated / max(search_s, 1e-9):.1f}/s; "
        f"evaluation compute {compute:.1f} s on {len(outcome.evaluators)} evaluator(s){replaced})"
    )
    reranked = rerank_shortlist(task, supernet, settings, resources, outcome)
    start = time.perf_counter()
    with exported_latency(settings, outcome) as measure:
        report = write_report(
            outcome.run_path, outcome.records, outcome.metadata(supernet), task, supernet, resources.gpu, measure,
            reranked,
        )  # fmt: skip
    export_s = time.perf_counter() - start
    say(f"[export] done in {export_s:.1f} s")
    return SearchRun(outcome, report, search_s, export_s, reranked.wall_s if reranked else 0.0)


def rerank_shortlist(
    task: Task, supernet: str, settings: SearchSettings, resources: EvaluatorResources, outcome: SearchOutcome
) -> Reranked | None:
    """With ``search.rerank_top``: the shortlist fine-tuned and scored again (None when it is off or empty)."""
    if not settings.rerank.on:
        return None
    picked = shortlist(outcome.records, settings.strategy.objective, settings.rerank.rerank_top)
    if not picked:
        say("[rerank] no candidate satisfied the constraints: nothing to re-rank")
        return None
    request = RerankRequest(
        task, supernet, picked, outcome.space.fixed_parts(), settings.rerank.rerank_top,
        settings.rerank.rerank_steps, resources.cpus, resources.gpu,
    )  # fmt: skip
    done = rerank(request, outcome.run_path)
    say(f"[rerank] done: {len(done.scores)} candidate(s) in {done.wall_s:.1f} s")
    return done


@contextlib.contextmanager
def exported_latency(settings: SearchSettings, outcome: SearchOutcome) -> Iterator[Callable | None]:
    """With a latency model, a function that measures an exported model on the model's device (its profiler
    placed there once for all exports); without one, None (the evaluators measured every candidate)."""
    if settings.latency_model is None:
        yield None
        return
    model = LatencyModel.load(settings.latency_model)
    profile = BuildSettings(model.device["name"], model.runtime, model.batch, model.threads)
    say(f"[export] measuring the exported models on {profile.device} ({model.runtime}, batch {model.batch})")
    with open_profiler(outcome.space, profile) as call:
        yield lambda static: call("model_ms", static)


def run_pipeline(
    task: Task,
    workers: int = 1,
    resources: EvaluatorResources | None = None,
    storage: str | None = None,
    log: Sequence[str] = (),
) -> PipelineRun:
    """Train (or reuse) the supernet, search it (resuming an interrupted search), export the chosen models.

    Runs are named after the task (``TASK-supernet``, ``TASK-search``) under ``storage``; calling it again
    continues where the last call stopped. ``log``: experiment trackers both phases also log to.
    """
    require_type(task, Task, "run_pipeline: task", "a Task (from pipeline.load_task)")
    resources = resources or EvaluatorResources()
    settings = SearchSettings.from_task(task)  # bad search settings fail before hours of training
    storage = resolve_storage(storage)
    train_name, search_name = f"{task.name}-supernet", f"{task.name}-search"
    supernet = join(storage, train_name, EXPORT_DIR)
    start = time.perf_counter()
    done = trained_supernet_config(supernet)
    if done is not None and "source" in done:  # imported (e.g. a reference checkpoint): never trained over
        say(f"[run] phase 1/3: using the imported supernet {supernet} ({done['source'].get('format')})")
    elif done is not None and done.get("epochs") == task.train.epochs:
        say(f"[run] phase 1/3: supernet already trained ({done['epochs']} epochs): {supernet}")
    else:
        say(f"[run] phase 1/3: training the supernet ({task.train.epochs} epochs)")
        run = RunSpec(workers=workers, gpu=resources.gpu, storage=storage, name=train_name, log=tuple(log))
        supernet = train_supernet(task, run).export_path
        say(f"[run] supernet trained in {time.perf_counter() - start:.1f} s: {supernet}")
    search_path = join(storage, search_name)
    resume = search_exists(search_path)
    saved = saved_strategy(search_path) if resume else None
    if not resume:
        state = "search"
    elif saved is not None and saved.finished:
        state = "search already complete: collecting its results"
    else:
        state = "resuming the interrupted search"
    say(f"[run] phase 2/3: {state} (phase 3/3, export, follows)")
    searched = _search_and_report(task, supernet, settings, resources, storage, search_name, resume, log)
    wall_s = time.perf_counter() - start
    say(f"[run] all phases done in {wall_s:.1f} s")
    return PipelineRun(supernet, searched, wall_s)


@dataclasses.dataclass
class FidelityRun:
    run_path: str
    rows: list[dict]
    summary: dict
    wall_s: float


def fidelity_report(
    supernet: str,
    archs: int | None = None,
    candidates: str | None = None,
    storage: str | None = None,
    name: str | None = None,
    overrides: list[str] | None = None,
    cpus_per_trial: float = 1.0,
    gpu: bool = False,
    seed: int = 0,
    standalone: str | None = None,
    seeds: int = 1,
    rerank_steps: Sequence[int] = (),
) -> FidelityRun:
    """Inherited against stand-alone top-1 for ``archs`` architectures (default 16) spread over the supernet's size
    range (plus the Pareto front of a search's ``candidates`` run), as a resumable Tune experiment; writes
    ``fidelity.parquet``, ``fidelity.json`` and ``fidelity.png`` into the run. With ``standalone`` (an earlier
    fidelity run of the same task and retrain recipe), its architectures and stand-alone scores are reused and
    only this supernet's inherited scores are computed: minutes instead of hours, and one ground truth for every
    supernet compared against it. ``seeds`` 2 trains each architecture twice (the task's seed and the next): the
    two trainings' tau against each other is the ceiling any supernet's ranking can reach. ``rerank_steps`` also
    scores each architecture after those fine-tuning steps from its inherited weights (re-ranking's scores), each
    count with its tau against stand-alone."""
    start = time.perf_counter()
    supernet = absolute(supernet)  # the trials run in directories of their own
    front = tuple(_front_architectures(candidates)) if candidates is not None else ()
    request = FidelityRequest(
        supernet, archs, front, _earlier_report(standalone) if standalone else None, storage, name,
        tuple(overrides or ()), cpus_per_trial, gpu, seed, seeds, tuple(rerank_steps),
    )  # fmt: skip
    done = run_fidelity_report(request)
    rows = fidelity_rows(done.results)
    summary = summarize(rows, seed=seed, planned=done.planned)
    summary.update(supernet=supernet, retrain_epochs=done.retrain_epochs, seed=seed, seeds=seeds)
    if standalone is not None:
        summary["standalone"] = standalone
    failed = [_failure(r) for r in done.results if r.get("error")]
    if failed:
        summary["failed"] = failed  # why each unfinished training stopped (its error.txt has the traceback)
    write_fidelity(done.run_path, rows, summary, f"{done.name}: {describe(summary)}")
    return FidelityRun(done.run_path, rows, summary, time.perf_counter() - start)


def _failure(result: dict) -> str:
    seed = f" seed +{result['seed_index']}" if result.get("seed_index") else ""
    return f"{result['arch'].key}{seed}: {result['error']}"


def _earlier_report(source: str) -> tuple[str, dict, list[dict]]:
    """An earlier fidelity run's plan and rows, for reusing its stand-alone scores."""
    plan, rows = read_plan(source), read_fidelity(source)
    if plan is None or rows is None:
        raise UserError(f"standalone: {source!r} is not a fidelity run (no {PLAN_FILE} and {FIDELITY_FILE})")
    return source, plan, rows


def _front_architectures(candidates: str) -> list[Architecture]:
    """The architectures of a search run's Pareto front (its ``pareto.parquet``, on the params front)."""
    source = candidates if candidates.endswith(".parquet") else join(candidates, PARETO_FILE)
    if not is_uri(source) and not Path(source).is_file():
        raise UserError(f"candidates: {source!r} does not exist (a search run directory, or its {PARETO_FILE})")
    rows = [r for r in read_table(source).to_pylist() if r.get("on_params_front")]
    return [Architecture.from_json(r["architecture"], source=f"{source} row {r['key']}") for r in rows]
