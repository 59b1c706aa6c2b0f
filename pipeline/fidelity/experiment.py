"""The fidelity experiment: does the supernet rank architectures the way stand-alone training does?

Each architecture is one Ray Tune trial: it scores the architecture with weights inherited from the supernet
(search and test split), then trains it from scratch as a stand-alone model with the task's ``retrain``
recipe (the same loop as ``autoformer retrain``, in the trial's process) and scores that on both splits.
Trials run side by side as the cluster allows; their checkpoints make the experiment resumable: running the
same command again restores it and continues the unfinished trials where they stopped.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import torch
from ray import tune

from pipeline.core.arch import Architecture
from pipeline.core.complexity import count_macs, count_params
from pipeline.core.recorded import Rules, check_recorded, flatten
from pipeline.core.task import Task
from pipeline.core.training_settings import TrainSettings, check_recipe
from pipeline.fidelity.inherited import inherited_top1, scoring_splits
from pipeline.model.supernet_dir import inherited_state, load_supernet
from pipeline.shared.progress import say
from pipeline.shared.ray_console import own_trial_errors, quiet_tune, quiet_worker, trial_cause
from pipeline.shared.storage import join, read_json, write_json
from pipeline.training.run_spec import MODEL, SubjectSpec, WorkerConfig
from pipeline.training.session import tune_session
from pipeline.training.short_finetune import finetune_steps
from pipeline.training.worker import run_training

PLAN_FILE = "fidelity-plan.json"  # what the experiment was started with: re-runs must match it
PLAN_KEYS = ("supernet", "architectures", "standalone")  # compared as they are (the recipe and splits by key)


def inherited_scores(supernet_path: str, arch: Architecture, task: Task, gpu: bool) -> dict[str, float]:
    """Search and test top-1 of ``arch`` with its weights inherited from the supernet (no training)."""
    device = tune_session(gpu).device
    supernet, _ = load_supernet(supernet_path, map_location=device)
    return inherited_top1(supernet, arch, task, scoring_splits(task), device)


def reranked_scores(
    supernet_path: str, arch: Architecture, fixed: dict[str, Any], task: Task, steps: Sequence[int], gpu: bool
) -> list[float]:
    """Search top-1 of ``arch`` after each of ``steps`` fine-tuning steps from its inherited weights (the finetune
    recipe in ``task``, each count a run of its own from the inherited weights): what re-ranking would score."""
    init = inherited_state(supernet_path, arch)
    scores = []
    for n in steps:
        done = finetune_steps(task, arch, fixed, init, n, tune_session(gpu))
        say(f"[fidelity {arch.key}] re-ranked: search top-1 {done.scores['top1']:.4f} after {n} steps")
        scores.append(done.scores["top1"])
    return scores


def fidelity_trial(
    config: dict[str, Any],
    supernet_path: str,
    task: dict[str, Any],
    gpu: bool,
    threads: int,
    rerank_task: dict[str, Any] | None = None,
    rerank_steps: Sequence[int] = (),
) -> None:
    """One architecture: inherited scores (and re-ranked ones after each of ``rerank_steps`` fine-tuning steps),
    then stand-alone training to the end (resuming a checkpoint)."""
    quiet_worker()
    candidate = config["candidate"]
    run_task = Task.from_dict(task)
    arch = Architecture.from_dict(candidate["arch"])
    torch.set_num_threads(threads)
    extra = {"params": candidate["params"], "macs": candidate["macs"], "key": arch.key}
    seed_index = candidate.get("seed_index", 0)
    if seed_index == 0:  # the other seeds' trainings are the ceiling's; the inherited scores are taken once
        extra.update(inherited_scores(supernet_path, arch, run_task, gpu))
        if rerank_steps and rerank_task is not None:  # seeded: a resumed trial scores them again alike
            finetune_task = Task.from_dict(rerank_task)
            scores = reranked_scores(supernet_path, arch, candidate["fixed"], finetune_task, rerank_steps, gpu)
            extra.update(rerank_steps=list(rerank_steps), rerank_search_top1_by_steps=scores)
    else:  # the same recipe, another seed: how far two stand-alone trainings of one architecture agree
        run_task = dataclasses.replace(
            run_task, train=dataclasses.replace(run_task.train, seed=run_task.train.seed + seed_index)
        )
    config = WorkerConfig(
        task=run_task,
        subject=SubjectSpec(MODEL, arch.to_dict(), candidate["fixed"]),
        phase=f"fidelity {arch.key}" + (f" seed +{seed_index}" if seed_index else ""),
        attempt=uuid.uuid4().hex,
        threads=threads,
        extra_metrics=extra,
    )
    run_training(config, tune_session(gpu))


def read_plan(run_path: str) -> dict[str, Any] | None:
    """The plan an experiment at ``run_path`` was started with, or None when there is none."""
    return read_json(join(run_path, PLAN_FILE))


def check_plan(run_path: str, plan: dict[str, Any]) -> bool:
    """True when ``run_path`` holds an experiment started with this plan (resume it); False when there is none.
    A run name already used for another plan is refused, naming what differs."""
    recorded = read_plan(run_path)
    if recorded is None:
        return False
    flat = lambda p: {  # noqa: E731 - a plan from before --seeds trained one seed, re-ranked none
        **flatten({"splits": p.get("splits") or {}}),
        **{k: p.get(k) for k in PLAN_KEYS},
        "seeds": p.get("seeds") or 1,
        "rerank_steps": p.get("rerank_steps") or [],
    }
    check_recorded(f"run {run_path!r}", flat(recorded), flat(plan), Rules())
    check_recipe(f"run {run_path!r}", recorded.get("recipe") or {}, TrainSettings.from_flat(plan["recipe"]), "retrain")
    if plan.get("rerank_steps"):
        recipe = TrainSettings.from_flat(plan["rerank_recipe"])
        check_recipe(f"run {run_path!r}", recorded.get("rerank_recipe") or {}, recipe, "finetune")
    return True


def fidelity_plan(
    supernet_path: str,
    task: Task,
    archs: list[tuple[Architecture, str]],
    seeds: int = 1,
    rerank_steps: Sequence[int] = (),
) -> dict[str, Any]:
    """What fixes an experiment's results: a re-run must match it to resume."""
    plan = {
        "supernet": supernet_path,
        "architectures": [a.key for a, _ in archs],
        "recipe": task.recipe("retrain").to_flat(),
        "splits": task.splits,
        "seeds": seeds,
        "rerank_steps": list(rerank_steps),
    }
    if rerank_steps:
        plan["rerank_recipe"] = task.recipe("finetune").to_flat()
    return plan


def trial_configs(archs: list[tuple[Architecture, str]], fixed: dict[str, Any], seeds: int) -> list[dict[str, Any]]:
    """One Tune trial per architecture and seed (seed 0 first: the trials a one-seed report has)."""
    return [
        {
            "arch": a.to_dict(),
            "picked": picked,
            "params": count_params(a, fixed),
            "macs": count_macs(a, fixed),
            "fixed": fixed,
            "seed_index": seed_index,
        }
        for seed_index in range(seeds)
        for a, picked in archs
    ]


def run_fidelity(
    supernet_path: str,
    task: Task,
    archs: list[tuple[Architecture, str]],
    fixed: dict[str, Any],
    storage: str,
    name: str,
    cpus_per_trial: float,
    gpu: bool,
    seeds: int = 1,
    rerank_steps: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """Run (or resume) the experiment ``storage/name`` over ``archs`` (each with where it was picked from), each
    trained with ``seeds`` seeds (the task's, then the next ones) and, with ``rerank_steps``, also scored after
    each of those fine-tuning steps from its inherited weights. The caller has checked the plan against the run
    (``check_plan``) before starting Ray."""
    run_path = join(storage, name)
    run_task = task.for_phase("retrain")
    plan = fidelity_plan(supernet_path, task, archs, seeds, rerank_steps)
    resume = check_plan(run_path, plan) and tune.Tuner.can_restore(run_path)
    quiet_tune()  # with verbose=0 and no tables: the searcher prints per generation, the trials per epoch
    resources = {"CPU": cpus_per_trial, **({"GPU": 1} if gpu else {})}
    trainable = tune.with_resources(
        tune.with_parameters(
            fidelity_trial,
            supernet_path=supernet_path,
            task=run_task.to_dict(),
            gpu=gpu,
            threads=max(1, int(cpus_per_trial)),
            rerank_task=task.for_phase("finetune").to_dict() if rerank_steps else None,
            rerank_steps=tuple(rerank_steps),
        ),
        resources,
    )
    if resume:
        say(f"[fidelity] resuming {run_path}")
        tuner = tune.Tuner.restore(run_path, trainable, resume_unfinished=True, resume_errored=True)
    else:
        configs = trial_configs(archs, fixed, seeds)
        tuner = tune.Tuner(
            trainable,
            param_space={"candidate": tune.grid_search(configs)},
            tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=lambda t: f"arch_{t.trial_id}"),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0),
        )
        write_json(join(run_path, PLAN_FILE), plan)
    with own_trial_errors():
        grid = tuner.fit()
    return [row for row in map(_row, grid) if row is not None]


def _row(result: Any) -> dict[str, Any] | None:
    """One trial's row: its architecture, where it was picked from, its metrics, and why it failed if it did."""
    config = (result.config or {}).get("candidate")
    if config is None:
        return None
    metrics = dict(result.metrics or {})
    done = result.error is None and "test_top1" in metrics
    why = None if done else trial_cause(result.error) if result.error is not None else "it did not finish"
    return {
        "arch": Architecture.from_dict(config["arch"]), "picked": config["picked"], "metrics": metrics,
        "done": done, "seed_index": config.get("seed_index", 0), "error": why,
    }  # fmt: skip
