"""Driver side of re-ranking: the shortlist's Tune experiment, started or resumed, and what it leaves (each
candidate's re-ranked scores and fine-tuned weights)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune
from safetensors.torch import load_file

from pipeline.core.task import Task
from pipeline.rerank.experiment import (
    PLAN_FILE,
    WEIGHTS_FILE,
    check_plan,
    experiment_name,
    rerank_plan,
    rerank_trial,
)
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.ray_console import own_trial_errors, quiet_tune, trial_cause
from pipeline.shared.storage import absolute, join, write_json


@dataclasses.dataclass
class Reranked:
    run_path: str  # the experiment inside the search run
    steps: int
    scores: dict[str, dict[str, Any]]  # key -> top1, top1_low, top1_high, images, hits, top5, loss, steps, seconds
    weights: dict[str, dict[str, torch.Tensor]]  # key -> the fine-tuned model's state dict
    wall_s: float


@dataclasses.dataclass(frozen=True)
class RerankRequest:
    """A re-ranking: which candidates (``shortlisted``, records with per-image hits), how many steps each, on
    which supernet and task, with what each trial may use (``cpus``, one GPU with ``gpu``)."""

    task: Task
    supernet: str
    shortlisted: list[dict[str, Any]]
    fixed: dict[str, Any]  # the space's fixed parts (what a stand-alone model needs besides its architecture)
    top: int
    steps: int
    cpus: float = 1.0
    gpu: bool = False


def rerank(request: RerankRequest, search_path: str) -> Reranked:
    """Fine-tune and re-score the shortlist in the experiment ``search_path/rerank-topK-stepsN`` (resumed when
    it exists with the same plan)."""
    start = time.perf_counter()
    request = dataclasses.replace(request, supernet=absolute(request.supernet))  # trials run elsewhere
    name = experiment_name(request.top, request.steps)
    run_path = join(search_path, name)
    unpaired = [r["key"] for r in request.shortlisted if not r.get("hits")]
    if unpaired:
        raise UserError(
            f"rerank_top {request.top}: candidate {unpaired[0]} of {search_path!r} has no per-image search scores "
            f"(a search recorded before they were kept); nothing to re-rank against"
        )
    plan = rerank_plan(request.supernet, request.task, request.shortlisted, request.steps)
    resume = check_plan(run_path, plan) and tune.Tuner.can_restore(run_path)
    recipe = request.task.recipe("finetune")
    say(
        f"[rerank] {'resuming' if resume else 'fine-tuning'} {len(request.shortlisted)} shortlisted candidate(s), "
        f"{request.steps} steps each from inherited weights (finetune recipe: lr {recipe.optim.lr:g}, batch "
        f"{recipe.batch_size}), then scoring each on the search split: {run_path}"
    )
    tuner = _tuner(request, search_path, name, run_path, resume)
    if not resume:
        write_json(join(run_path, PLAN_FILE), plan)
    with own_trial_errors():
        grid = tuner.fit()
    scores, weights = _collect(grid, run_path)
    return Reranked(run_path, request.steps, scores, weights, time.perf_counter() - start)


def _tuner(request: RerankRequest, search_path: str, name: str, run_path: str, resume: bool) -> tune.Tuner:
    quiet_tune()  # verbose=0 and no tables: each trial prints its one line
    trainable = tune.with_resources(
        tune.with_parameters(
            rerank_trial,
            supernet_path=request.supernet,
            task=request.task.for_phase("finetune").to_dict(),
            steps=request.steps,
            gpu=request.gpu,
            threads=max(1, int(request.cpus)),
        ),
        {"CPU": request.cpus, **({"GPU": 1} if request.gpu else {})},
    )
    if resume:
        return tune.Tuner.restore(run_path, trainable, resume_unfinished=True, resume_errored=True)
    configs = [
        {"arch": r["arch"], "key": r["key"], "top1": r["top1"], "fixed": request.fixed} for r in request.shortlisted
    ]
    return tune.Tuner(
        trainable,
        param_space={"candidate": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=lambda t: f"rerank_{t.trial_id}"),
        run_config=tune.RunConfig(
            name=name, storage_path=search_path, verbose=0, failure_config=tune.FailureConfig(max_failures=1)
        ),
    )


def _collect(grid: tune.ResultGrid, run_path: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """Each finished trial's scores and weights; a trial that failed twice is one line (re-running retries it)."""
    scores, weights = {}, {}
    for result in grid:
        candidate = (result.config or {}).get("candidate")
        if candidate is None:
            continue
        metrics = dict(result.metrics or {})
        if result.error is not None or "top1" not in metrics or result.checkpoint is None:
            why = trial_cause(result.error) if result.error is not None else "it did not finish"
            raise UserError(
                f"re-ranking {candidate['key']} in {run_path!r} failed ({why}); the same command retries it"
            )
        scores[candidate["key"]] = {
            k: metrics[k]
            for k in ("top1", "top1_low", "top1_high", "images", "hits", "top5", "loss", "steps", "seconds")
        }
        with result.checkpoint.as_directory() as directory:
            weights[candidate["key"]] = load_file(str(Path(directory) / WEIGHTS_FILE))
    return scores, weights
