"""Drawing architectures from a space: uniform sampling as the paper does, the extreme members, and the
sandwich rule.

Uniform here means what AutoFormer's supernet training does: draw the depth, then one embedding dim for all
layers, then each layer's heads and MLP ratio independently, every choice with equal probability. Callers pass
their own ``random.Random`` so that every draw is seeded and reproducible (and DDP ranks sharing a seed agree).
The sandwich rule (BigNAS) trains the largest, the smallest and a few uniform draws in every step.
"""

from __future__ import annotations

import random

from pipeline.core.arch import Architecture
from pipeline.core.space import SearchSpace


def sample_architecture(space: SearchSpace, rng: random.Random) -> Architecture:
    depth = rng.choice(space.depth)
    embed_dim = rng.choice(space.embed_dim)
    heads = []
    ratios = []
    for _ in range(depth):
        heads.append(rng.choice(space.num_heads))
        ratios.append(rng.choice(space.mlp_ratio))
    return Architecture(embed_dim=embed_dim, depth=depth, num_heads=tuple(heads), mlp_ratio=tuple(ratios))


def sample_architectures(space: SearchSpace, count: int, seed: int) -> list[Architecture]:
    """``count`` seeded draws (repeats possible, as with any uniform sampler)."""
    rng = random.Random(seed)
    return [sample_architecture(space, rng) for _ in range(count)]


def smallest_architecture(space: SearchSpace) -> Architecture:
    d = space.depth[0]
    return Architecture(space.embed_dim[0], d, (space.num_heads[0],) * d, (space.mlp_ratio[0],) * d)


def largest_architecture(space: SearchSpace) -> Architecture:
    d = space.depth[-1]
    return Architecture(space.embed_dim[-1], d, (space.num_heads[-1],) * d, (space.mlp_ratio[-1],) * d)


def sandwich_architectures(space: SearchSpace, rng: random.Random, random_count: int) -> list[Architecture]:
    """One sandwich step's subnets: the largest first (in-place distillation's teacher), the smallest, then
    ``random_count`` uniform draws."""
    drawn = [sample_architecture(space, rng) for _ in range(random_count)]
    return [largest_architecture(space), smallest_architecture(space), *drawn]
