"""Sandwich sampling, in-place distillation and external teachers (issue: better subnets from the same supernet)."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.core.arch import Architecture
from pipeline.core.sampling import largest_architecture, smallest_architecture
from pipeline.core.space import load_space
from pipeline.core.task import load_task
from pipeline.model.static import StaticViT
from pipeline.model.subnet_dir import save_model
from pipeline.model.supernet import Supernet
from pipeline.shared.errors import UserError
from pipeline.training.distill import adaptive_alpha_divergence, alpha_divergence, kl_to_targets
from pipeline.training.exact_step import step_only_active
from pipeline.training.recipe import build_optimizer
from pipeline.training.rules.projection import project_conflicting
from pipeline.training.rules.teacher import label_loss
from pipeline.training.step import forward_backward
from pipeline.training.subject import step_architectures
from pipeline.training.teacher import load_teacher

SANDWICH = ["train.sampling=sandwich", "train.sandwich_random=2"]


def test_sandwich_draws_depend_only_on_seed_epoch_and_step() -> None:
    """Every rank (and a resumed run) computes the same subnets: nothing but (seed, epoch, step) goes in."""
    space = load_space("digits")
    draws = [step_architectures(space, 0, e, s, "sandwich", 2) for e in range(2) for s in range(8)]
    assert draws == [step_architectures(space, 0, e, s, "sandwich", 2) for e in range(2) for s in range(8)]
    assert all(len(d) == 4 for d in draws)
    assert all(d[0] == largest_architecture(space) and d[1] == smallest_architecture(space) for d in draws)
    assert len({d[2].key for d in draws}) > 8  # fresh random members every step
    assert draws != [step_architectures(space, 1, e, s, "sandwich", 2) for e in range(2) for s in range(8)]
    uniform = [step_architectures(space, 0, 0, s) for s in range(8)]
    assert all(len(d) == 1 for d in uniform)


def test_inplace_distillation_needs_the_sandwich_rule() -> None:
    with pytest.raises(UserError, match="train.inplace_distillation.*needs train.sampling = sandwich"):
        load_task("digits", ["train.inplace_distillation=kl"])
    assert load_task("digits", ["train.teacher=none"]).train.teacher.source is None
    task = load_task("digits", ["train.teacher=/t", "retrain.teacher=none"])  # none there: explicitly no teacher
    assert task.recipe("retrain").teacher.source is None and task.recipe("finetune").teacher.source == "/t"


def test_divergences_are_zero_at_the_targets_and_kl_at_alpha_one() -> None:
    logits = torch.randn(6, 10)
    targets = torch.softmax(torch.randn(6, 10), -1)
    own = torch.softmax(logits, -1)
    assert adaptive_alpha_divergence(logits, own, -1.0, 1.0, 5.0).abs().item() < 1e-5
    assert torch.allclose(alpha_divergence(logits, targets, 1.0, 1e9).mean(), kl_to_targets(logits, targets))
    assert torch.allclose(
        alpha_divergence(logits, targets, 0.999, 1e9), alpha_divergence(logits, targets, 1.0, 1e9), atol=1e-2
    )
    assert adaptive_alpha_divergence(logits, targets, -1.0, 1.0, 5.0).item() > 0


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))


def test_inplace_distillation_sends_no_gradient_into_the_teachers_soft_targets() -> None:
    """Layers only the largest subnet reaches get exactly the gradient of its own label loss: the smaller subnet's
    distillation loss does not flow back through the soft targets into the teacher subnet."""
    space = load_space("digits")
    task = load_task("digits", [*SANDWICH, "train.inplace_distillation=kl"])
    images, labels = _batch()
    net = Supernet(space)
    archs = [largest_architecture(space), smallest_architecture(space)]
    loss_fn = torch.nn.CrossEntropyLoss()
    forward_backward(net, net, archs, images, labels, None, loss_fn, nullcontext, task.train)
    deep = {n: p.grad.clone() for n, p in net.named_parameters() if n.startswith("blocks.3.")}
    assert deep and all(g.abs().sum() > 0 for g in deep.values())
    net.zero_grad(set_to_none=True)
    label_loss(loss_fn, net(images, archs[0]), labels, None, task.train.teacher).backward()
    for name, grad in deep.items():
        assert torch.allclose(grad, dict(net.named_parameters())[name].grad, atol=1e-6), name


def test_exact_step_with_several_subnets_leaves_what_none_touched() -> None:
    space = load_space("digits")
    task = load_task("digits", SANDWICH)
    images, labels = _batch()
    net = Supernet(space)
    optimizer = build_optimizer(net, task.train)
    archs = [Architecture(32, 2, (2, 2), (2.0, 2.0)), Architecture(48, 1, (2,), (3.0,))]
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    forward_backward(net, net, archs, images, labels, None, torch.nn.CrossEntropyLoss(), nullcontext, task.train)
    step_only_active(optimizer)
    after = net.state_dict()
    qkv0 = "blocks.0.attention.attn.qkv.weight"
    w0, w1 = before[qkv0].view(3, 64, 64), after[qkv0].view(3, 64, 64)
    # rows: heads x head dim (2 heads: 32 rows for both subnets); columns: the embedding (32 and 48 wide)
    assert not torch.equal(w0[:, :32, :32], w1[:, :32, :32])  # trained by both subnets
    assert not torch.equal(w0[:, :32, 32:48], w1[:, :32, 32:48])  # trained by the wider one
    assert torch.equal(w0[:, 32:, :], w1[:, 32:, :]) and torch.equal(w0[:, :, 48:], w1[:, :, 48:])  # by neither
    qkv1 = "blocks.1.attention.attn.qkv.weight"  # only the first subnet reaches layer 1, at width 32
    v0, v1 = before[qkv1].view(3, 64, 64), after[qkv1].view(3, 64, 64)
    assert not torch.equal(v0[:, :32, :32], v1[:, :32, :32]) and torch.equal(v0[:, 32:, :], v1[:, 32:, :])
    for key in after:
        if key.startswith(("blocks.2.", "blocks.3.")):
            assert torch.equal(before[key], after[key]), key


def test_gradient_projection_needs_the_sandwich_rule_and_off_means_off() -> None:
    with pytest.raises(UserError, match="train.gradient_projection': 'largest' needs train.sampling = sandwich"):
        load_task("digits", ["train.gradient_projection=largest"])
    # YAML reads a bare off as false: it still means off, for every off-or-something setting
    task = load_task("digits", ["train.gradient_projection=off", "train.inplace_distillation=off"])
    assert task.train.supernet.gradient_projection == "off" and task.train.supernet.inplace_distillation == "off"
    with pytest.raises(UserError, match="'train.gradient_projection': value True is not allowed; expected one of off"):
        load_task("digits", [*SANDWICH, "train.gradient_projection=true"])


def test_projection_removes_only_a_conflicting_component() -> None:
    first = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    against = [torch.tensor([-2.0, 3.0]), torch.tensor([5.0])]
    assert project_conflicting(first, against)
    assert torch.equal(against[0], torch.tensor([0.0, 3.0])) and torch.equal(against[1], torch.tensor([5.0]))
    assert torch.equal(first[0], torch.tensor([1.0, 0.0]))  # the largest subnet's gradient is never changed
    along = [torch.tensor([2.0, 3.0]), torch.tensor([5.0])]
    assert not project_conflicting(first, along) and torch.equal(along[0], torch.tensor([2.0, 3.0]))


def _separate_gradients(net: Supernet, archs: list, images: torch.Tensor, labels: torch.Tensor) -> tuple:
    """The largest subnet's label gradient and the others' summed in-place KL gradient, each on its own."""
    loss_fn = torch.nn.CrossEntropyLoss()
    net.zero_grad(set_to_none=True)
    out = net(images, archs[0])
    loss_fn(out, labels).backward()
    first = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    targets = torch.softmax(out.detach(), -1)
    for arch in archs[1:]:
        kl_to_targets(net(images, arch), targets).backward()
    rest = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    return first, rest


def _projected_sum(first: list[torch.Tensor], rest: list[torch.Tensor], priority: str) -> list[torch.Tensor]:
    """first + rest, the one without priority minus its component along the other when they conflict."""
    keep, move = (first, rest) if priority == "largest" else (rest, first)
    dot = sum((a * b).sum() for a, b in zip(keep, move))
    norm = sum((a * a).sum() for a in keep)
    moved = [m - min(float(dot), 0.0) / float(norm) * k for k, m in zip(keep, move)]
    return [k + m for k, m in zip(keep, moved)]


@pytest.mark.parametrize("priority", ["largest", "others"])
def test_projected_step_keeps_the_priority_gradient_whole(priority: str) -> None:
    """In-place KL students pull against the largest subnet on a fresh supernet (benchmarks/gradient_conflict.py
    measures the same on trained ones): the step is the priority side's gradient whole plus only the part of the
    other side's that does not oppose it."""
    space = load_space("digits")
    task = load_task("digits", [*SANDWICH, "train.inplace_distillation=kl", f"train.gradient_projection={priority}"])
    images, labels = _batch()
    torch.manual_seed(1)
    net = Supernet(space)
    archs = step_architectures(space, 0, 0, 0, "sandwich", 2)
    first, rest = _separate_gradients(net, archs, images, labels)
    assert sum((a * b).sum() for a, b in zip(first, rest)) < 0  # a conflict to remove
    forward_backward(net, net, archs, images, labels, None, torch.nn.CrossEntropyLoss(), nullcontext, task.train)
    got = [p.grad if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]
    for g, want in zip(got, _projected_sum(first, rest, priority)):
        assert torch.allclose(g, want, atol=1e-5)
    kept = first if priority == "largest" else rest
    assert sum((g * a).sum() for g, a in zip(got, kept)) > 0


def _projected_rank(rank: int, port: int, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    space = load_space("digits")
    task = load_task("digits", [*SANDWICH, "train.inplace_distillation=kl", "train.gradient_projection=largest"])
    torch.manual_seed(1)
    net = Supernet(space)
    torch.manual_seed(10 + rank)  # each rank its own batch
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    archs = step_architectures(space, 0, 0, 0, "sandwich", 2)
    forward_backward(net, net, archs, images, labels, None, torch.nn.CrossEntropyLoss(), nullcontext, task.train)
    results[rank] = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]
    dist.destroy_process_group()


def test_ranks_project_the_averaged_gradients_and_agree() -> None:
    """With DDP both parts are averaged over the ranks before the projection: every rank steps the same, and
    the step is the projection of the averaged gradients (not the average of each rank's projection)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_projected_rank, args=(port, results), nprocs=2, join=True)
        ranks = [results[0], results[1]]
    space = load_space("digits")
    torch.manual_seed(1)
    net = Supernet(space)
    archs = step_architectures(space, 0, 0, 0, "sandwich", 2)
    parts = []
    for rank in range(2):
        torch.manual_seed(10 + rank)
        parts.append(_separate_gradients(net, archs, torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))))
    first = [(a + b) / 2 for a, b in zip(parts[0][0], parts[1][0])]
    rest = [(a + b) / 2 for a, b in zip(parts[0][1], parts[1][1])]
    for g0, g1, want in zip(*ranks, _projected_sum(first, rest, "largest")):
        assert torch.equal(g0, g1) and torch.allclose(g0, want, atol=1e-5)


def _digits_model(tmp_path: Path, num_classes: int) -> Path:
    space = load_space("digits").with_overrides(num_classes=num_classes)
    model = StaticViT(smallest_architecture(space), space.fixed_parts())
    return save_model(model, tmp_path / f"teacher-{num_classes}", normalization={"mean": [0.5], "std": [0.25]})


def test_a_model_directory_teacher_sees_its_own_normalization(tmp_path: Path) -> None:
    task = load_task("digits")
    space = task.space()
    teacher = load_teacher(str(_digits_model(tmp_path, 10)), task, space, torch.device("cpu"))
    raw = torch.rand(2, 1, 8, 8)
    ours = (raw - task.data["mean"][0]) / task.data["std"][0]
    assert torch.allclose(teacher.logits(ours), teacher.model((raw - 0.5) / 0.25), atol=1e-5)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("WRONG", "takes 1 x 8 px images into 5 classes, task 'digits' has 1 x 8 px images and 10 classes"),
        (
            "timm:resnet18@/nowhere/w.pth",
            "weights file '/nowhere/w.pth' does not exist (teachers are never downloaded)",
        ),
        ("timm:resnet18", "expected timm:NAME@WEIGHTS_FILE"),
        ("/nowhere", "not a directory; allowed: none, a model directory"),
    ],
)
def test_a_teacher_that_does_not_fit_fails_with_one_line_and_writes_nothing(
    tmp_path: Path, spec: str, message: str
) -> None:
    if spec == "WRONG":
        spec = str(_digits_model(tmp_path, 5))
    storage = tmp_path / "runs"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli.main",
            "train",
            "digits",
            "--storage",
            str(storage),
            "--set",
            f"train.teacher={spec}",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert message in out.stderr
    assert not storage.exists() or not any(storage.iterdir())


def test_timm_teacher_weights_of_another_class_count_are_refused(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    weights = tmp_path / "w.pth"
    torch.save(timm.create_model("resnet10t", num_classes=7, in_chans=1).state_dict(), weights)
    task = load_task("digits")
    with pytest.raises(UserError, match="do not fit resnet10t with 10 classes"):
        load_teacher(f"timm:resnet10t@{weights}", task, task.space(), torch.device("cpu"))
    torch.save(timm.create_model("resnet10t", num_classes=10, in_chans=1).state_dict(), weights)
    teacher = load_teacher(f"timm:resnet10t@{weights}", task, task.space(), torch.device("cpu"))
    assert teacher.logits(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.slow
def test_sandwich_inplace_and_teacher_train_with_two_workers(tmp_path: Path) -> None:
    """The CLI run the issue names, with DDP: both ranks draw the same sandwich (else the all-reduce would not
    line up), and the export records how the supernet was trained."""
    teacher = _digits_model(tmp_path, 10)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli.main",
            "train",
            "digits",
            "--storage",
            str(tmp_path / "runs"),
            "--workers",
            "2",
            "--cpus-per-worker",
            "0.5",
            "--set",
            "train.epochs=2",
            "--set",
            "train.warmup_epochs=1",
            "--set",
            "train.eval_subnets=0",
            "--set",
            "train.sampling=sandwich",
            "--set",
            "train.inplace_distillation=kl",
            "--set",
            f"train.teacher={teacher}",
            "--set",
            "train.distill=soft",
            "--set",
            "train.gradient_projection=others",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    config = json.loads((tmp_path / "runs" / "digits-supernet" / "supernet" / "config.json").read_text())
    mode = config["training"]
    assert mode["sampling"] == "sandwich" and mode["subnets_per_step"] == 4
    assert mode["inplace_distillation"] == "kl" and mode["teacher"] == str(teacher) and mode["distill"] == "soft"
    assert mode["gradient_projection"] == "others"
    assert mode["images_per_s"] > 0 and config["workers"] == 2
