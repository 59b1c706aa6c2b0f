"""The evaluator actors and the router in front of them.

Tune trials are light clients (no CPU, on the head node: see ``experiment.trial_resources``). They all call one
named ``Router`` actor, which hands each candidate to an idle evaluator, so N concurrent trials keep N evaluators
busy instead of queueing on one (an ``ActorPool`` copied into every trial would send every trial to the same
first actor). When an evaluator
dies, the router runs the same candidate on the next idle one, so the trial still reports exactly once and no
candidate is lost or counted twice, and starts a replacement that takes candidates once it has loaded, not
before: a replacement waiting for room (its node lost, the autoscaler's new one not up yet) holds no candidate
while the other evaluators could score it.

The router is created by the driver, on the driver's node (so losing a worker node costs only the evaluator
on it) and outside any trial's placement group, so the evaluators it starts (and restarts) are ordinary
cluster actors. It is no single point of failure: when the router itself dies, Ray
restarts it (``ROUTER_RESTARTS``), the restarted router starts a fresh pool from the same object-store
weights and images, and every call a trial was waiting on is retried on it, so no candidate is reported
failed because the router died.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.data.arrays import SplitArrays
from pipeline.data.ray_ingest import in_object_store
from pipeline.search.evaluator import Evaluator
from pipeline.shared.faults import claim_fault, exit_now, fault_parameter
from pipeline.shared.progress import say
from pipeline.shared.ray_console import without_native_lines

ROUTER_RESTARTS = 3  # then the search stops with the trials' errors
REPLACE_RETRY_S = 1.0  # pause before starting another evaluator when a replacement died while loading
# Ray's caution, printed by its C++ side when an actor that may restart gets object-store arguments, that a
# restart fails once they are gone (ray-project/ray#53727): ``start_pool``'s caller holds them until the search
# ends, so they are not, and router restarts are tested. The line would greet every search as an error.
RESTART_CAUTION = re.compile(r"core_worker\.cc:\d+: Actor .*has constructor arguments in the object store")


@ray.remote(num_cpus=0)
class Router:
    def __init__(
        self, evaluator_options: dict[str, Any], evaluator_kwargs: dict[str, Any], refs: list, count: int
    ) -> None:
        # ``refs`` = [weights, images, labels] as ObjectRefs, inside a list so Ray hands them over unresolved.
        self.options, self.kwargs, self.refs = evaluator_options, evaluator_kwargs, refs
        self.actors = [self._start() for _ in range(count)]
        self.free: asyncio.Queue | None = None
        self.replaced = 0
        self.replacing: set[asyncio.Task] = set()  # held here: the event loop keeps only weak references to tasks
        self.exit_after, self.calls = fault_parameter("router_exit_after"), 0

    def _start(self):
        weights, images, labels = self.refs
        actor_class = ray.remote(Evaluator).options(**self.options)
        return actor_class.remote(weights=weights, images=images, labels=labels, **self.kwargs)

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
        self.calls += 1
        if self.exit_after is not None and self.calls > self.exit_after and claim_fault():
            exit_now(f"[search] fault injection: the router exits at its candidate {self.calls}")
        free = self._queue()
        while True:
            i = await free.get()
            try:
                result = await self.actors[i].evaluate.remote(arch, max_latency_ms)
            except RayActorError:
                # The evaluator died (node lost, OOM, crash): retry this candidate on whichever evaluator is idle
                # next while a fresh one starts in this slot.
                self.replaced += 1
                task = asyncio.create_task(self._replace(i))
                self.replacing.add(task)
                task.add_done_callback(self.replacing.discard)
                continue
            free.put_nowait(i)
            return result

    async def _replace(self, i: int) -> None:
        """Start a fresh evaluator in slot ``i`` and hand the slot back once it has loaded the supernet."""
        ray.kill(self.actors[i])  # one only unreachable for now (a network fault) would otherwise keep its CPUs
        say(f"[search] evaluator {i} lost; starting a replacement")
        start = time.perf_counter()
        while True:
            self.actors[i] = self._start()
            try:
                info = await self.actors[i].describe.remote()
                break
            except RayActorError:  # lost as well while loading: start another
                await asyncio.sleep(REPLACE_RETRY_S)
        waited = time.perf_counter() - start
        say(f"[search] evaluator {i} replaced: pid {info['pid']} on {info['node']}, ready after {waited:.1f} s")
        self._queue().put_nowait(i)

    def replaced_count(self) -> int:
        """How many evaluators died and were replaced."""
        return self.replaced


def default_evaluator_count(gpu: bool, cpus: float) -> int:
    """One evaluator per GPU with ``gpu``; else one per ``cpus`` CPUs of the cluster, leaving one for Tune."""
    resources = ray.cluster_resources()
    if gpu:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int((resources.get("CPU", 1) - 1) // cpus))


def start_pool(
    router_name: str,
    count: int,
    gpu: bool,
    cpus: float,
    weights: dict[str, np.ndarray],
    split: SplitArrays,
    evaluator_kwargs: dict[str, Any],
) -> tuple[Any, list[dict[str, Any]], list]:
    """Put the weights and the split in the object store once, start the router with ``count`` evaluators, and
    wait until all of them hold both; returns the router, the evaluators' descriptions and the object refs.
    The caller keeps the refs until the search ends: the router only borrows them, and a restarted router
    needs them again."""
    refs = [ray.put(weights), *in_object_store(split).refs]
    options: dict[str, Any] = {"num_cpus": cpus, "scheduling_strategy": "SPREAD"}
    if gpu:
        options["num_gpus"] = 1
    kwargs = {**evaluator_kwargs, "device": "cuda" if gpu else "cpu", "threads": max(1, int(cpus))}
    # The router lives on the driver's node (as Ray Train's controller does): a 0-CPU actor could otherwise land
    # on any worker node, and losing that node would restart the whole pool (every evaluator reloaded, every
    # candidate in flight re-run) instead of replacing the one evaluator that was there. Not soft: Ray 2.60
    # places a soft-pinned 0-CPU actor on another node when the driver's has no CPUs (a CPU-less head).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    with without_native_lines(RESTART_CAUTION):
        router = Router.options(
            name=router_name, max_restarts=ROUTER_RESTARTS, max_task_retries=-1, scheduling_strategy=here
        ).remote(options, kwargs, refs, count)
    say(
        f"[search] starting {count} evaluator(s) ({'1 GPU' if gpu else f'{cpus:g} CPU'} each), "
        f"loading the supernet and {split.count:,} search images into each"
    )
    start = time.perf_counter()
    try:
        infos = ray.get(router.ready.remote())
    except BaseException:
        ray.kill(router)
        raise
    say(f"[search] {count} evaluator(s) ready after {time.perf_counter() - start:.1f} s")
    for i, info in enumerate(infos):
        say(
            f"[search]   evaluator {i}: {info['node']} pid {info['pid']}, {info['device']}, ready in {info['load_s']:.1f} s"
        )
    return router, infos, refs
