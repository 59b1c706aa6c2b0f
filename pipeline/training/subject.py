"""What a training run trains: the supernet (one sampled subnet per step) or one stand-alone model.

``autoformer train`` trains the supernet; ``retrain``, ``finetune`` and the fidelity report's trials train one
architecture as the plain ``StaticViT`` the export writes, from scratch or from given weights. Both go through
the same loop (``worker.run_training``); a subject tells it what to run at each step and which scores to track.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np
import ray
import torch
from torch import nn

from pipeline.core.arch import Architecture
from pipeline.core.sampling import (
    largest_architecture,
    sample_architectures,
    smallest_architecture,
)
from pipeline.core.space import SearchSpace
from pipeline.core.task import Task
from pipeline.model.static import StaticViT
from pipeline.model.supernet_dir import DROP_KEYS, build_supernet, supernet_config
from pipeline.training.rules import sampling_rule
from pipeline.training.run_spec import MODEL, SUPERNET, SubjectSpec


@dataclasses.dataclass
class Subject:
    kind: str  # SUPERNET or MODEL
    model: nn.Module
    space: SearchSpace
    seed: int
    tracked: list[tuple[str, Architecture | None]]  # scored on the search split every epoch
    sampling: str = "uniform"  # a supernet's: uniform or sandwich (train.sampling)
    sandwich_random: int = 0

    def step_architectures(self, epoch: int, step: int) -> list[Architecture | None]:
        """The subnets of one training step (the same on every rank and every re-run); [None] for one model."""
        if self.kind == MODEL:
            return [None]
        return step_architectures(self.space, self.seed, epoch, step, self.sampling, self.sandwich_random)

    @property
    def unused_parameters(self) -> bool:
        """DDP must look for parameters a step did not use: a subnet leaves most of the supernet out."""
        return self.kind == SUPERNET


def step_architectures(
    space: SearchSpace, seed: int, epoch: int, step: int, sampling: str = "uniform", sandwich_random: int = 0
) -> list[Architecture]:
    """A supernet step's subnets, seeded by (seed, epoch, step): every rank draws them without communicating, and a
    resumed run repeats the draws it would have made. Uniform: one draw; sandwich: the largest, the smallest and
    ``sandwich_random`` draws."""
    return sampling_rule(sampling, sandwich_random).subnets(space, random.Random(f"{seed}:{epoch}:{step}"))


def drop_rates(model_section: dict[str, Any]) -> dict[str, float]:
    """The model section's regularisation, as a stand-alone model's constructor takes it."""
    return {k: model_section[k] for k in DROP_KEYS}


def logits(net: nn.Module, images: torch.Tensor, arch: Architecture | None) -> torch.Tensor:
    return net(images) if arch is None else net(images, arch)


def tracked_subnets(space: SearchSpace, seed: int, count: int) -> list[tuple[str, Architecture | None]]:
    """The fixed subnets whose search-split accuracy is reported every epoch (comparable across epochs)."""
    fixed = sample_architectures(space, count, seed=seed + 7919)
    return [("smallest", smallest_architecture(space)), ("largest", largest_architecture(space))] + [
        (f"subnet{i}", arch) for i, arch in enumerate(fixed)
    ]


def supernet_subject(task: Task, space: SearchSpace) -> Subject:
    """A freshly initialised supernet (seeded), with the tracked subnets of ``train.eval_subnets``."""
    seed, rules = task.train.seed, task.train.supernet
    torch.manual_seed(seed)
    model = build_supernet(supernet_config(space.to_dict(), task.model["sharing"], task.model))
    return Subject(
        SUPERNET,
        model,
        space,
        seed,
        tracked_subnets(space, seed, rules.eval_subnets),
        rules.sampling,
        rules.sandwich_random,
    )


def model_subject(task: Task, space: SearchSpace, spec: SubjectSpec) -> Subject:
    """One architecture as a ``StaticViT``: seeded fresh weights, or ``spec.init`` (a state dict of numpy
    arrays, already adapted to this task's image size and classes by the driver)."""
    arch = Architecture.from_dict(spec.architecture)
    rates = drop_rates(task.model)
    init = spec.init
    if isinstance(init, ray.ObjectRef):
        init = ray.get(init)
    if init is None:
        torch.manual_seed(task.train.seed)
        model = StaticViT(arch, spec.fixed, **rates)
    else:
        state = {k: torch.from_numpy(np.array(v)) for k, v in init.items()}
        model = StaticViT.from_state_dict(arch, spec.fixed, state, **rates)
    return Subject(MODEL, model, space, task.train.seed, [("model", None)])
