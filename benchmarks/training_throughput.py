"""Supernet training throughput vs a static model of the space's largest architecture (images/s, one run).

Three trainers step on the same in-memory batches with the task's optimizer, measured in alternating blocks
so machine noise hits all alike:

* supernet, a fresh uniformly sampled subnet every step (what ``autoformer train`` does), exact slice step;
* supernet, always the largest subnet (the cost of slicing and of the exact step), and the same with the
  plain optimizer step (the cost of slicing alone);
* the static model of the largest architecture, plain optimizer step;
* supernet, a sandwich step (largest, smallest and ``train.sandwich_random`` draws, gradients summed, one
  exact step), with and without in-place distillation (KL to the largest subnet's predictions), and with
  gradient projection (the largest subnet's gradient kept apart, the others' projected where they conflict).

The first is expected to be *faster* than the static largest model (sampled subnets are smaller on average);
the second shows what slicing and the exact step cost; the sandwich lines give a sandwich step's cost relative
to a uniform step (it trains several subnets on each image). Run::

    python benchmarks/training_throughput.py [--task digits] [--steps 30] [--blocks 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import random
import statistics
import time
from contextlib import nullcontext

import torch

from pipeline.core.sampling import largest_architecture
from pipeline.core.task import load_task
from pipeline.model.supernet import Supernet
from pipeline.training.exact_step import step_only_active
from pipeline.training.recipe import build_optimizer
from pipeline.training.step import forward_backward
from pipeline.training.subject import step_architectures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--steps", type=int, default=30, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per trainer")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    task = load_task(args.task, args.overrides)
    space = task.space(num_classes=task.data["num_classes"] or 10)
    batch = task.train.batch_size
    torch.manual_seed(0)
    images = torch.randn(batch, space.in_chans, space.image_size, space.image_size)
    labels = torch.randint(0, space.num_classes, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    largest = largest_architecture(space)

    supernet = Supernet(space, drop_path_rate=task.model["drop_path_rate"]).train()
    static = Supernet(space, drop_path_rate=task.model["drop_path_rate"]).extract(largest).train()
    opt_super = build_optimizer(supernet, task.train)
    opt_static = build_optimizer(static, task.train)
    counter = itertools.count()

    def sampled() -> None:
        (arch,) = step_architectures(space, 0, 0, next(counter))
        opt_super.zero_grad(set_to_none=True)
        loss_fn(supernet(images, arch), labels).backward()
        step_only_active(opt_super)

    def sandwich(inplace: str, projection: str = "off") -> None:
        archs = step_architectures(space, 0, 0, next(counter), "sandwich", task.train.supernet.sandwich_random)
        opt_super.zero_grad(set_to_none=True)
        rules = dataclasses.replace(task.train.supernet, inplace_distillation=inplace, gradient_projection=projection)
        recipe = dataclasses.replace(task.train, supernet=rules)
        forward_backward(supernet, supernet, archs, images, labels, None, loss_fn, nullcontext, recipe)
        step_only_active(opt_super)

    def super_largest() -> None:
        opt_super.zero_grad(set_to_none=True)
        loss_fn(supernet(images, largest), labels).backward()
        step_only_active(opt_super)

    def super_largest_plain() -> None:
        opt_super.zero_grad(set_to_none=True)
        loss_fn(supernet(images, largest), labels).backward()
        opt_super.step()

    def static_largest() -> None:
        opt_static.zero_grad(set_to_none=True)
        loss_fn(static(images), labels).backward()
        opt_static.step()

    trainers = {
        "supernet, sampled subnets": sampled,
        "supernet, largest subnet": super_largest,
        "  same, plain optimizer step": super_largest_plain,
        "static largest model": static_largest,
        "supernet, sandwich step": lambda: sandwich("off"),
        "  same, in-place KL": lambda: sandwich("kl"),
        "  same, + gradient projection": lambda: sandwich("kl", "largest"),
    }
    for fn in trainers.values():
        for _ in range(3):
            fn()
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    order = list(trainers)
    for block in range(args.blocks):
        random.Random(block).shuffle(order)
        for name in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                trainers[name]()
            rates[name].append(args.steps * batch / (time.perf_counter() - start))
    print(
        f"task {task.name}, space {space.name}, batch {batch}, {torch.get_num_threads()} threads, {args.blocks} x {args.steps} steps each"
    )
    base = statistics.median(rates["static largest model"])
    uniform = statistics.median(rates["supernet, sampled subnets"])
    for name, values in rates.items():
        rate = statistics.median(values)
        print(
            f"  {name:28s} {rate:8.0f} images/s   x{rate / base:.2f} of static largest   "
            f"step time x{uniform / rate:.2f} of a uniform step"
        )


if __name__ == "__main__":
    main()
