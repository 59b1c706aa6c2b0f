"""Uniform sampling (the paper): each step trains one subnet drawn uniformly from the space."""

from __future__ import annotations

import random

from pipeline.core.arch import Architecture
from pipeline.core.sampling import sample_architecture
from pipeline.core.space import SearchSpace
from pipeline.training.rules.base import Rule


class UniformSampling(Rule):
    def subnets(self, space: SearchSpace, rng: random.Random) -> list[Architecture]:
        return [sample_architecture(space, rng)]
