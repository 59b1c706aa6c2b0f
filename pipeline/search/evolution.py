"""The search strategies: AutoFormer's evolution (and a random baseline), as pure Python.

A strategy hands out candidates one at a time and is told each result; the Ray Tune searcher is a thin
adapter around it. Everything that decides *which* architectures get evaluated lives here, seeded by one
``random.Random`` whose state is part of the strategy, so a pickled strategy resumes the exact sequence.

Protocol (paper §4.1, all numbers are settings): generation 0 is ``population`` random architectures inside
the constraints; every later generation takes the ``parents`` best evaluated so far, makes ``mutations``
mutants and ``crossovers`` children of equal-depth parent pairs, and tops up with random architectures to
``population``. Nothing is evaluated twice, every proposal loop has a bounded number of tries (the reference
implementation spins forever when constraints are tight), and the last generation is ranked like the others.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from typing import Any

from pipeline.core.arch import Architecture
from pipeline.core.complexity import count_macs, count_params
from pipeline.core.pareto import nsga_order
from pipeline.core.records import CandidateRecord, by_top1, candidate_record, cost_of
from pipeline.core.sampling import sample_architecture
from pipeline.core.space import SearchSpace
from pipeline.search.constraints import Constraints
from pipeline.shared.errors import UserError

# Draws allowed per wanted candidate before a proposal loop gives up (random draws, mutants, crossovers).
TRIES_PER_CANDIDATE = 50


@dataclasses.dataclass(frozen=True)
class Settings:
    """The strategy's part of the search settings (``SearchSettings.strategy``), keys of the task's ``search``
    section by the same names. Built by ``SearchSettings.from_task``: each value has been checked by the task
    schema, which is also where the defaults are; only what relates fields is checked here."""

    algorithm: str  # evolution or random
    objective: str  # constrained or pareto
    population: int
    generations: int
    parents: int
    mutations: int
    crossovers: int
    depth_prob: float
    gene_prob: float
    mutation: str  # per_layer or per_gene
    pareto_costs: tuple[str, ...]
    seed: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "pareto_costs", tuple(self.pareto_costs))  # a JSON list from a task: hashable
        if self.mutations + self.crossovers > self.population:
            raise UserError(
                f"search.mutations + search.crossovers ({self.mutations} + {self.crossovers}) exceed search.population {self.population}"
            )

    @property
    def budget(self) -> int:
        """Evaluations the search aims for; the random baseline gets the same number."""
        return self.population * self.generations


@dataclasses.dataclass(frozen=True)
class Candidate:
    arch: Architecture
    generation: int
    origin: str
    params: int
    macs: int
    latency_ms_pred: float = math.nan  # from the search's latency model, if it has one

    @property
    def key(self) -> str:
        return self.arch.key


def mutate(
    arch: Architecture,
    space: SearchSpace,
    rng: random.Random,
    depth_prob: float,
    gene_prob: float,
    mode: str = "per_layer",
) -> Architecture:
    """A mutant of ``arch``: depth re-drawn with ``depth_prob`` (new layers get random genes, removed layers come
    off the end), embed dim re-drawn with ``depth_prob``, then the layers' blocks.

    ``per_layer`` (the paper's §3.3: "mutates each block with a probability of P_m"): each layer is re-drawn with
    ``gene_prob``, heads and MLP ratio together, so a layer changes with probability ``gene_prob``. ``per_gene``
    (the reference code's loop): each layer's heads and its MLP ratio are re-drawn separately with ``gene_prob``
    each, so a layer changes with probability 1 - (1 - gene_prob)^2 (0.64 at 0.4).
    """
    heads, ratios = list(arch.num_heads), list(arch.mlp_ratio)
    depth, embed = arch.depth, arch.embed_dim
    if rng.random() < depth_prob:
        depth = rng.choice(space.depth)
        while len(heads) < depth:
            heads.append(rng.choice(space.num_heads))
            ratios.append(rng.choice(space.mlp_ratio))
        del heads[depth:], ratios[depth:]
    if rng.random() < depth_prob:
        embed = rng.choice(space.embed_dim)
    for i in range(depth):
        if mode == "per_layer":
            if rng.random() < gene_prob:
                heads[i], ratios[i] = rng.choice(space.num_heads), rng.choice(space.mlp_ratio)
            continue
        if rng.random() < gene_prob:
            heads[i] = rng.choice(space.num_heads)
        if rng.random() < gene_prob:
            ratios[i] = rng.choice(space.mlp_ratio)
    return Architecture(embed, depth, tuple(heads), tuple(ratios))


def crossover(a: Architecture, b: Architecture, rng: random.Random) -> Architecture:
    """Each gene (embed dim, each layer's heads, each layer's MLP ratio) from either parent with equal chance."""
    if a.depth != b.depth:
        raise ValueError(f"crossover needs parents of equal depth, got {a.depth} and {b.depth}")
    pick = lambda x, y: x if rng.random() < 0.5 else y
    return Architecture(
        pick(a.embed_dim, b.embed_dim),
        a.depth,
        tuple(pick(x, y) for x, y in zip(a.num_heads, b.num_heads)),
        tuple(pick(x, y) for x, y in zip(a.mlp_ratio, b.mlp_ratio)),
    )


def ranked(records: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """Scored candidates inside the constraints, best first.

    constrained: highest search top-1 first (``by_top1``). pareto: non-dominated sorting with crowding distance on
    top-1 (up) and the chosen costs (down).
    """
    scored = sorted((r for r in records if r.get("status") == "ok"), key=lambda r: r["key"])
    if settings.objective == "constrained":
        return sorted(scored, key=by_top1)
    points = [(-r["top1"], *(cost_of(r, c) for c in settings.pareto_costs)) for r in scored]
    return [scored[i] for i in nsga_order(points)]


class Strategy:
    """Evolution (or the random baseline) over one space under one set of constraints."""

    def __init__(
        self,
        space: SearchSpace,
        constraints: Constraints,
        settings: Settings,
        predict_latency: Callable[[Architecture], float] | None = None,
    ) -> None:
        """``predict_latency`` (a latency model's ``predict``) replaces timing: it is checked against
        ``max_latency_ms`` before anything is evaluated, and is the ``latency_ms`` Pareto cost."""
        self.space, self.constraints, self.settings = space, constraints, settings
        self.predict_latency = predict_latency
        self.rng = random.Random(settings.seed)
        self.generation = -1
        self.queue: list[Candidate] = []
        self.pending: dict[str, Candidate] = {}
        self.results: dict[str, CandidateRecord] = {}  # key -> record: the memo of everything evaluated
        self.seen: set[str] = set()  # every key ever proposed (evaluated, pending or queued)
        self.shortfalls: list[str] = []  # generations that could not be filled, and why
        self._exhausted = False  # a generation found nothing new: the space (within the constraints) is used up

    # ---- driving ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Build generation 0 now, so that constraints no architecture meets fail before any evaluation starts."""
        if self.generation < 0:
            self._new_generation()
            if not self.queue:
                raise UserError(
                    f"no architecture of search space {self.space.name!r} satisfies the constraints "
                    f"({self._describe_constraints()}) in {TRIES_PER_CANDIDATE * self.settings.population:,} random draws; widen them"
                )

    def next(self) -> Candidate | None:
        """The next candidate to evaluate, or None while the current generation is still being evaluated
        (and once the search is over: see ``finished``)."""
        self.start()
        if (
            not self.queue
            and not self.pending
            and self.generation + 1 < self.settings.generations
            and not self._exhausted
        ):
            self._new_generation()
        if not self.queue:
            return None
        candidate = self.queue.pop(0)
        self.pending[candidate.key] = candidate
        return candidate

    @property
    def finished(self) -> bool:
        return (
            self.generation >= 0
            and not self.queue
            and not self.pending
            and (self.generation + 1 >= self.settings.generations or self._exhausted)
        )

    def complete(self, key: str, outcome: dict[str, Any]) -> CandidateRecord:
        """Record the evaluation of a handed-out candidate; returns the full record."""
        c = self.pending.pop(key)
        record = candidate_record(c.arch, c.generation, c.origin, c.params, c.macs, outcome, c.latency_ms_pred)
        self.results[key] = record
        return record

    def generation_done(self) -> bool:
        return not self.queue and not self.pending

    def records(self) -> list[CandidateRecord]:
        return list(self.results.values())

    def ranking(self) -> list[dict[str, Any]]:
        return ranked(self.records(), self.settings)

    # ---- proposals -------------------------------------------------------------------------------------------
    def _describe_constraints(self) -> str:
        parts = [f"{k} {v:,}" for k, v in self.constraints.to_dict().items() if v is not None and k != "max_latency_ms"]
        return ", ".join(parts) or "none"

    def _candidate(self, arch: Architecture, origin: str) -> Candidate | None:
        """A new, feasible candidate for this generation, or None (already seen, or outside the constraints)."""
        if arch.key in self.seen:
            return None
        params, macs = count_params(arch, self.space), count_macs(arch, self.space)
        latency = self.predict_latency(arch) if self.predict_latency is not None else None
        if self.constraints.violation(params, macs, latency) is not None:
            return None
        self.seen.add(arch.key)
        return Candidate(arch, self.generation, origin, params, macs, math.nan if latency is None else latency)

    def _fill(self, wanted: int, make: Callable[[], Architecture | None], origin: str, out: list[Candidate]) -> int:
        """Append up to ``wanted`` new candidates from ``make`` within a bounded number of tries; returns how many."""
        made = 0
        for _ in range(TRIES_PER_CANDIDATE * wanted):
            if made == wanted:
                break
            arch = make()
            candidate = self._candidate(arch, origin) if arch is not None else None
            if candidate is not None:
                out.append(candidate)
                made += 1
        return made

    def _new_generation(self) -> None:
        self.generation += 1
        s = self.settings
        out: list[Candidate] = []
        parents = [Architecture.from_dict(r["arch"]) for r in self.ranking()[: s.parents]]
        if s.algorithm == "evolution" and self.generation > 0 and parents:
            self._fill(
                s.mutations,
                lambda: mutate(self.rng.choice(parents), self.space, self.rng, s.depth_prob, s.gene_prob, s.mutation),
                "mutation",
                out,
            )
            self._fill(s.crossovers, lambda: self._cross(parents), "crossover", out)
        random_wanted = s.population - len(out)
        got = self._fill(random_wanted, lambda: sample_architecture(self.space, self.rng), "random", out)
        if len(out) < s.population:
            self.shortfalls.append(
                f"generation {self.generation}: {len(out)} of {s.population} new feasible architectures found"
            )
        if got == 0 and not out:
            self._exhausted = True
        self.queue = out

    def _cross(self, parents: list[Architecture]) -> Architecture | None:
        first = self.rng.choice(parents)
        mates = [p for p in parents if p.depth == first.depth and p.key != first.key]
        if not mates:
            return None
        return crossover(first, self.rng.choice(mates), self.rng)
