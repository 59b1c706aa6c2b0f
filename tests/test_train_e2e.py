"""End-to-end supernet training through the CLI (Ray Train on this machine): slow, run in CI.

Each test runs ``autoformer train`` in its own process, as a user would, so each gets its own Ray instance.
Workers get fractional CPUs so that two of them fit on a 2-core machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.model.supernet_dir import load_supernet
from pipeline.shared.faults import FAULT_ENV, TOKEN_ENV
from pipeline.training.checkpoint import newest_complete_checkpoint

pytestmark = pytest.mark.slow

FAST = ["--set", "train.warmup_epochs=1", "--set", "train.checkpoint_every=1", "--set", "train.eval_subnets=1"]


def _train(storage: Path, *args: str, timeout: float = 600, fault: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli.main", "train", "digits", "--storage", str(storage), *FAST, *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if fault:
        env.update({FAULT_ENV: fault, TOKEN_ENV: str(storage / "fault-token")})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _export(storage: Path, name: str = "digits-supernet") -> dict:
    model, config = load_supernet(storage / name / "supernet")
    assert model.space.name == "digits"
    return config


def _check_ok(out: subprocess.CompletedProcess) -> None:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_one_worker_trains_checkpoints_and_exports(one_worker_training) -> None:
    # FAST, 2 epochs, 1 worker x 1 CPU (tests/conftest.py; it also logs to every tracker, which tests/test_tracking.py
    # reads): the console stays quiet with them too
    tmp_path, out = one_worker_training
    _check_ok(out)
    assert "[train] epoch 2/2" in out.stdout and out.stdout.count("[train] epoch 1/2 ") == 1
    config = _export(tmp_path)
    assert config["epochs"] == 2 and config["restarts"] == 0 and config["resumes"] == 0
    assert config["splits"]["search"]["size"] == 200 and config["splits"]["test"]["size"] == 300
    assert config["splits"]["train"]["size"] == 1797 - 500
    metrics = config["metrics"]
    for key in (
        "train_loss",
        "lr",
        "images_per_s",
        "search_top1/smallest",
        "search_top1/largest",
        "search_top1/subnet0",
    ):
        assert key in metrics
    assert [h["epoch"] for h in config["history"]] == [1, 2]
    assert len([p for p in (tmp_path / "digits-supernet").glob("checkpoint_*") if p.is_dir()]) <= 2
    _check_quiet(out.stdout + out.stderr)


def _check_quiet(printed: str) -> None:
    """A quiet console (output not a terminal): our own lines, no colour codes, none of Ray's start-up,
    dashboard, token or PreemptionWatcher notes, no DDP warning about unused parameters."""
    assert "\x1b[" not in printed
    for noise in ("dashboard", "PreemptionWatcher", "auth", "find_unused_parameters", "Tuner.restore", "Traceback"):
        assert noise not in printed, noise
    lines = [line for line in printed.splitlines() if line.strip()]
    ours = [line for line in lines if "[train]" in line]
    assert len(ours) >= len(lines) - 2, printed[-3000:]  # at most a stray line beside ours


def test_two_workers_ddp(tmp_path: Path) -> None:
    out = _train(tmp_path, "--workers", "2", "--cpus-per-worker", "0.5", "--set", "train.epochs=2")
    _check_ok(out)
    _check_quiet(out.stdout + out.stderr)  # DDP's find_unused_parameters warning comes with two ranks
    config = _export(tmp_path)
    assert config["workers"] == 2 and config["epochs"] == 2
    assert len(config["nodes"]) == 2 and all(len(n) == 56 for n in config["nodes"])  # each rank's Ray node


def test_worker_failure_restarts_from_last_checkpoint(tmp_path: Path) -> None:
    out = _train(
        tmp_path, "--workers", "2", "--cpus-per-worker", "0.5", "--set", "train.epochs=3", fault="train_exit_at_epoch=2"
    )
    _check_ok(out)
    assert "fault injection: rank 1 exits at the start of epoch 2" in out.stdout + out.stderr
    # Ray restarts from the newest checkpoint its controller had committed (epoch 1 or 2 of 3).
    assert "continuing from epoch" in out.stdout and "(restarts 1, resumes 0)" in out.stdout
    config = _export(tmp_path)
    assert config["restarts"] == 1 and config["resumes"] == 0
    assert [h["epoch"] for h in config["history"]] == [1, 2, 3]


def _latest_epoch(run: Path) -> int:
    newest = newest_complete_checkpoint(str(run.parent), run.name)
    return newest[1]["epoch"] if newest else 0


def test_sigterm_checkpoints_at_the_next_step_and_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """A spot node's SIGTERM with checkpoints far apart: the run checkpoints at its next step (mid-epoch), exits
    143 saying where, and the same command ends with the weights of a run that was never stopped."""
    from safetensors.torch import load_file

    # 81 steps an epoch (batch 16), two seconds or more, and three epochs after the signal: the stop request
    # (polled each second) reaches the workers while they train, not after a run of fast epochs has already
    # finished (4 epochs of 0.35 s did: exit 0)
    args = ["--set", "train.epochs=4", "--set", "train.checkpoint_every=100", "--set", "train.batch_size=16"]
    args += ["--set", "train.probe_archs=4", "--set", "train.probe_every=1"]  # the probe's history resumes too
    _check_ok(_train(tmp_path / "whole", *args))
    cmd = [sys.executable, "-m", "pipeline.cli.main", "train", "digits", "--storage", str(tmp_path / "cut"), *FAST,
           *args]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "[train] epoch 1/4 " in line:
            proc.send_signal(signal.SIGTERM)
            break
    printed = "".join(seen) + proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, printed[-3000:]
    assert "[train] SIGTERM: the workers checkpoint at their next step and stop" in printed, printed[-3000:]
    kept = re.search(r"keeps its checkpoint at epoch (\d), step (\d+) of epoch \d; the same command resumes", printed)
    assert kept and not (tmp_path / "cut" / "digits-supernet" / "supernet").exists(), printed[-3000:]
    out = _train(tmp_path / "cut", *args)
    _check_ok(out)
    epoch, step = kept.groups()
    assert f"continuing from epoch {epoch}, step {step} of epoch {int(epoch) + 1} (restarts 0, resumes 1)" in out.stdout
    config = _export(tmp_path / "cut")
    assert [h["epoch"] for h in config["history"]] == [1, 2, 3, 4] and config["resumes"] == 1
    whole, cut = (load_file(p / "digits-supernet" / "supernet" / "supernet.safetensors") for p in (tmp_path / "whole", tmp_path / "cut"))  # fmt: skip
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    probes = [pd.read_parquet(p / "digits-supernet" / "probe.parquet") for p in (tmp_path / "whole", tmp_path / "cut")]
    probes = [p.drop(columns="seconds") for p in probes]  # the scoring times differ; the scores may not
    assert len(probes[0]) == 4 * 4 and probes[0].equals(probes[1])  # 4 evaluations x 4 architectures, as if never cut
    assert config["probe"] == _export(tmp_path / "whole")["probe"]


def test_the_probe_scores_while_training_and_its_stop_rule_ends_the_run(tmp_path: Path) -> None:
    """The convergence probe: 4 architectures scored after every epoch (tau against the previous evaluation and
    the spread on the epoch line), its history in probe.parquet and config.json; the stop rule (here: any
    defined tau, once) ends training early with the usual checkpoint and export."""
    probe = ["train.probe_archs=4", "train.probe_every=1", "train.stop_when_stable=[-1, 1]", "train.epochs=10"]
    out = _train(tmp_path, *[a for s in probe for a in ("--set", s)])
    _check_ok(out)
    config = _export(tmp_path)
    stopped = config["epochs"]
    assert 2 <= stopped < 10, out.stdout[-3000:]
    assert f"training ends after epoch {stopped} of 10" in out.stdout
    lines = re.findall(r"\[train\] epoch \d+/10 .* probe tau (\S+) spread (\S+)", out.stdout)
    assert len(lines) == stopped and lines[0][0] == "-" and lines[-1][0] != "-"
    record = config["probe"]
    assert record["evaluations"] == stopped and record["stable_since"] == stopped and record["every"] == 1
    assert record["stop_when_stable"] == [-1, 1] and len(record["archs"]) == 4
    assert record["last_tau"] == pytest.approx(float(lines[-1][0]), abs=0.005)
    table = pd.read_parquet(tmp_path / "digits-supernet" / "probe.parquet")
    assert len(table) == 4 * stopped and sorted(set(table.epoch)) == list(range(1, stopped + 1))
    assert list(table.architecture[:4]) == record["archs"] and (table.params.diff()[:4].dropna() > 0).all()
    assert f"stopped at epoch {stopped} of 10 by stop_when_stable" in out.stdout
    assert (table.seconds > 0).all()  # what each evaluation cost, also on the last line:
    assert re.search(
        rf"probe of 4 architectures \({stopped} evaluations, \d+ s: [\d.]+ % of the training time\)", out.stdout
    )


def test_interrupted_driver_resumes_when_run_again(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli.main",
        "train",
        "digits",
        "--storage",
        str(tmp_path),
        *FAST,
        "--set",
        "train.epochs=8",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    run = tmp_path / "digits-supernet"
    deadline = time.time() + 300
    while _latest_epoch(run) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    printed, _ = proc.communicate(timeout=120)
    interrupted_at = _latest_epoch(run)
    assert 2 <= interrupted_at < 8
    # Ctrl-C says what is kept and exits as interrupted programs do, without exporting an unfinished supernet
    assert proc.returncode == 130, printed[-3000:]
    assert (
        f"[train] interrupted: run 'digits-supernet' keeps its checkpoint at epoch {interrupted_at}; the same "
        f"command resumes from there" in printed
    ), printed[-3000:]
    assert not (run / "supernet").exists()
    out = _train(tmp_path, "--set", "train.epochs=8")
    _check_ok(out)
    # Resumed, not restarted, from the newest checkpoint written (even if Ray's run snapshot had not recorded it).
    assert f"continuing from epoch {interrupted_at} " in out.stdout
    config = _export(tmp_path)
    assert config["resumes"] == 1 and config["epochs"] == 8
    assert [h["epoch"] for h in config["history"]] == list(range(1, 9))


def _broken_tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    for c in range(2):
        folder = root / "train" / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (root / "train" / "c1" / "bad.png").write_bytes(b"\x89PNG broken")


@pytest.mark.parametrize(
    "args,message",
    [
        (["imagefolder", "--set", "data.root=/no/such/dir"], "dataset root '/no/such/dir' does not exist"),
        (["BROKEN"], "unreadable image"),
        (["digits", "--set", "data.image_size=9"], "patch_size 2 does not divide image_size 9"),
        (["digits", "--workers", "0"], "--workers 0: must be at least 1"),
        (["digits", "--gpu", "--cpus-per-worker", "1"], "gpu: a GPU was asked for, but this machine has none"),
        (["digits", "--name", "dé"], "name 'dé': Ray Train takes ASCII run names only"),
    ],
    ids=[
        "missing-dataset",
        "unreadable-image",
        "patch-does-not-divide",
        "zero-workers",
        "gpu-without-gpu",
        "non-ascii",
    ],
)
def test_bad_runs_fail_clearly_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    if args == ["BROKEN"]:
        _broken_tree(tmp_path / "tree")
        args = [
            "imagefolder",
            "--set",
            f"data.root={tmp_path / 'tree'}",
            "--set",
            "data.image_size=8",
            "--set",
            "space_overrides.patch_size=2",
            "--set",
            "splits.search_per_class=1",
            "--set",
            "splits.test_per_class=1",
            "--set",
            "train.batch_size=4",
        ]
    storage = tmp_path / "runs"
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "train", *args, "--storage", str(storage)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("autoformer: error:")]
    assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]
    assert not storage.exists() or not any(storage.rglob("*"))


def _session_processes(driver_pid: int) -> list[str]:
    """Command lines of the processes of the Ray session a driver started (its directory ends in the pid)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        if f"_{driver_pid}/" in args:
            found.append(args)
    return found


def test_a_killed_driver_leaves_no_ray_processes_behind(tmp_path: Path) -> None:
    """kill -9 of the driver mid-training: the Ray it started goes with it (no agents left running)."""
    cmd = [sys.executable, "-m", "pipeline.cli.main", "train", "digits", "--storage", str(tmp_path), *FAST,
           "--set", "train.epochs=50"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = tmp_path / "digits-supernet"
        deadline = time.time() + 300
        while _latest_epoch(run) < 1 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None and _session_processes(proc.pid), "training did not start"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 90
    while _session_processes(proc.pid) and time.time() < deadline:
        time.sleep(1)
    assert not _session_processes(proc.pid)
