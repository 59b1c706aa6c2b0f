"""The evaluator actors and the router in front of them.

Tune trials are light clients (a sliver of a CPU each). They all call one named ``Router`` actor, which hands
each candidate to an idle evaluator, so N concurrent trials keep N evaluators busy instead of queueing on one
(an ``ActorPool`` copied into every trial would send every trial to the same first actor). When an evaluator
dies, the router replaces it and runs the same candidate on the next idle one: the trial still reports
exactly once, so no candidate is lost or counted twice.

The router is created by the driver, outside any trial's placement group, so the evaluators it starts (and
restarts) are ordinary cluster actors.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray.exceptions import RayActorError

from pipeline.search.evaluator import Evaluator


@ray.remote(num_cpus=0)
class Router:
    def __init__(self, evaluator_options: dict[str, Any], evaluator_kwargs: dict[str, Any], refs: list, count: int, die_after: int | None) -> None:
        # ``refs`` = [weights, images, labels] as ObjectRefs, inside a list so Ray hands them over unresolved.
        self.options, self.kwargs, self.refs = evaluator_options, evaluator_kwargs, refs
        self.actors = [self._start(die_after if i == 0 else None) for i in range(count)]  # faults injected into one
        self.free: asyncio.Queue | None = None
        self.replaced = 0
        self.calls = [0] * count

    def _start(self, die_after: int | None):
        weights, images, labels = self.refs
        actor_class = ray.remote(Evaluator).options(**self.options)
        return actor_class.remote(weights=weights, images=images, labels=labels, die_after=die_after, **self.kwargs)

    def _queue(self) -> asyncio.Queue:
        if self.free is None:  # created lazily, inside the actor's event loop
            self.free = asyncio.Queue()
            for i in range(len(self.actors)):
                self.free.put_nowait(i)
        return self.free

    async def ready(self) -> list[dict[str, Any]]:
        """Wait until every evaluator has loaded the supernet and the split; their descriptions."""
        return list(await asyncio.gather(*(a.describe.remote() for a in self.actors)))

    async def evaluate(self, arch: dict[str, Any], max_latency_ms: float | None) -> dict[str, Any]:
        free = self._queue()
        while True:
            i = await free.get()
            try:
                result = await self.actors[i].evaluate.remote(arch, max_latency_ms)
            except RayActorError:
                # The evaluator died (node lost, OOM, crash): start a fresh one in its slot and retry this
                # candidate on whichever evaluator is idle next.
                self.actors[i] = self._start(None)
                self.replaced += 1
                free.put_nowait(i)
                continue
            self.calls[i] += 1
            free.put_nowait(i)
            return result

    def stats(self) -> dict[str, Any]:
        return {"replaced": self.replaced, "calls": list(self.calls)}
