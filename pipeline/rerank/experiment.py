"""Re-ranking a search's shortlist: each candidate fine-tuned ``steps`` steps from its inherited weights with the
task's finetune recipe, then scored again on the search split; one Ray Tune trial per candidate, side by side as
the cluster allows (the evaluators are gone by then: their CPUs and GPUs are free).

The experiment lives inside the search run, named by its settings (``rerank-top4-steps100``): re-running the
search command resumes it (finished trials are kept; an unfinished one starts its few steps again), and other
settings make an experiment of their own beside it. Its plan (the shortlist, the steps, the recipe, the
supernet) is recorded, and a re-run that would change it under the same name is refused in one line. The test
split is not touched here: the exported models are scored on it once, at export.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from safetensors.torch import save_file

from pipeline.core.arch import Architecture
from pipeline.core.recorded import Rules, check_recorded, flatten
from pipeline.core.task import Task
from pipeline.model.supernet_dir import inherited_state
from pipeline.shared.progress import say
from pipeline.shared.ray_console import quiet_worker
from pipeline.shared.storage import join, read_json
from pipeline.training.session import tune_session
from pipeline.training.short_finetune import finetune_steps

PLAN_FILE = "rerank-plan.json"
WEIGHTS_FILE = "model.safetensors"  # a trial's fine-tuned weights, in its checkpoint


def experiment_name(top: int, steps: int) -> str:
    return f"rerank-top{top}-steps{steps}"


def rerank_trial(
    config: dict[str, Any], supernet_path: str, task: dict[str, Any], steps: int, gpu: bool, threads: int
) -> None:
    """One candidate: its inherited weights, ``steps`` steps of the finetune recipe, its search-split scores
    (reported with the weights as the trial's checkpoint)."""
    quiet_worker()
    torch.set_num_threads(threads)
    where = tune_session(gpu)
    candidate = config["candidate"]
    arch = Architecture.from_dict(candidate["arch"])
    init = inherited_state(supernet_path, arch)
    done = finetune_steps(Task.from_dict(task), arch, candidate["fixed"], init, steps, where)
    say(
        f"[rerank] {arch.key}: search top-1 {candidate['top1']:.4f} inherited -> {done.scores['top1']:.4f} after "
        f"{steps} steps ({done.seconds:.1f} s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        save_file(done.state, os.path.join(tmp, WEIGHTS_FILE))
        metrics = {**done.scores, "steps": steps, "train_loss": done.train_loss, "seconds": done.seconds}
        where.report(metrics, tmp)


def rerank_plan(supernet: str, task: Task, shortlisted: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """What fixes the re-ranked scores: a re-run must match it to resume."""
    return {
        "supernet": supernet,
        "architectures": [r["key"] for r in shortlisted],
        "steps": steps,
        "recipe": task.recipe("finetune").to_flat(),
        "splits": task.splits,
    }


def check_plan(run_path: str, plan: dict[str, Any]) -> bool:
    """True when ``run_path`` holds a re-ranking with this plan (resume it), False when there is none; another
    plan under the same name is refused, naming what differs."""
    recorded = read_json(join(run_path, PLAN_FILE))
    if recorded is None:
        return False
    hint = "re-ranking applies to the search it was run on: re-run with the same task and supernet"
    check_recorded(f"re-ranking {run_path!r}", flatten(recorded), flatten(plan), Rules(), hint)
    return True
