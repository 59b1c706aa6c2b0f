"""Training building blocks that need no Ray: per-step sampling, the exact step, the recipe, supernet files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pipeline.core.arch import Architecture
from pipeline.core.sampling import largest_architecture, smallest_architecture
from pipeline.core.space import load_space
from pipeline.core.task import load_task
from pipeline.model.supernet import Supernet
from pipeline.model.supernet_dir import load_supernet, save_supernet
from pipeline.shared.errors import UserError
from pipeline.shared.metrics import evaluate_each_sums, evaluate_sums, finish
from pipeline.training.exact_step import step_only_active
from pipeline.training.recipe import build_loss, build_mixup, build_optimizer, build_scheduler, scaled_lr
from pipeline.training.subject import step_architectures, tracked_subnets


def test_step_architecture_is_shared_by_ranks_and_reruns() -> None:
    space = load_space("digits")
    first = [step_architectures(space, 0, e, s)[0] for e in range(3) for s in range(10)]
    assert first == [step_architectures(space, 0, e, s)[0] for e in range(3) for s in range(10)]
    assert len({a.key for a in first}) > 20  # a fresh draw every step
    assert first != [step_architectures(space, 1, e, s)[0] for e in range(3) for s in range(10)]


def test_tracked_subnets_are_fixed_and_include_the_extremes() -> None:
    space = load_space("digits")
    subnets = tracked_subnets(space, seed=0, count=4)
    assert [n for n, _ in subnets] == ["smallest", "largest", "subnet0", "subnet1", "subnet2", "subnet3"]
    assert subnets == tracked_subnets(space, seed=0, count=4)


def _one_step(exact: bool) -> tuple[Supernet, dict[str, torch.Tensor], Architecture]:
    torch.manual_seed(0)
    space = load_space("digits")
    net = Supernet(space)
    task = load_task("digits")
    opt = build_optimizer(net, task.train)
    arch = Architecture(32, 2, [2, 2], [2.0, 2.0])
    images, labels = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    for _ in range(2):  # warm up AdamW's moments on the largest subnet first
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(images, largest_architecture(space)), labels).backward()
        opt.step()
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(images, arch), labels).backward()
    step_only_active(opt) if exact else opt.step()
    return net, before, arch


def test_exact_step_changes_only_the_subnet_slice() -> None:
    net, before, arch = _one_step(exact=True)
    after = net.state_dict()
    qkv = "blocks.0.attention.attn.qkv.weight"
    w0, w1 = before[qkv].view(3, 64, 64), after[qkv].view(3, 64, 64)
    assert not torch.equal(w0[:, :32, :32], w1[:, :32, :32])  # the subnet's slice trained
    assert torch.equal(w0[:, 32:, :], w1[:, 32:, :]) and torch.equal(w0[:, :, 32:], w1[:, :, 32:])  # nothing else
    for key in after:
        if key.startswith(("blocks.2.", "blocks.3.")):  # beyond the subnet's depth
            assert torch.equal(before[key], after[key]), key
    fc1 = "blocks.1.mlp.mlp.fc1.weight"
    assert torch.equal(before[fc1][64:], after[fc1][64:]) and torch.equal(before[fc1][:, 32:], after[fc1][:, 32:])


def test_plain_adamw_would_move_the_inactive_part() -> None:
    net, before, _ = _one_step(exact=False)
    qkv = "blocks.0.attention.attn.qkv.weight"
    assert not torch.equal(before[qkv].view(3, 64, 64)[:, 32:, :], net.state_dict()[qkv].view(3, 64, 64)[:, 32:, :])


def test_recipe_scales_lr_warms_up_and_decays() -> None:
    task = load_task(
        "digits", ["train.epochs=10", "train.warmup_epochs=2", "train.batch_size=64", "train.lr_base_batch=128"]
    )
    assert scaled_lr(task.train) == pytest.approx(task.train.optim.lr / 2)
    net = Supernet(load_space("digits"))
    opt = build_optimizer(net, task.train)
    sched = build_scheduler(opt, task.train, steps_per_epoch=5)
    lrs = []
    for step in range(1, 51):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    peak = max(lrs)
    assert lrs[0] < peak / 2 and lrs.index(peak) in range(8, 12) and lrs[-1] < peak / 10
    groups = {len(g["params"]): g["weight_decay"] for g in opt.param_groups}
    assert 0.0 in groups.values() and task.train.optim.weight_decay in groups.values()
    assert build_mixup(task.train, 10) is None  # digits: no Mixup/CutMix
    mix_task = load_task("digits", ["train.mixup=0.8", "train.cutmix=1.0"])
    assert build_mixup(mix_task.train, 10) is not None
    assert type(build_loss(mix_task.train, build_mixup(mix_task.train, 10))).__name__ == "SoftTargetCrossEntropy"


def test_evaluate_sums_add_up_across_shards() -> None:
    net = Supernet(load_space("digits")).eval()
    arch = largest_architecture(net.space)
    images, labels = torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,))
    whole = evaluate_sums(net, arch, [(images, labels)], torch.device("cpu"))
    parts = evaluate_sums(net, arch, [(images[:7], labels[:7])], torch.device("cpu")) + evaluate_sums(
        net, arch, [(images[7:], labels[7:])], torch.device("cpu")
    )
    assert torch.allclose(whole, parts)
    scores = finish(whole)
    assert 0 <= scores["top1"] <= scores["top5"] <= 1 and scores["loss"] > 0


def test_one_pass_scores_each_architecture_as_its_own_pass_would() -> None:
    net = Supernet(load_space("digits")).eval()
    archs = [smallest_architecture(net.space), largest_architecture(net.space)]
    batches = [(torch.randn(9, 1, 8, 8), torch.randint(0, 10, (9,))) for _ in range(3)]
    passes = []
    each = evaluate_each_sums(net, archs, (passes.append(b) or b for b in batches), torch.device("cpu"))
    assert len(passes) == 3  # the batches are read once, not once per architecture
    for row, arch in zip(each, archs):
        assert torch.allclose(row, evaluate_sums(net, arch, batches, torch.device("cpu")))
    assert not torch.equal(each[0], each[1])


def test_supernet_directory_round_trip(tmp_path: Path) -> None:
    net = Supernet(load_space("digits"), sharing="classical", drop_path_rate=0.2).eval()
    save_supernet(net, tmp_path / "s", epochs=3)
    loaded, config = load_supernet(tmp_path / "s")
    assert loaded.sharing == "classical" and loaded.drop_path_rate == 0.2 and config["epochs"] == 3
    images = torch.randn(4, 1, 8, 8)
    arch = largest_architecture(net.space)
    with torch.no_grad():
        assert torch.equal(net(images, arch), loaded(images, arch))
    with pytest.raises(UserError, match="no config.json"):
        load_supernet(tmp_path / "missing")


def test_newest_complete_checkpoint_skips_cut_short_ones(tmp_path: Path) -> None:
    from pipeline.training.checkpoint import newest_complete_checkpoint, write_checkpoint
    from pipeline.training.recipe import build_scheduler

    assert newest_complete_checkpoint(str(tmp_path), "run") is None
    task = load_task("digits")
    net = Supernet(load_space("digits"))
    opt = build_optimizer(net, task.train)
    sched = build_scheduler(opt, task.train, steps_per_epoch=3)
    for epoch, name in ((2, "checkpoint_2026-01-01_00-00-02"), (3, "checkpoint_2026-01-01_00-00-03")):
        write_checkpoint(tmp_path / "run" / name, net, opt, sched, {"epoch": epoch, "task": task.to_dict()})
    path, state = newest_complete_checkpoint(str(tmp_path), "run")
    assert state["epoch"] == 3 and path.endswith("00-00-03")
    weights = tmp_path / "run" / "checkpoint_2026-01-01_00-00-03" / "supernet.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short while being written
    path, state = newest_complete_checkpoint(str(tmp_path), "run")
    assert state["epoch"] == 2 and path.endswith("00-00-02")


def test_the_result_takes_the_newest_checkpoint_on_storage_when_rays_is_older(tmp_path: Path) -> None:
    """A node lost right after the last epoch's checkpoint was written, before Ray recorded it: the restarted
    workers find it on storage and have nothing left to train; the run is finished, not interrupted (a cluster
    drill saw Ray's result name epoch 7 of 8 and the run end as interrupted)."""
    import dataclasses

    import ray.train

    from pipeline.training.checkpoint import write_checkpoint
    from pipeline.training.launch import _with_final_checkpoint
    from pipeline.training.recipe import build_scheduler

    task = load_task("digits")
    net = Supernet(load_space("digits"))
    opt = build_optimizer(net, task.train)
    sched = build_scheduler(opt, task.train, steps_per_epoch=3)
    for epoch in (7, 8):
        write_checkpoint(tmp_path / "run" / f"checkpoint_2026-01-01_00-00-0{epoch}", net, opt, sched,
                         {"epoch": epoch, "task": task.to_dict()})  # fmt: skip

    @dataclasses.dataclass
    class Result:
        checkpoint: ray.train.Checkpoint | None

    for recorded in (None, "checkpoint_2026-01-01_00-00-07"):
        given = Result(recorded and ray.train.Checkpoint(str(tmp_path / "run" / recorded)))
        assert _with_final_checkpoint(given, str(tmp_path), "run").checkpoint.path.endswith("00-00-08")
    newest = Result(ray.train.Checkpoint(str(tmp_path / "run" / "checkpoint_2026-01-01_00-00-08")))
    assert _with_final_checkpoint(newest, str(tmp_path), "run") is newest


def test_a_damaged_optimizer_file_falls_back_to_the_checkpoint_before(tmp_path: Path, capsys) -> None:
    """Every file of a checkpoint must match its checksum: a truncated optimizer.pt (or one flipped byte)
    sends resume to the newest sound checkpoint, and says which it skipped and why."""
    from pipeline.training.checkpoint import checkpoint_problem, newest_complete_checkpoint, write_checkpoint
    from pipeline.training.recipe import build_scheduler

    task = load_task("digits")
    net = Supernet(load_space("digits"))
    opt = build_optimizer(net, task.train)
    sched = build_scheduler(opt, task.train, steps_per_epoch=3)
    names = ["checkpoint_2026-01-01_00-00-01", "checkpoint_2026-01-01_00-00-02", "checkpoint_2026-01-01_00-00-03"]
    for epoch, name in enumerate(names, 1):
        write_checkpoint(tmp_path / "run" / name, net, opt, sched, {"epoch": epoch, "task": task.to_dict()})
    newest = tmp_path / "run" / names[2]
    optimizer = newest / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:-10])
    middle = tmp_path / "run" / names[1] / "supernet.safetensors"
    data = bytearray(middle.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in a weight: the header still reads, the checksum does not match
    middle.write_bytes(bytes(data))
    assert "optimizer.pt is corrupted or truncated" in checkpoint_problem(newest)
    path, state = newest_complete_checkpoint(str(tmp_path), "run")
    assert state["epoch"] == 1 and path.endswith(names[0])
    out = capsys.readouterr().out
    assert f"not resuming from {names[2]}: optimizer.pt" in out and f"not resuming from {names[1]}: supernet" in out


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_weights_files_are_refused_with_one_line(tmp_path: Path, damage: str) -> None:
    from pipeline.api import export_model
    from pipeline.model.subnet_dir import load_model

    space = load_space("digits")
    save_supernet(Supernet(space), tmp_path / "supernet")
    export_model(Supernet(space), Architecture(32, 2, (2, 2), (2.0, 2.0)), tmp_path / "model", load_task("digits"))
    for path, load, name in (
        (tmp_path / "supernet", load_supernet, "supernet.safetensors"),
        (tmp_path / "model", load_model, "model.safetensors"),
    ):
        weights = path / name
        data = bytearray(weights.read_bytes())
        if damage == "flip":
            data[len(data) // 2] ^= 0x01
        else:
            del data[len(data) // 2 :]
        weights.write_bytes(bytes(data))
        with pytest.raises(UserError, match=f"{name} is corrupted or was changed after it was written"):
            load(path)


def test_a_restart_is_told_by_the_run_directory_and_finds_the_newest_checkpoint(tmp_path: Path) -> None:
    """Each start of the workers looks at storage again; a second start within one fit() call (same attempt) is
    a restart even when the checkpoint it resumes from came from an earlier call."""
    import json

    from pipeline.model.directory import file_checksum
    from pipeline.training.checkpoint import OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE
    from pipeline.training.run_spec import SubjectSpec, WorkerConfig
    from pipeline.training.session import Session
    from pipeline.training.worker import start_point

    where = Session(rank=0, world=1, device=torch.device("cpu"), prepare_model=None, prepare_loader=None, report=None,
                    checkpoint=None)  # fmt: skip
    config = WorkerConfig(load_task("digits"), SubjectSpec(), "train", "a1", 1, run=(str(tmp_path), "run"))
    assert start_point(config, where) == (False, None)  # first start of fit() call a1
    checkpoint = tmp_path / "run" / "checkpoint_000000"
    checkpoint.mkdir()
    for name in (WEIGHTS_FILE, OPTIMIZER_FILE):
        (checkpoint / name).write_bytes(b"x")
    sums = {name: file_checksum(checkpoint / name) for name in (WEIGHTS_FILE, OPTIMIZER_FILE)}
    (checkpoint / STATE_FILE).write_text(json.dumps({"epoch": 1, "checksums": sums}))
    assert start_point(config, where) == (
        True,
        {"path": str(checkpoint), "progress": (1, 0)},
    )  # Ray restarted a1's workers
    assert start_point(dataclasses.replace(config, attempt="a2"), where)[0] is False  # the command run again: a resume
    trial = dataclasses.replace(config, attempt="t", run=None, newest_checkpoint=None)
    assert start_point(trial, where) == (None, None)  # a Tune trial


def test_a_preemption_notice_asks_for_one_checkpoint_and_a_stop_request_wins() -> None:
    """Ray's notice is asked for every NOTICE_POLL_S seconds (all ranks together); once given, the loop writes
    one checkpoint and trains on; the driver's stop request (SIGTERM) still stops the run."""
    from pipeline.training.stop import CHECKPOINT, NOTICE_POLL_S, STOP, StopWatch

    now, asked = [0.0], []

    def notice() -> object | None:
        asked.append(now[0])
        return "node going" if now[0] >= 3 * NOTICE_POLL_S else None

    watch = StopWatch(None, rank=0, world=1, notice=notice, clock=lambda: now[0])
    answers = []
    for tick in range(int(6 * NOTICE_POLL_S)):
        now[0] = float(tick)
        answers.append(watch.requested(torch.device("cpu")))
    assert asked == [NOTICE_POLL_S, 2 * NOTICE_POLL_S, 3 * NOTICE_POLL_S]  # none after the one acted on
    assert answers.count(CHECKPOINT) == 1 and answers[int(3 * NOTICE_POLL_S)] == CHECKPOINT
    assert watch.preemption == "node going"
    watch.seen.set()
    assert watch.requested(torch.device("cpu")) == STOP
    assert StopWatch(None, rank=0, world=1).requested(torch.device("cpu")) is None  # no notice: a Tune trial
