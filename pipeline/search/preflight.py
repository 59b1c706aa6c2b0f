"""Checks a search makes before it starts anything: each fails in seconds with one line, writing nothing.

The task must describe the images and space the supernet was trained on, the constraints must leave part of
the space, the run name must be new (or, resuming, exist), the search split must be the one held out
of training, and a latency limit must admit at least the smallest architecture.
"""

from __future__ import annotations

from typing import Any

import ray

from pipeline.core.sampling import smallest_architecture
from pipeline.core.space import MODEL_OPTION_KEYS, SearchSpace
from pipeline.core.task import Task
from pipeline.data.arrays import check_same_splits
from pipeline.model.cream import IMAGENET_TRAIN
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say


def check_task_matches(task: Task, supernet_config: dict[str, Any], where: str) -> SearchSpace:
    """The supernet's space, after checking the task describes the same images and space."""
    space = SearchSpace.from_dict(supernet_config["space"], source=where)
    task_space = task.space(num_classes=space.num_classes)
    # how the model computes (pooling, eps, bias layout) is the supernet's own; the rest must be the task's
    shape = lambda s: {k: v for k, v in s.to_dict().items() if k not in MODEL_OPTION_KEYS}  # noqa: E731
    if shape(task_space) != shape(space):
        raise UserError(
            f"{where}: task {task.name!r} gives search space {task_space.name!r} at {task_space.image_size} px with {task_space.num_classes} classes, "
            f"but the supernet was trained on {space.name!r} at {space.image_size} px with {space.num_classes} classes; use the training task"
        )
    return space


def check_search_split(supernet_config: dict[str, Any], summary: dict[str, Any], where: str) -> None:
    """The search split must be the one held out of supernet training; a supernet trained on every image of its
    dataset (an imported reference supernet) has no held-out split, which is said once instead."""
    if supernet_config.get("training_data") == IMAGENET_TRAIN:
        say(
            f"[search] note: {where} was trained on every ImageNet-1k training image (an imported reference "
            f"supernet), so the search split carved from ImageNet train was seen in training, as in the reference "
            f"code's own search; scores on it are optimistic, rankings are what the search uses"
        )
        return
    check_same_splits(supernet_config.get("splits", {}), summary, where)


def check_population(population: int, space: SearchSpace) -> None:
    """A generation cannot hold more distinct architectures than the space has (it would search for minutes
    before giving up)."""
    size = space.num_architectures()
    if population > size:
        raise UserError(
            f"search.population {population:,} exceeds the {size:,} architectures of space {space.name!r}; "
            f"choose at most {size:,}"
        )


def check_run_name(run_path: str, exists: bool, resume: bool) -> None:
    """A new search needs a new run name; resuming needs one taken (a typo would otherwise start afresh)."""
    if exists and not resume:
        raise UserError(f"search {run_path!r} already exists; resume it, or choose another run name")
    if resume and not exists:
        raise UserError(f"resume: there is no search at {run_path!r} to resume")


def check_latency_feasible(router: Any, space: SearchSpace, max_latency_ms: float) -> None:
    """Time the smallest architecture on the evaluators: nothing to search if even it is over the limit."""
    result = ray.get(router.evaluate.remote(smallest_architecture(space).to_dict(), None))
    if result["latency_ms"] > max_latency_ms:
        raise UserError(
            f"max_latency_ms {max_latency_ms:g}: even the smallest architecture of search space {space.name!r} takes "
            f"{result['latency_ms']:.2f} ms per batch on the evaluators; nothing to search"
        )
