"""The sandwich rule (BigNAS): each step trains the largest subnet, the smallest and ``random_draws`` uniform
draws, their gradients summed into one step (one all-reduce, whatever the number of subnets)."""

from __future__ import annotations

import random

from pipeline.core.arch import Architecture
from pipeline.core.sampling import sandwich_architectures
from pipeline.core.space import SearchSpace
from pipeline.training.rules.base import Rule


class SandwichSampling(Rule):
    def __init__(self, random_draws: int) -> None:
        self.random_draws = random_draws

    def subnets(self, space: SearchSpace, rng: random.Random) -> list[Architecture]:
        return sandwich_architectures(space, rng, self.random_draws)
