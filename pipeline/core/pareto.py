"""Non-dominated sorting and crowding distance (NSGA-II), for accuracy against cost.

Points are tuples of objectives that are all *minimised* (callers negate accuracy). Sizes here are a few
thousand candidates at most, so the simple O(M·N²) sort is plenty and easy to check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated_fronts(points: Sequence[Point]) -> list[list[int]]:
    """Indices grouped into fronts: front 0 is non-dominated, front 1 is dominated only by front 0, ..."""
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]
    count = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominated_by[i].append(j)
                count[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by[j].append(i)
                count[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if count[i] == 0]
    while current:
        fronts.append(sorted(current))
        following = []
        for i in current:
            for j in dominated_by[i]:
                count[j] -= 1
                if count[j] == 0:
                    following.append(j)
        current = following
    return fronts


def crowding_distances(points: Sequence[Point], front: Sequence[int]) -> dict[int, float]:
    """How isolated each member of a front is (boundary points are infinitely so, to keep the extremes)."""
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for m in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda i: (points[i][m], i))
        lo, hi = points[ordered[0]][m], points[ordered[-1]][m]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, len(ordered) - 1):
            distance[ordered[k]] += (points[ordered[k + 1]][m] - points[ordered[k - 1]][m]) / (hi - lo)
    return distance


def nsga_order(points: Sequence[Point]) -> list[int]:
    """All indices, best first: by front, then by crowding distance (larger first), then by index for ties."""
    order: list[int] = []
    for front in non_dominated_fronts(points):
        crowd = crowding_distances(points, front)
        order.extend(sorted(front, key=lambda i: (-crowd[i], i)))
    return order


def front_of(points: Sequence[Point]) -> list[int]:
    """The non-dominated indices (duplicated points all stay on the front)."""
    fronts = non_dominated_fronts(points)
    return fronts[0] if fronts else []
