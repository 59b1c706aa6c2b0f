"""Architectures spread over a space's size range: what the fidelity report trains stand-alone. Pure Python."""

from __future__ import annotations

import random

from pipeline.core.arch import Architecture
from pipeline.core.complexity import count_params
from pipeline.core.sampling import (
    largest_architecture,
    sample_architecture,
    sample_architectures,
    smallest_architecture,
)
from pipeline.core.space import SearchSpace
from pipeline.shared.errors import UserError


def spread_by_params(space: SearchSpace, count: int, seed: int) -> list[Architecture]:
    """``count`` distinct architectures spread over the space's parameter range, smallest first (seeded).

    Uniform draws crowd around the middle of the size range (a sum of many independent genes), so a plain
    sample would compare near-equal models. Here the range from the smallest to the largest member is cut into
    ``count`` equal bins and each bin gets one uniformly drawn member that falls in it (a bin no draw reached
    takes the unpicked draw nearest its centre). The extremes themselves are among the draws.
    """
    if count < 1:
        raise UserError(f"architecture count {count}: must be at least 1")
    if count > space.num_architectures():
        raise UserError(
            f"architecture count {count} exceeds the {space.num_architectures():,} architectures of space {space.name!r}"
        )
    rng = random.Random(seed)
    pool = {a.key: a for a in sample_architectures(space, max(200 * count, 2000), seed)}
    for extreme in (smallest_architecture(space), largest_architecture(space)):
        pool[extreme.key] = extreme
    if len(pool) < count:  # a tiny space: enumerate by drawing until every member has been seen
        while len(pool) < count:
            a = sample_architecture(space, rng)
            pool[a.key] = a
    sized = sorted(((count_params(a, space), key) for key, a in pool.items()))
    lo, hi = sized[0][0], sized[-1][0]
    width = (hi - lo) / count or 1.0
    picked: list[str] = []
    for b in range(count):
        start, end = lo + b * width, lo + (b + 1) * width
        inside = [key for p, key in sized if start <= p < end or (b == count - 1 and p == hi)]
        inside = [key for key in inside if key not in picked]
        if inside:
            picked.append(rng.choice(inside))
            continue
        centre = (start + end) / 2
        picked.append(min((abs(p - centre), key) for p, key in sized if key not in picked)[1])
    return sorted((pool[k] for k in picked), key=lambda a: count_params(a, space))
