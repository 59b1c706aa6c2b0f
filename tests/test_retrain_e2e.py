"""``autoformer retrain``, ``finetune`` and ``fidelity`` end to end through the CLI on digits with tiny settings,
and their bad inputs (one clear line, exit 2, nothing written). The end-to-end ones are slow and run in CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.core.arch import Architecture
from pipeline.core.records import candidate_record
from pipeline.core.task import load_task
from pipeline.data.arrays import score
from pipeline.data.ray_ingest import load_split
from pipeline.model.subnet_dir import load_model
from pipeline.results.tables import CANDIDATES_FILE, candidates_table, write_table

ARCH = Architecture(48, 2, (3, 2), (2.0, 3.0))
TINY = ["--set", "retrain.warmup_epochs=1", "--set", "retrain.checkpoint_every=1"]


def _cli(*args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def _ok(out: subprocess.CompletedProcess) -> None:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def _refused(out: subprocess.CompletedProcess, message: str) -> None:
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], out.stderr


def _arch_file(tmp_path: Path, arch: Architecture = ARCH) -> Path:
    path = tmp_path / f"{arch.key}.json"
    path.write_text(arch.to_json(), encoding="utf-8")
    return path


def _gray_folder(root: Path, classes: int, size: int) -> Path:
    """An ImageFolder of grayscale images (``classes`` classes, 12 images each) that a digits model can move to."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / "train" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(12):
            pixels = (rng.random((size, size)) * 80 + c * 80).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_retrain_resume_finetune_and_transfer(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    arch_file = _arch_file(tmp_path)
    retrain = ["retrain", "digits", "--arch", str(arch_file), "--storage", str(runs), *TINY]
    out = _cli(*retrain, "--workers", "2", "--cpus-per-worker", "0.5", "--set", "retrain.epochs=2")
    _ok(out)
    assert "[retrain] epoch 2/2" in out.stdout
    run = runs / f"digits-retrain-{ARCH.key}"
    model, config = load_model(run / "model")
    meta = config["metadata"]
    assert model.arch == ARCH and meta["phase"] == "retrain" and meta["epochs"] == 2 and meta["workers"] == 2
    assert meta["origin"] == {"kind": "file", "path": str(arch_file.resolve())}
    assert meta["recipe"]["epochs"] == 2 and meta["recipe"]["warmup_epochs"] == 1
    assert meta["scores"]["search"]["count"] == 200 and meta["scores"]["test"]["count"] == 300
    # the recorded test score is the model directory's own: re-scoring it gives the same number
    task = load_task("digits")
    test = score(model, load_split(task, "test"), config["normalization"], model.head.weight.device)
    assert test["top1"] == pytest.approx(meta["scores"]["test"]["top1"], abs=1e-9)

    # re-running with more epochs resumes the run (one worker now: the worker count may change)
    out = _cli(*retrain, "--cpus-per-worker", "1", "--set", "retrain.epochs=3")
    _ok(out)
    assert "continuing from epoch 2" in out.stdout and "[retrain] epoch 3/3" in out.stdout
    assert "[retrain] epoch 1/3" not in out.stdout
    meta = load_model(run / "model")[1]["metadata"]
    assert meta["epochs"] == 3 and meta["resumes"] == 1

    # finetune on its own task: starts from those weights, the finetune recipe (lr a tenth of train's)
    out = _cli(
        "finetune", "--model", str(run / "model"), "--storage", str(runs), "--cpus-per-worker", "1",
        "--set", "finetune.epochs=1",
    )  # fmt: skip
    _ok(out)
    tuned, tuned_config = load_model(runs / f"digits-finetune-{ARCH.key}" / "model")
    tmeta = tuned_config["metadata"]
    assert tmeta["phase"] == "finetune" and tmeta["origin"]["path"] == str((run / "model").resolve())
    assert tmeta["recipe"]["lr"] == pytest.approx(task.train.optim.lr * 0.1) and tmeta["epochs"] == 1

    # transfer: another image size (grid 4x4 -> 8x8) and another class count (10 -> 3), same channels
    data = _gray_folder(tmp_path / "gray", classes=3, size=16)
    other = tmp_path / "gray.yaml"
    other.write_text(
        "space: digits\ndata: {dataset: imagefolder, root: " + str(data) + ", image_size: 16, in_chans: 1, "
        "mean: [0.5], std: [0.25], eval_crop_pct: 1.0, loader_workers: 0}\n"
        "splits: {search_per_class: 3, test_per_class: 3}\n"
        "train: {batch_size: 6, randaugment: null, mixup: 0.0, cutmix: 0.0, hflip: 0.0, checkpoint_every: 1}\n",
        encoding="utf-8",
    )
    out = _cli(
        "finetune", "--model", str(run / "model"), "--task", str(other), "--storage", str(runs),
        "--cpus-per-worker", "1", "--name", "moved", "--set", "finetune.epochs=1",
    )  # fmt: skip
    _ok(out)
    moved, moved_config = load_model(runs / "moved" / "model")
    assert moved.fixed["image_size"] == 16 and moved.fixed["num_classes"] == 3
    assert moved.pos_embed.shape == (1, 8 * 8 + 1, ARCH.embed_dim) and moved.head.weight.shape == (3, ARCH.embed_dim)
    assert moved_config["metadata"]["scores"]["test"]["count"] == 9


@pytest.mark.slow
def test_retrain_from_a_search_row_and_a_taken_name(tmp_path: Path) -> None:
    runs, search = tmp_path / "runs", tmp_path / "search"
    search.mkdir()
    other = Architecture(32, 2, (2, 2), (2.0, 2.0))
    records = [
        candidate_record(a, 0, "random", 1, 1, {"status": "ok", "top1": t}) for a, t in ((ARCH, 0.9), (other, 0.8))
    ]
    write_table(candidates_table(records), str(search / CANDIDATES_FILE))
    common = ["retrain", "digits", "--storage", str(runs), "--name", "taken", "--cpus-per-worker", "1", *TINY]
    out = _cli(*common, "--candidates", str(search), "--key", ARCH.key, "--set", "retrain.epochs=1")
    _ok(out)
    meta = load_model(runs / "taken" / "model")[1]["metadata"]
    assert meta["origin"]["kind"] == "search" and meta["origin"]["key"] == ARCH.key and meta["origin"]["top1"] == 0.9
    before = sorted(p.name for p in (runs / "taken").iterdir())
    out = _cli(*common, "--candidates", str(search), "--row", "1", "--set", "retrain.epochs=1")
    _refused(out, f"run 'taken' already exists for another architecture ({ARCH.key})")
    assert sorted(p.name for p in (runs / "taken").iterdir()) == before


def test_retrain_refuses_an_architecture_the_supernet_cannot_hold(tmp_path: Path) -> None:
    too_big = _arch_file(tmp_path, Architecture(128, 2, (2, 2), (2.0, 2.0)))
    out = _cli("retrain", "digits", "--arch", str(too_big), "--storage", str(tmp_path / "runs"))
    _refused(out, "does not fit supernet of space 'digits': embed_dim 128 > 64")
    assert not (tmp_path / "runs").exists()


def test_retrain_refuses_a_model_of_another_space(tmp_path: Path, digits_supernet: Path) -> None:
    from pipeline.api import export_model, load_supernet

    model_dir = export_model(load_supernet(digits_supernet), ARCH, tmp_path / "m", load_task("digits"))
    data = _gray_folder(tmp_path / "gray", classes=2, size=32)
    out = _cli(
        "retrain", "imagefolder", "--model", str(model_dir), "--storage", str(tmp_path / "runs"),
        "--set", f"data.root={data}", "--set", "data.in_chans=1", "--set", "data.mean=[0.5]", "--set", "data.std=[0.2]",
    )  # fmt: skip
    _refused(
        out, "is a model of another search space: its head_dim is 16, task 'imagefolder' (space 'autoformer-tiny')"
    )
    assert not (tmp_path / "runs").exists()


def test_transfer_to_other_channels_is_refused(tmp_path: Path, digits_supernet: Path) -> None:
    from pipeline.api import export_model, load_supernet

    model_dir = export_model(load_supernet(digits_supernet), ARCH, tmp_path / "m", load_task("digits"))
    rgb = tmp_path / "rgb"
    for c in range(2):
        (rgb / "train" / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (c * 100, 0, 0)).save(rgb / "train" / f"c{c}" / f"{i}.png")
    task = tmp_path / "rgb.yaml"
    task.write_text(
        "space: digits\ndata: {dataset: imagefolder, root: " + str(rgb) + ", image_size: 8, in_chans: 3, "
        "mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2]}\nsplits: {search_per_class: 1, test_per_class: 1}\n"
        "train: {batch_size: 4}\n",
        encoding="utf-8",
    )
    out = _cli("finetune", "--model", str(model_dir), "--task", str(task), "--storage", str(tmp_path / "runs"))
    _refused(out, "the model takes 1-channel images and the task has 3")
    assert not (tmp_path / "runs").exists()


def test_fidelity_refuses_more_architectures_than_the_space_has(tmp_path: Path, digits_supernet: Path) -> None:
    out = _cli("fidelity", "--supernet", str(digits_supernet), "--archs", "30000", "--storage", str(tmp_path / "r"))
    _refused(out, "architecture count 30000 exceeds the 22,113 architectures of space 'digits'")
    assert not (tmp_path / "r").exists()


def test_fidelity_refuses_no_architectures_naming_the_flag(tmp_path: Path, digits_supernet: Path, capsys) -> None:
    from pipeline.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["fidelity", "--supernet", str(digits_supernet), "--archs", "0", "--storage", str(tmp_path / "r")])
    assert refused.value.code == 2
    assert "argument --archs: must be an integer >= 1, not '0'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _fidelity_command(supernet: Path, where: Path) -> list[str]:
    """3 architectures, 1 retrain epoch each, run 'fid' in ``where``/runs; the supernet path as a user types it,
    relative to where they are (``where``): resolved once, on the driver (each Tune trial runs in a directory of
    its own)."""
    relative = os.path.relpath(supernet, where)
    return [
        "fidelity", "--supernet", relative, "--archs", "3", "--storage", str(where / "runs"), "--name", "fid",
        "--cpus-per-trial", "0.5", "--set", "retrain.epochs=1", "--set", "retrain.warmup_epochs=0",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fidelity_run(tmp_path_factory, digits_supernet: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """One fidelity experiment (``_fidelity_command``, run from the directory it returns) and its command's
    output: the report test reads and resumes it, the stand-alone test reuses its scores (neither changes it)."""
    where = tmp_path_factory.mktemp("fidelity")
    return where, _cli(*_fidelity_command(digits_supernet, where), cwd=where)


@pytest.mark.slow
def test_fidelity_report_end_to_end_and_resumed(digits_supernet: Path, fidelity_run) -> None:
    tmp_path, out = fidelity_run
    runs = tmp_path / "runs"
    command = _fidelity_command(digits_supernet, tmp_path)
    _ok(out)
    plan = json.loads((runs / "fid" / "fidelity-plan.json").read_text())
    assert plan["supernet"] == str(digits_supernet.resolve())
    # an untrained supernet scores every architecture alike: tau is undefined, and the report says so
    assert "[fidelity] Kendall tau undefined over 3 architectures" in out.stdout
    assert (out.stdout + out.stderr).count("epoch 1/1") == 3
    table = pq.read_table(runs / "fid" / "fidelity.parquet").to_pylist()
    assert len(table) == 3 and all(r["status"] == "done" and r["epochs"] == 1 for r in table)
    assert table[0]["params"] < table[1]["params"] < table[2]["params"]
    for r in table:
        assert r["search_images"] == 200 and r["test_images"] == 300 and r["picked"] == "stratum"
        for score_name in ("inherited_search_top1", "standalone_search_top1", "standalone_test_top1"):
            assert r[f"{score_name}_low"] <= r[score_name] <= r[f"{score_name}_high"]
    summary = json.loads((runs / "fid" / "fidelity.json").read_text())
    assert summary["architectures"] == 3 and summary["retrain_epochs"] == 1 and "spearman_rho" in summary
    assert (runs / "fid" / "fidelity.png").stat().st_size > 10_000

    # the same command again: the finished experiment is restored, nothing is retrained
    out = _cli(*command, cwd=tmp_path)
    _ok(out)
    assert "resuming" in out.stdout and "epoch 1/1" not in out.stdout + out.stderr
    # the same name with other settings is refused, and the run is left as it was
    out = _cli(*command[:4], "4", *command[5:], cwd=tmp_path)
    _refused(out, "run '" + str(runs / "fid") + "' was made with architectures = ")


def _biased_supernet(path: Path, label: int) -> Path:
    """A digits supernet whose head always answers ``label``: every architecture's inherited top-1 is that
    label's share of the split, unlike the plain untrained supernet's."""
    import torch

    from pipeline.model.supernet import Supernet
    from pipeline.model.supernet_dir import save_supernet
    from pipeline.training.launch import validate_data

    task = load_task("digits")
    checked = validate_data(task)
    model = Supernet(checked["space"])
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[label] = 10.0
    save_supernet(model, path, task=task.to_dict(), splits=checked["splits"], epochs=0)
    return path


@pytest.mark.slow
def test_fidelity_with_the_stand_alone_scores_of_an_earlier_run(
    tmp_path: Path, digits_supernet: Path, fidelity_run
) -> None:
    where, out = fidelity_run  # the earlier run: the same settings as base, 3 architectures, named fid
    runs = where / "runs"
    base = ["fidelity", "--storage", str(runs), "--set", "retrain.epochs=1", "--set", "retrain.warmup_epochs=0"]
    _ok(out)
    source = pq.read_table(runs / "fid" / "fidelity.parquet").to_pylist()

    # the same supernet again: the Tune trials' inherited scores, in the driver, and the stand-alone ones as they were
    out = _cli(*base, "--supernet", str(digits_supernet), "--standalone", str(runs / "fid"), "--name", "same")
    _ok(out)
    assert "epoch 1/1" not in out.stdout + out.stderr  # nothing is trained
    assert pq.read_table(runs / "same" / "fidelity.parquet").to_pylist() == source
    assert json.loads((runs / "same" / "fidelity.json").read_text())["standalone"] == str(runs / "fid")

    # another supernet (trained otherwise: what a single model does not learn from may differ): its own
    # inherited scores beside the same stand-alone ones
    biased = _biased_supernet(tmp_path / "biased", label=3)
    other = ["--set", "train.sampling=sandwich", "--set", "retrain.checkpoint_every=3"]
    out = _cli(*base, *other, "--supernet", str(biased), "--standalone", str(runs / "fid"), "--name", "biased")
    _ok(out)
    rows = pq.read_table(runs / "biased" / "fidelity.parquet").to_pylist()
    labels = load_split(load_task("digits"), "search").labels
    assert [r["key"] for r in rows] == [r["key"] for r in source]
    for row, before in zip(rows, source):
        assert row["inherited_search_top1"] == pytest.approx(float(np.mean(np.asarray(labels) == 3)))
        assert row["standalone_search_top1"] == before["standalone_search_top1"] and row["epochs"] == 1

    # bad inputs: one line, nothing written
    _refused(
        _cli(*base, "--supernet", str(biased), "--standalone", str(runs / "fid"), "--archs", "4", "--name", "x"),
        "--standalone takes its run's architectures",
    )
    _refused(
        _cli(
            *base[:3],
            "--set",
            "retrain.epochs=2",
            "--set",
            "retrain.warmup_epochs=0",
            "--supernet",
            str(biased),
            "--standalone",
            str(runs / "fid"),
        ),
        "was made with retrain.epochs = 1 (now 2)",
    )
    _refused(
        _cli(*base, "--supernet", str(biased), "--standalone", str(tmp_path / "biased"), "--name", "x"),
        "is not a fidelity run",
    )
    assert sorted(p.name for p in runs.iterdir()) == ["biased", "fid", "same"]


@pytest.mark.slow
def test_fidelity_with_two_seeds_reports_the_ceiling(tmp_path: Path, digits_supernet: Path, capsys) -> None:
    """``--seeds 2``: each architecture trained twice (the task's seed and the next); the report gives the two
    trainings' tau against each other, the ceiling, beside inherited against stand-alone; ``--rerank-steps``
    adds each architecture's score after those fine-tuning steps from inherited weights, with its tau; the plan
    records both (other values on the same name are refused) and ``--seeds 0`` is one line before anything is
    written."""
    runs = tmp_path / "runs"
    command = [
        "fidelity", "--supernet", str(digits_supernet), "--archs", "3", "--seeds", "2", "--storage", str(runs),
        "--name", "two", "--cpus-per-trial", "0.5", "--set", "retrain.epochs=1", "--set", "retrain.warmup_epochs=0",
        "--rerank-steps", "2", "5",
    ]  # fmt: skip
    out = _cli(*command)
    _ok(out)
    assert (out.stdout + out.stderr).count("epoch 1/1") == 6 and "with 2 seeds" in out.stdout
    assert "s-a seed 2" in out.stdout and "ceiling" in out.stdout
    assert "rr 2" in out.stdout and "rr 5" in out.stdout and "re-ranked after 5 steps" in out.stdout
    assert (out.stdout + out.stderr).count("re-ranked: search top-1") == 6  # 3 architectures x 2 step counts
    table = pq.read_table(runs / "two" / "fidelity.parquet").to_pylist()
    assert len(table) == 3
    for r in table:
        seeds = r["standalone_search_top1_by_seed"]
        assert len(seeds) == 2 and seeds[0] == r["standalone_search_top1"] and 0 <= seeds[1] <= 1
        assert r["standalone_test_top1_by_seed"][0] == r["standalone_test_top1"]
        assert r["rerank_steps"] == [2, 5] and all(0 <= v <= 1 for v in r["rerank_search_top1"])
    summary = json.loads((runs / "two" / "fidelity.json").read_text())
    assert summary["seeds"] == 2 and summary["ceiling_architectures"] == 3 and "ceiling_tau" in summary
    assert [e["steps"] for e in summary["rerank"]] == [2, 5] and summary["rerank"][1]["architectures"] == 3
    _refused(_cli(*command[:6], "1", *command[7:]), "was made with seeds = 2 (now 1)")
    _refused(_cli(*command[:-1]), "rerank_steps")

    from pipeline.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main([*command[:6], "0", "--storage", str(tmp_path / "zero"), *command[9:]])
    assert refused.value.code == 2
    assert "argument --seeds: must be an integer >= 1, not '0'" in capsys.readouterr().err
    assert not (tmp_path / "zero").exists()
