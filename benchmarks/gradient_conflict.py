"""Do a sandwich step's smaller subnets pull the shared weights against the largest subnet? (one run, no timing)

NASViT (Gong et al., ICLR 2022) traces the poor training of vision-transformer supernets with the sandwich rule
and in-place distillation to conflicting gradients: the smaller subnets' gradients on the shared weights point
away from the largest subnet's. This measures it on trained supernets (and a fresh one): for sandwich steps on
the task's training images (seeded draws and augmentation, as in training), the cosine between the gradient of
the largest subnet's label loss and the summed gradient of the other subnets' losses: with their label losses
(the plain sandwich rule), with KL to the largest subnet's detached predictions and with AlphaNet's adaptive
alpha-divergence to them (in-place distillation), on the same weights and batches. A negative cosine means that the step's students, summed,
undo part of the largest subnet's step; the norm ratio says how much of the step (and, with Adam, of its
per-entry scale) the students' gradient takes. The first column, the largest subnet's prediction entropy,
shows whether its predictions (the students' targets) have gone flat. Run::

    python benchmarks/gradient_conflict.py --task benchmarks/tasks/cifar10-subset.yaml \
        --set data.root=../shared/data/cifar10-10k --supernet RUN/supernet ... [--supernet init] [--batches 8]
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pipeline.core.task import load_task
from pipeline.core.training_settings import TrainSettings  # noqa: E402
from pipeline.data.sources import open_sources
from pipeline.data.splits import SplitDataset, plan_from_settings
from pipeline.data.transforms import train_transform
from pipeline.model.supernet import Supernet
from pipeline.model.supernet_dir import load_supernet
from pipeline.training.distill import adaptive_alpha_divergence, kl_to_targets
from pipeline.training.recipe import build_loss
from pipeline.training.subject import step_architectures


def flat_grad(model: torch.nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """The loss's gradient over every parameter as one vector (zeros where the subnet does not reach)."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])


def cosines(
    model: torch.nn.Module, archs: list, images: torch.Tensor, labels: torch.Tensor, loss_fn, tr: TrainSettings
) -> list:
    """The largest subnet's mean prediction entropy, then (cos, norm ratio) of the students' summed gradient against
    its label gradient, with the students' label, KL and alpha-divergence losses."""
    largest_out = model(images, archs[0])
    g_largest = flat_grad(model, loss_fn(largest_out, labels))
    targets = F.softmax(largest_out.detach().float(), dim=-1)
    student_losses = (
        lambda out: loss_fn(out, labels),
        lambda out: kl_to_targets(out, targets),
        lambda out: adaptive_alpha_divergence(
            out, targets, tr.supernet.alpha_min, tr.supernet.alpha_max, tr.supernet.alpha_clip
        ),
    )
    probs = targets.clamp_min(1e-12)
    result = [(float(-(probs * probs.log()).sum(-1).mean()), 0.0)]  # the largest subnet's prediction entropy
    for loss in student_losses:
        g_students = sum(flat_grad(model, loss(model(images, a))) for a in archs[1:])
        cos = float(F.cosine_similarity(g_largest, g_students, dim=0))
        result.append((cos, float(g_students.norm() / g_largest.norm())))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--supernet", action="append", required=True, help="a supernet directory, or 'init'")
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    task = load_task(args.task, args.overrides)
    tr = task.train
    pool, own_test = open_sources(task.data)
    plan = plan_from_settings(pool.labels, task.splits, has_own_test=own_test is not None)
    train_set = SplitDataset(pool, plan.train, train_transform(task.data, tr.augment), "train")
    loss_fn = build_loss(tr, None)

    columns = ("largest: entropy", "students: labels", "in-place KL", "in-place alpha-div.")
    print(
        f"cos(largest subnet's gradient, the other subnets' summed gradient), mean over {args.batches} batches "
        "(batches with a negative cosine), and the sum's norm as a multiple of the largest's; first the largest "
        f"subnet's mean prediction entropy (training mode; uniform guessing: {math.log(task.data['num_classes'] or 10):.2f})"
    )
    print(f"{'supernet':<48}" + "".join(f"{c:>24}" for c in columns))
    for source in args.supernet:
        torch.manual_seed(tr.seed)
        if source == "init":
            space = task.space(num_classes=len(pool.classes))
            model = Supernet(space, sharing=task.model["sharing"], drop_path_rate=task.model["drop_path_rate"])
        else:
            model = load_supernet(source)[0]
            space = model.space
        model.train()
        loader = DataLoader(
            train_set,
            batch_size=tr.batch_size,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(tr.seed),
        )
        values: list[list[tuple[float, float]]] = [[] for _ in columns]
        for step, (images, labels) in zip(range(args.batches), loader):
            archs = step_architectures(space, tr.seed, 0, step, "sandwich", tr.supernet.sandwich_random)
            for column, value in zip(values, cosines(model, archs, images, labels, loss_fn, tr)):
                column.append(value)
        entropy, *pairs = values
        cells = [f"{statistics.mean(e for e, _ in entropy):.2f}"] + [
            f"{statistics.mean(c for c, _ in xs):+.3f} ({sum(c < 0 for c, _ in xs)}/{len(xs)}) "
            f"x{statistics.mean(r for _, r in xs):.2f}"
            for xs in pairs
        ]
        print(f"{source[-48:]:<48}" + "".join(f"{c:>24}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
