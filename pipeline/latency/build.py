"""``autoformer latency build``: measure a latency table on the target device, validate it end to end, and fall
back to a fitted correction where the table alone misses.

A busy machine drifts: timings taken minutes apart differ. So every table entry and every held-out
architecture is measured in rounds, each round timing all of them once in a seeded random order (drift hits
the table and its validation alike), rounds added (3 to 9) until the medians stop moving; the estimate is the
median over rounds. The same architecture measured twice (the medians of odd and of even rounds) gives the
noise floor, recorded beside the model's error; a model much worse than that floor says so.

The profiler runs where the latency matters: in this process for ``--device local``, else as a Ray actor that
asks for one unit of the custom resource NAME, which only nodes of that kind advertise (``ray start --resources
'{"NAME": 1}'``, or a node type in ``cluster.yaml``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import ray

from pipeline.core.agreement import kendall_tau, mape
from pipeline.core.arch import Architecture
from pipeline.core.latency_model import LatencyModel, block_key
from pipeline.core.sampling import sample_architecture
from pipeline.core.space import SearchSpace
from pipeline.latency.profiler import Profiler
from pipeline.model.supernet_dir import local_supernet, read_supernet_config
from pipeline.shared.cluster import connect
from pipeline.shared.errors import UserError
from pipeline.shared.progress import say

MAPE_THRESHOLD = 0.10  # above this held-out error the table gets a fitted correction
MIN_ROUNDS, MAX_ROUNDS = 3, 9
STABLE = 0.01  # rounds stop when one more moves the medians by less than this (relative, median over entries)
NOISE_ALLOWANCE = 3.0  # a model missing by more than this many noise floors (and the threshold) says so
SECONDS_PER_ROUND = 0.07  # timing per entry and round: three rounds take what one 0.2 s measurement took
BUILT_IN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    device: str = "local"  # "local", or the name of a Ray custom resource the target nodes advertise
    runtime: str = "torch"
    batch: int = 1
    threads: int = 1
    validate: int = 50  # held-out architectures measured end to end
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch", "threads", "validate"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} {getattr(self, name)}: must be at least 1")
        if self.validate < 2:
            raise UserError(f"validate {self.validate}: at least 2 architectures are needed to rank")


def distinct_architectures(space: SearchSpace, count: int, seed: int, exclude: set[str]) -> list[Architecture]:
    """Up to ``count`` seeded draws with keys not in ``exclude`` (bounded: small spaces give fewer)."""
    rng, out = random.Random(seed), []
    for _ in range(50 * count):
        if len(out) == count:
            break
        arch = sample_architecture(space, rng)
        if arch.key not in exclude:
            exclude.add(arch.key)
            out.append(arch)
    return out


@contextlib.contextmanager
def open_profiler(space: SearchSpace, settings: BuildSettings) -> Iterator[Callable[..., Any]]:
    """A ``call(method, *args)`` on a profiler placed where the device is (released on exit)."""
    args = (space.to_dict(), settings.runtime, settings.batch, settings.threads, SECONDS_PER_ROUND)
    if settings.device == "local":
        profiler = Profiler(*args)
        yield lambda name, *a: getattr(profiler, name)(*a)
        return
    connect(False, "latency")
    resources = ray.cluster_resources()
    if settings.device not in resources:
        offered = sorted(k for k in resources if k not in BUILT_IN_RESOURCES and not k.startswith("node:"))
        raise UserError(
            f"device {settings.device!r}: no node of the cluster offers that resource; custom resources offered: "
            f"{', '.join(offered) or 'none'} (start the target nodes with ray start --resources "
            f"'{{\"{settings.device}\": 1}}', or use device 'local')"
        )
    actor = ray.remote(Profiler).options(resources={settings.device: 1}, num_cpus=settings.threads).remote(*args)
    try:
        yield lambda name, *a: ray.get(getattr(actor, name).remote(*a))
    finally:
        ray.kill(actor)


def measure_rounds(jobs: dict[str, Callable[[], float]], seed: int) -> tuple[dict[str, float], int, list[dict]]:
    """Time every job once per round, in a seeded random order, until the medians are stable; the medians,
    the number of rounds and each round's timings."""
    rng, rounds = random.Random(seed), []
    while len(rounds) < MAX_ROUNDS:
        order = list(jobs)
        rng.shuffle(order)
        rounds.append({key: jobs[key]() for key in order})
        if len(rounds) >= MIN_ROUNDS and _moved(rounds) < STABLE:
            break
    return _medians(rounds), len(rounds), rounds


def _medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def _moved(rounds: list[dict[str, float]]) -> float:
    """How much the last round moved the medians: the median over entries of the relative change."""
    now, before = _medians(rounds), _medians(rounds[:-1])
    return statistics.median(abs(now[k] - before[k]) / now[k] for k in now)


def noise_floor(rounds: list[dict[str, float]], keys: list[str]) -> tuple[float, float]:
    """The MAPE and the Kendall tau between two measurements of the same architectures (medians of the odd and
    of the even rounds): the error a perfect model would still show on this device, and about the best ranking
    agreement it could show (where the architectures' latencies lie closer together than the noise, measuring
    twice does not order them the same way either)."""
    odd, even = _medians(rounds[0::2]), _medians(rounds[1::2])
    first, second = [odd[k] for k in keys], [even[k] for k in keys]
    return mape(first, second), kendall_tau(first, second)


def build_latency_model(supernet: str, settings: BuildSettings) -> LatencyModel:
    with local_supernet(supernet) as directory:
        space = SearchSpace.from_dict(read_supernet_config(directory)["space"], source=f"supernet {supernet!r}")
    start = time.perf_counter()
    with open_profiler(space, settings) as call:
        device = {"name": settings.device, **call("describe")}
        gpu = ", " + device["gpu"] if "gpu" in device else ""
        say(f"[latency] {space.name} on {settings.device} ({device['cpu']}{gpu}), {settings.runtime}, batch "
            f"{settings.batch}, {settings.threads} thread(s)")  # fmt: skip
        seen: set[str] = set()
        held_out = distinct_architectures(space, settings.validate, settings.seed, seen)
        jobs = _table_jobs(space, call) | {f"arch:{a.key}": _arch_job(call, a) for a in held_out}
        say(f"[latency] timing {len(jobs) - len(held_out)} table entries and {len(held_out)} held-out architectures, "
            f"interleaved, in {MIN_ROUNDS} to {MAX_ROUNDS} rounds")  # fmt: skip
        timed, count, rounds = measure_rounds(jobs, settings.seed)
        blocks = {k[6:]: v for k, v in timed.items() if k.startswith("block:")}
        fixed = {k[6:]: v for k, v in timed.items() if k.startswith("fixed:")}
        model = LatencyModel(space.to_dict(), device, settings.runtime, settings.batch, settings.threads, blocks, fixed)
        measured = [timed[f"arch:{a.key}"] for a in held_out]
        table = [model.table_ms(a) for a in held_out]
        floor, floor_tau = noise_floor(rounds, [f"arch:{a.key}" for a in held_out])
        validation: dict[str, Any] = {"count": len(held_out), "rounds": count, "noise_floor_mape": floor}
        validation["noise_floor_kendall_tau"] = floor_tau
        validation |= {"table_mape": mape(table, measured), "table_kendall_tau": kendall_tau(table, measured)}
        validation["threshold"] = MAPE_THRESHOLD
        say(f"[latency] table vs {len(held_out)} held-out architectures ({count} rounds): MAPE "
            f"{100 * validation['table_mape']:.1f} %, Kendall tau {validation['table_kendall_tau']:.3f}; the same "
            f"architecture measured twice differs by {100 * floor:.1f} % (tau {floor_tau:.3f})")  # fmt: skip
        if validation["table_mape"] > MAPE_THRESHOLD:
            corrected = _with_correction(model, space, settings, call, seen)
            if mape([corrected.predict(a) for a in held_out], measured) < validation["table_mape"]:
                model = corrected
        predicted = [model.predict(a) for a in held_out]
        validation.update(mape=mape(predicted, measured), kendall_tau=kendall_tau(predicted, measured), kind=model.kind)
        validation["build_s"] = time.perf_counter() - start
        _say_if_worse_than_noise(validation)
        return dataclasses.replace(model, validation=validation)


def _table_jobs(space: SearchSpace, call: Callable[..., Any]) -> dict[str, Callable[[], float]]:
    jobs: dict[str, Callable[[], float]] = {
        f"fixed:{e}": functools.partial(call, "fixed_ms", e) for e in space.embed_dim
    }
    for e in space.embed_dim:
        for h in space.num_heads:
            for r in space.mlp_ratio:
                jobs[f"block:{block_key(e, h, r)}"] = functools.partial(call, "block_ms", e, h, r)
    return jobs


def _arch_job(call: Callable[..., Any], arch: Architecture) -> Callable[[], float]:
    return functools.partial(call, "arch_ms", arch.to_dict())


def _say_if_worse_than_noise(validation: dict[str, Any]) -> None:
    """One line when the model misses by more than measuring twice explains: the table does not capture what
    this device does (or the device changed during the build)."""
    floor, error = validation["noise_floor_mape"], validation["mape"]
    if error > MAPE_THRESHOLD and error > NOISE_ALLOWANCE * floor:
        say(f"[latency] warning: the model misses held-out architectures by {100 * error:.1f} % where measuring "
            f"the same architecture twice differs by {100 * floor:.1f} %: this device's latency is not the sum of "
            f"its blocks' (or it changed during the build); rebuild it on a quiet machine")  # fmt: skip


def _with_correction(
    model: LatencyModel, space: SearchSpace, settings: BuildSettings, call, seen: set[str]
) -> LatencyModel:
    """Least squares of measured latency on (1, table sum, depth), fitted on architectures apart from the held-out
    ones; the caller keeps it only if it predicts the held-out ones better than the table."""
    fit = distinct_architectures(space, settings.validate, settings.seed + 1, seen)
    if len(fit) < 3:  # three coefficients: a space this small keeps its table
        say(f"[latency] the table misses by more than {100 * MAPE_THRESHOLD:.0f} %, but the space has too few "
            f"other architectures ({len(fit)}) to fit a correction on")  # fmt: skip
        return model
    features = np.array([[1.0, model.table_ms(a), float(a.depth)] for a in fit])
    timed, _, _ = measure_rounds({f"arch:{a.key}": _arch_job(call, a) for a in fit}, settings.seed + 1)
    measured = np.array([timed[f"arch:{a.key}"] for a in fit])
    coef = np.linalg.lstsq(features, measured, rcond=None)[0]
    n = len(fit)
    corrected = dataclasses.replace(model, kind="regressor", correction=tuple(float(c) for c in coef))
    say(
        f"[latency] the table misses by more than {100 * MAPE_THRESHOLD:.0f} %: fitted a correction on {n} more architectures"
    )
    return corrected
