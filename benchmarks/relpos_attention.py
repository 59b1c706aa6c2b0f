"""Relative-position attention: what it costs over plain attention, old (materialised) form vs the decomposed one.

For each configuration (space, image size, batch, threads) one architecture (the space's largest) runs as a
supernet subnet in three forms, measured alternately (A B C A B C ...) in one process so machine noise hits all
alike, medians compared:

* ``plain``: the same space with relative position off (``F.scaled_dot_product_attention``, fused);
* ``old``: relative position materialised as (tokens x tokens x head_dim) pair embeddings, as first written here
  and as the reference AutoFormer computes it (``tests/relpos_reference.py``, the oracle of the equality tests);
* ``new``: the decomposed form the package uses (``pipeline.model.layers.attend``).

Times a training step (forward + backward) and an inference forward (``torch.inference_mode``). Then the search
evaluation throughput on compact-32 (an evaluator scoring candidates on 1,000 images, latency included), old vs
new. Goals: new step / plain step <= 1.3 at 224 px; old step / new step >= 2.0. Run::

    python benchmarks/relpos_attention.py                       # everything (about 20 minutes on 2 cores)
    python benchmarks/relpos_attention.py --configs compact-32 --batches 32 --threads 1 --no-search
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from relpos_reference import reference_attend  # noqa: E402

from pipeline.core.sampling import largest_architecture, sample_architectures  # noqa: E402
from pipeline.core.space import SearchSpace, load_space  # noqa: E402
from pipeline.model import static as static_module  # noqa: E402
from pipeline.model import supernet as supernet_module  # noqa: E402
from pipeline.model.supernet import Supernet  # noqa: E402
from pipeline.model.supernet_dir import supernet_config  # noqa: E402
from pipeline.search.evaluator import Evaluator  # noqa: E402

CONFIGS = {"autoformer-tiny": 224, "autoformer-small": 224, "compact-32": 32}


@contextlib.contextmanager
def old_form(active: bool) -> Iterator[None]:
    """Swap the materialised attention in for the duration (both model modules call ``attend`` by name)."""
    saved = supernet_module.attend, static_module.attend
    if active:
        supernet_module.attend = static_module.attend = reference_attend
    try:
        yield
    finally:
        supernet_module.attend, static_module.attend = saved


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare_steps(space: SearchSpace, batch: int, repeats: int) -> dict[str, dict[str, float]]:
    arch = largest_architecture(space)
    plain_space = SearchSpace.from_dict({**space.to_dict(), "relative_position": False})
    torch.manual_seed(0)
    models = {"plain": Supernet(plain_space), "old": Supernet(space), "new": Supernet(space)}
    images = torch.randn(batch, space.in_chans, space.image_size, space.image_size)

    def step(name: str) -> Callable[[], None]:
        def run() -> None:
            model = models[name].train()
            model.zero_grad(set_to_none=True)
            with old_form(name == "old"):
                model(images, arch).sum().backward()

        return run

    def infer(name: str) -> Callable[[], None]:
        def run() -> None:
            model = models[name].eval()
            with old_form(name == "old"), torch.inference_mode():
                model(images, arch)

        return run

    times: dict[str, dict[str, list[float]]] = {kind: {n: [] for n in models} for kind in ("step", "inference")}
    for i in range(repeats + 1):  # the first round warms up
        for name in models:
            for kind, make in (("step", step), ("inference", infer)):
                t = timed(make(name))
                if i:
                    times[kind][name].append(t)
    return {kind: {n: statistics.median(v) for n, v in per.items()} for kind, per in times.items()}


def search_throughput(count: int) -> None:
    """Candidates/s of one evaluator on compact-32 (1,000 search images, latency measured), old vs new form."""
    space = load_space("compact-32")
    torch.manual_seed(0)
    model = Supernet(space)
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    config = supernet_config(space.to_dict(), "entangled", {"drop_rate": 0, "attn_drop_rate": 0, "drop_path_rate": 0})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1000, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=1000).astype(np.int64)
    evaluator = Evaluator(
        config, weights, images, labels, {"mean": [0.5] * 3, "std": [0.25] * 3}, 512, 64, 5, threads=1
    )
    archs = [a.to_dict() for a in sample_architectures(space, count, seed=1)]
    rates: dict[str, list[float]] = {"old": [], "new": []}
    evaluator.evaluate(archs[0])
    for _ in range(2):  # alternate blocks
        for form in ("old", "new"):
            with old_form(form == "old"):
                rates[form].append(count / timed(lambda: [evaluator.evaluate(a) for a in archs]))
    old, new = statistics.median(rates["old"]), statistics.median(rates["new"])
    print(f"search evaluation, compact-32, 1 thread: old {old:.2f} candidates/s, new {new:.2f}/s  ->  {new / old:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[4, 32])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=10, help="candidates per block in the search measurement")
    parser.add_argument("--no-search", action="store_true", help="skip the search-throughput measurement")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}; times are medians of {args.repeats}, forms alternated; step = forward + backward"
    )
    header = f"{'config':>24} {'batch':>5} {'thr':>3}  {'kind':>9}  {'plain ms':>9} {'old ms':>9} {'new ms':>9}  {'new/plain':>9} {'old/new':>7}"
    print(header)
    for name in args.configs:
        space = load_space(name).with_overrides(image_size=CONFIGS[name])
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batches:
                medians = compare_steps(space, batch, args.repeats)
                for kind, m in medians.items():
                    print(
                        f"{name + ' @' + str(space.image_size):>24} {batch:>5} {threads:>3}  {kind:>9}  "
                        f"{1000 * m['plain']:9.1f} {1000 * m['old']:9.1f} {1000 * m['new']:9.1f}  "
                        f"{m['new'] / m['plain']:9.2f} {m['old'] / m['new']:7.2f}",
                        flush=True,
                    )
    if not args.no_search:
        torch.set_num_threads(1)
        search_throughput(args.candidates)


if __name__ == "__main__":
    main()
