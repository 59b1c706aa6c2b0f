"""The fidelity report as one phase: pick the architectures, check the run, then score them (inherited and
stand-alone, as a resumable Tune experiment) or reuse an earlier report's stand-alone scores.

The phase reads no result table and writes none: the pipeline (``pipeline.run.fidelity_report``) hands it a
search's front and an earlier report's rows, and writes what it returns (``fidelity.parquet``, ``.json``, ``.png``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from pipeline.core.arch import Architecture, validate_fits, validate_in_space
from pipeline.core.recorded import Rules, check_recorded, flatten
from pipeline.core.space import SearchSpace
from pipeline.core.strata import spread_by_params
from pipeline.core.task import Task
from pipeline.core.training_settings import check_recipe
from pipeline.data.arrays import check_same_splits
from pipeline.fidelity.experiment import PLAN_FILE, check_plan, fidelity_plan, run_fidelity
from pipeline.fidelity.inherited import rescored_results
from pipeline.model.supernet_dir import load_supernet, local_supernet, read_supernet_config
from pipeline.shared.cluster import connect
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.storage import absolute, join, resolve_storage, run_lock, safe_run_name, write_json
from pipeline.training.launch import local_data_root, validate_data


@dataclasses.dataclass(frozen=True)
class FidelityRequest:
    """One fidelity report.

    Args:
        supernet: the supernet directory (path or URI) whose inherited weights are judged.
        archs: architectures spread over its size range (default 16; none with ``standalone``).
        front: a search's front to add (read by the caller from its ``pareto.parquet``).
        standalone: an earlier report reused for its stand-alone scores: (its run path, its plan, its rows).
        storage, name: where the run goes (default name TASK-fidelity).
        overrides: ``section.key=value`` on the supernet's recorded task (e.g. retrain.epochs).
        cpus_per_trial, gpu: what each Tune trial asks for.
        seed: of the architecture picks and the bootstrap intervals.
        seeds: stand-alone trainings per architecture (2: the ceiling, two trainings against each other).
        rerank_steps: also score each architecture after each of these fine-tuning step counts from its
            inherited weights (the finetune recipe): how re-ranking a search's shortlist would rank them.
    """

    supernet: str
    archs: int | None = None
    front: tuple[Architecture, ...] = ()
    standalone: tuple[str, dict[str, Any], list[dict[str, Any]]] | None = None
    storage: str | None = None
    name: str | None = None
    overrides: tuple[str, ...] = ()
    cpus_per_trial: float = 1.0
    gpu: bool = False
    seed: int = 0
    seeds: int = 1
    rerank_steps: tuple[int, ...] = ()


@dataclasses.dataclass
class FidelityResults:
    run_path: str
    name: str
    results: list[dict[str, Any]]  # one per architecture: arch, picked, metrics, done
    planned: int
    retrain_epochs: int


def run_fidelity_report(request: FidelityRequest) -> FidelityResults:
    """Check everything (architectures in the supernet, splits, the recipe against a reused report, the run
    name), then score: a Tune experiment, or the reused report's architectures rescored with inherited weights."""
    request = dataclasses.replace(request, supernet=absolute(request.supernet))  # trials run elsewhere
    if request.cpus_per_trial <= 0:
        raise UserError(f"cpus_per_trial {request.cpus_per_trial}: must be positive")
    if request.standalone is not None and (request.archs is not None or request.front):
        raise UserError("standalone takes its run's architectures: leave out archs and the front")
    if not isinstance(request.seeds, int) or request.seeds < 1:
        raise UserError(f"seeds {request.seeds!r}: stand-alone trainings per architecture, an integer >= 1")
    if request.standalone is not None and request.seeds != 1:
        raise UserError("standalone takes its run's stand-alone trainings, with their seeds: leave out seeds")
    bad = [n for n in request.rerank_steps if not isinstance(n, int) or isinstance(n, bool) or n < 1]
    if bad:
        raise UserError(f"rerank_steps {bad[0]!r}: fine-tuning steps, integers >= 1")
    if request.standalone is not None and request.rerank_steps:
        raise UserError("rerank_steps fine-tunes in the experiment's trials: leave out standalone")
    task, space, config = _recorded_task(request.supernet, list(request.overrides))
    source_rows = _standalone_rows(request.standalone, task) if request.standalone is not None else None
    archs = 16 if request.archs is None else request.archs
    picked = _fidelity_architectures(space, config, archs, request.seed, request.front, source_rows)
    checked = validate_data(task.for_phase("retrain"))
    if config.get("splits"):
        check_same_splits(config["splits"], checked["splits"], f"fidelity of supernet {request.supernet!r}")
    storage = resolve_storage(request.storage)
    name = safe_run_name(request.name or f"{task.name}-fidelity")
    run_path = join(storage, name)
    plan = fidelity_plan(request.supernet, task, picked, request.seeds, request.rerank_steps)
    epochs = task.recipe("retrain").epochs
    if request.standalone is not None:
        plan["standalone"] = request.standalone[0]
    say(_announce(request, len(picked), archs, space, epochs, run_path))
    check_plan(run_path, plan)  # a taken run name is refused before Ray starts
    with run_lock(run_path, "fidelity run"):
        if source_rows is not None:
            device = torch.device("cuda" if request.gpu and torch.cuda.is_available() else "cpu")
            model, _ = load_supernet(request.supernet, map_location=device)
            results = rescored_results(model, task.for_phase("retrain"), source_rows, device, say)
            write_json(join(run_path, PLAN_FILE), plan)
        else:
            connect(request.gpu, "fidelity")
            fixed = checked["space"].fixed_parts()
            results = run_fidelity(
                request.supernet, task, picked, fixed, storage, name, request.cpus_per_trial, request.gpu,
                request.seeds, request.rerank_steps,
            )  # fmt: skip
    return FidelityResults(run_path, name, results, len(picked), epochs)


def _announce(request: FidelityRequest, count: int, archs: int, space: SearchSpace, epochs: int, run_path: str) -> str:
    if request.standalone is not None:
        return (
            f"[fidelity] {count} architectures with the stand-alone scores of {request.standalone[0]} "
            f"({epochs} epochs each); scoring their inherited weights; run {run_path}"
        )
    front = f", the rest from a search's front ({len(request.front)})" if request.front else ""
    per_trial = f"{request.cpus_per_trial:g} CPU{' + 1 GPU' if request.gpu else ''}"
    times = f" with {request.seeds} seeds" if request.seeds > 1 else ""
    if request.rerank_steps:
        times += (
            f", and scored after {'/'.join(map(str, request.rerank_steps))} fine-tuning steps from inherited weights"
        )
    return (
        f"[fidelity] {count} architectures ({archs} spread over {space.name}'s size range{front}), each retrained "
        f"{epochs} epochs from scratch{times}; {per_trial} per trial; run {run_path}"
    )


def _recorded_task(supernet: str, overrides: list[str] | None) -> tuple[Task, SearchSpace, dict]:
    """The task a supernet recorded (with ``overrides``, its data root made absolute), its space, its config."""
    with local_supernet(supernet) as directory:
        config = read_supernet_config(directory)
    if not config.get("task"):
        raise UserError(f"supernet {supernet!r} records no task: it was not written by 'autoformer train'")
    task = local_data_root(Task.from_dict(config["task"]).with_overrides(overrides or []))
    return task, SearchSpace.from_dict(config["space"], source=f"supernet {supernet!r}"), config


def _fidelity_architectures(
    space: SearchSpace,
    config: dict,
    archs: int,
    seed: int,
    front: tuple[Architecture, ...],
    source_rows: list[dict] | None,
) -> list[tuple[Architecture, str]]:
    """The architectures to compare, each with where it was picked from: a stand-alone run's, or ``archs``
    spread over the size range; plus a search's ``front``. Each must be in the supernet."""
    fits = validate_fits if config["sharing"] == "entangled" else validate_in_space
    if source_rows is not None:
        picked = [(Architecture.from_json(r["architecture"]), r["picked"]) for r in source_rows]
        for arch, _ in picked:
            fits(arch, space)
    else:
        picked = [(a, "stratum") for a in spread_by_params(space, archs, seed)]
    for arch in front:
        fits(arch, space)
        if arch.key not in {a.key for a, _ in picked}:
            picked.append((arch, "front"))
    return picked


def _standalone_rows(standalone: tuple[str, dict[str, Any], list[dict[str, Any]]], task: Task) -> list[dict]:
    """The finished rows of an earlier fidelity report, after checking that its stand-alone trainings are the
    ones this task would run: the same retrain recipe and the same splits."""
    source, plan, rows = standalone
    if plan.get("standalone"):
        source = plan["standalone"]  # its scores came from there: name the run that trained them
    subject, hint = f"standalone run {source!r}", "its stand-alone scores are not this task's"
    check_recipe(subject, plan.get("recipe") or {}, task.recipe("retrain"), "retrain", hint)
    splits = lambda s: flatten({"splits": s})  # noqa: E731
    check_recorded(subject, splits(plan.get("splits") or {}), splits(task.splits), Rules(), hint)
    finished = sum(r["status"] == "done" for r in rows)
    planned = max(len(plan.get("architectures", [])), len(rows))
    if finished < planned:
        raise UserError(
            f"standalone: {source!r} has {finished} of {planned} architectures finished; "
            f"run its fidelity command again to finish it first"
        )
    return rows
