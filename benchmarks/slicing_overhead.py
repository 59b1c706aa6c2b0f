"""Does weight slicing cost anything? Supernet vs the extracted static model of the same architecture.

For each of a few random architectures of each configuration, times (1) a training step (forward + backward,
gradients cleared to None as a training loop does) and (2) an inference forward under ``torch.inference_mode``,
on the supernet with that architecture and on its extracted static model. The two are measured alternately
(A B A B ...) in one process so that machine noise hits both alike; medians are compared.

Goal: supernet / static <= 1.05 for both. Run::

    python benchmarks/slicing_overhead.py                 # digits (8x8) and autoformer-tiny (224 px)
    python benchmarks/slicing_overhead.py --config tiny --repeats 30 --archs 5
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import torch

from pipeline.core.sampling import sample_architecture
from pipeline.core.space import load_space
from pipeline.model import Supernet

# name -> (space, image size override, batch size)
CONFIGS = {
    "digits": ("digits", None, 256),
    "tiny": ("autoformer-tiny", None, 8),
}


def _median_pair(a: Callable[[], None], b: Callable[[], None], repeats: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for i in range(repeats):
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(ta), statistics.median(tb)


def run_config(name: str, repeats: int, archs: int, seed: int) -> list[tuple[float, float]]:
    space_name, image_size, batch = CONFIGS[name]
    space = load_space(space_name)
    if image_size:
        space = space.with_overrides(image_size=image_size)
    torch.manual_seed(seed)
    net = Supernet(space)
    images = torch.randn(batch, space.in_chans, space.image_size, space.image_size)
    labels = torch.randint(0, space.num_classes, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = random.Random(seed)
    ratios = []
    print(f"\n{name}: space {space.name}, image {space.image_size}, batch {batch}, {repeats} timed repeats per arch")
    print(
        f"  {'architecture':60s} {'train super':>11s} {'static':>8s} {'ratio':>6s}   {'infer super':>11s} {'static':>8s} {'ratio':>6s}"
    )
    for _ in range(archs):
        arch = sample_architecture(space, rng)
        static = net.extract(arch)

        def train_super() -> None:
            net.zero_grad(set_to_none=True)
            loss_fn(net(images, arch), labels).backward()

        def train_static() -> None:
            static.zero_grad(set_to_none=True)
            loss_fn(static(images), labels).backward()

        def infer_super() -> None:
            with torch.inference_mode():
                net(images, arch)

        def infer_static() -> None:
            with torch.inference_mode():
                static(images)

        net.train(), static.train()
        ts, tt = _median_pair(train_super, train_static, repeats)
        net.eval(), static.eval()
        isup, ist = _median_pair(infer_super, infer_static, repeats)
        ratios.append((ts / tt, isup / ist))
        key = arch.key if len(arch.key) <= 60 else arch.key[:57] + "..."
        print(
            f"  {key:60s} {ts * 1e3:9.1f}ms {tt * 1e3:6.1f}ms {ts / tt:6.3f}   {isup * 1e3:9.1f}ms {ist * 1e3:6.1f}ms {isup / ist:6.3f}"
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append", help="configuration(s); default: all")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--archs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    summary = {}
    for name in args.config or list(CONFIGS):
        ratios = run_config(name, args.repeats, args.archs, args.seed)
        summary[name] = (
            statistics.geometric_mean(r[0] for r in ratios),
            statistics.geometric_mean(r[1] for r in ratios),
        )
    print("\nsupernet / static (geometric mean over architectures; goal <= 1.05)")
    for name, (train, infer) in summary.items():
        print(f"  {name:8s} training step {train:.3f}   inference {infer:.3f}")


if __name__ == "__main__":
    main()
