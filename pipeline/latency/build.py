"""``autoformer latency build``: measure a latency table on the target device, validate it end to end, and fall
back to a fitted correction where the table alone misses.

The profiler runs where the latency matters: in this process for ``--device local``, else as a Ray actor that
asks for one unit of the custom resource NAME, which only nodes of that kind advertise (``ray start --resources
'{"NAME": 1}'``, or a node type in ``cluster.yaml``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
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
    args = (space.to_dict(), settings.runtime, settings.batch, settings.threads)
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


def build_latency_model(supernet: str, settings: BuildSettings) -> LatencyModel:
    with local_supernet(supernet) as directory:
        space = SearchSpace.from_dict(read_supernet_config(directory)["space"], source=f"supernet {supernet!r}")
    start = time.perf_counter()
    with open_profiler(space, settings) as call:
        device = {"name": settings.device, **call("describe")}
        say(
            f"[latency] {space.name} on {settings.device} ({device['cpu']}{', ' + device['gpu'] if 'gpu' in device else ''}), {settings.runtime}, batch {settings.batch}, {settings.threads} thread(s)"
        )
        fixed = {str(e): call("fixed_ms", e) for e in space.embed_dim}
        blocks = {}
        for e in space.embed_dim:
            for h in space.num_heads:
                for r in space.mlp_ratio:
                    blocks[block_key(e, h, r)] = call("block_ms", e, h, r)
            say(
                f"[latency]   table: embed {e} done ({len(blocks)} of {len(space.embed_dim) * len(space.num_heads) * len(space.mlp_ratio)} blocks)"
            )
        model = LatencyModel(space.to_dict(), device, settings.runtime, settings.batch, settings.threads, blocks, fixed)
        seen: set[str] = set()
        held_out = distinct_architectures(space, settings.validate, settings.seed, seen)
        measured = [call("arch_ms", a.to_dict()) for a in held_out]
        table = [model.table_ms(a) for a in held_out]
        validation: dict[str, Any] = {
            "count": len(held_out),
            "table_mape": mape(table, measured),
            "table_kendall_tau": kendall_tau(table, measured),
            "threshold": MAPE_THRESHOLD,
        }
        say(
            f"[latency] table vs {len(held_out)} held-out architectures measured end to end: MAPE {100 * validation['table_mape']:.1f} %, Kendall tau {validation['table_kendall_tau']:.3f}"
        )
        if validation["table_mape"] > MAPE_THRESHOLD:
            corrected = _with_correction(model, space, settings, call, seen)
            if mape([corrected.predict(a) for a in held_out], measured) < validation["table_mape"]:
                model = corrected
        predicted = [model.predict(a) for a in held_out]
        validation.update(mape=mape(predicted, measured), kendall_tau=kendall_tau(predicted, measured), kind=model.kind)
        validation["build_s"] = time.perf_counter() - start
        return dataclasses.replace(model, validation=validation)


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
    measured = np.array([call("arch_ms", a.to_dict()) for a in fit])
    coef = np.linalg.lstsq(features, measured, rcond=None)[0]
    n = len(fit)
    corrected = dataclasses.replace(model, kind="regressor", correction=tuple(float(c) for c in coef))
    say(
        f"[latency] the table misses by more than {100 * MAPE_THRESHOLD:.0f} %: fitted a correction on {n} more architectures"
    )
    return corrected
