"""Experiment tracking (``--log tensorboard|mlflow|wandb``), offline: TensorBoard event files, an MLflow file store
and W&B's offline runs, each read back with the backend's own formats or client.

The plan and the trackers are checked in-process; one tiny training and one tiny search run through the CLI in
their own processes (slow), and a missing backend is one line before Ray starts.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import types
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.cli.main import main
from pipeline.shared.errors import UserError
from pipeline.shared.tracking import MLFLOW_DIR, TENSORBOARD_DIR, open_trackers, plan_tracking
from pipeline.training.checkpoint import newest_complete_checkpoint

TRACKER_ENV = ("MLFLOW_TRACKING_URI", "WANDB_PROJECT", "WANDB_MODE", "MLFLOW_ALLOW_FILE_STORE")
EPOCH_TAGS = (
    "train_loss",
    "lr",
    "images_per_s",
    "restarts",
    "search_top1/smallest",
    "search_top1/largest",
    "search_top1/subnet0",
)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """No tracker settings from the developer's shell; W&B offline with its own files under tmp_path."""
    for key in TRACKER_ENV:
        monkeypatch.delenv(key, raising=False)
    wandb_env = {
        "WANDB_MODE": "offline",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
    }
    for key, value in wandb_env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of ``directory`` (TFRecord framing: length, its CRC, event, CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of a W&B offline run, from its ``run-ID.wandb`` transaction log (LevelDB log framing:
    a 7-byte file header, 32 KiB blocks, records of CRC, length, type; types 1 full, 2-4 first/middle/last)."""
    from wandb.proto import wandb_internal_pb2

    (log,) = run_dir.glob("run-*.wandb")
    data, pos, pending, rows = log.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # the rest of a block is padding
            pos += left
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def mlflow_runs(store: Path, experiment: str, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """The MLflow client on a file store and the runs of one experiment."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants an opt-in to read its file store
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.as_uri())
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {store}"
    return client, client.search_runs([found.experiment_id])


def steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_plan_puts_each_backend_in_the_run_directory_by_default(offline: dict, tmp_path: Path) -> None:
    plan = plan_tracking(["mlflow", "tensorboard", "mlflow"], str(tmp_path), "digits-supernet")
    assert plan.backends == ("mlflow", "tensorboard")
    assert plan.mlflow_uri == (tmp_path / "digits-supernet" / MLFLOW_DIR).as_uri()
    assert plan.local_dir == str(tmp_path / "digits-supernet") and plan.wandb_project == "autoformer"
    assert plan.wandb_mode == "offline"
    assert plan_tracking([], str(tmp_path), "r").backends == ()


def test_plan_takes_the_trackers_environment(offline: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("WANDB_PROJECT", "vit-nas")
    plan = plan_tracking(["mlflow", "wandb"], str(tmp_path), "r")
    assert plan.mlflow_uri == "http://mlflow.internal:5000" and plan.wandb_project == "vit-nas"


def test_uri_storage_needs_a_tracking_server(offline: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match=r"^tracking backend tensorboard writes event files to a local directory"):
        plan_tracking(["tensorboard"], "s3://bucket/runs", "r")
    assert plan_tracking(["tensorboard"], "s3://bucket/runs", "r", by_tune=True).backends == ("tensorboard",)
    with pytest.raises(
        UserError, match=r"^tracking backend mlflow with storage 's3://bucket/runs' needs an MLflow server"
    ):
        plan_tracking(["mlflow"], "s3://bucket/runs", "r", by_tune=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert plan_tracking(["mlflow"], "s3://bucket/runs", "r").mlflow_uri == "http://mlflow.internal:5000"


def test_a_resumed_run_continues_the_same_tracking_runs(
    offline: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What rank 0 does: log epochs 1-2, record the ids (the checkpoint state), reopen with them, log epoch 3.
    Both within the same second of tensorboardX's clock, as a fast restart can be: the files stay apart."""
    from tensorboardX import event_file_writer

    monkeypatch.setattr(event_file_writer, "time", types.SimpleNamespace(time=lambda: 1_800_000_000.0))
    plan = plan_tracking(["tensorboard", "mlflow", "wandb"], str(tmp_path), "run")
    params = {"phase": "train", "train.epochs": 2}
    with open_trackers(plan, params, {}, "train") as trackers:
        for epoch in (1, 2):
            trackers.log({"epoch": epoch, "train_loss": 1.0 / epoch, "restarts": 0, "flag": True}, epoch)
        ids = trackers.ids
    with open_trackers(plan, {**params, "train.epochs": 3}, ids, "train") as trackers:
        trackers.log({"epoch": 3, "train_loss": 0.25, "restarts": 1}, 3)
        assert trackers.ids == ids

    assert [s for s, _ in tensorboard_scalars(tmp_path / "run" / TENSORBOARD_DIR)["train_loss"]] == [1, 2, 3]
    client, runs = mlflow_runs(tmp_path / "run" / MLFLOW_DIR, "run", monkeypatch)
    assert [r.info.run_id for r in runs] == [ids["mlflow"]] and runs[0].info.status == "FINISHED"
    assert steps(client, ids["mlflow"], "train_loss") == [1, 2, 3] and "flag" not in runs[0].data.metrics
    assert runs[0].data.params["train.epochs"] == "2"  # params are the run's start; MLflow keeps them fixed
    # W&B names a run's directory by the second too, and adds "-1" to the second one within a second
    runs_dir = tmp_path / "run" / "wandb"
    offline_runs = sorted(
        [*runs_dir.glob(f"offline-run-*-{ids['wandb']}"), *runs_dir.glob(f"offline-run-*-{ids['wandb']}-*")]
    )
    assert len(offline_runs) == 2  # the same W&B run id, resumed
    assert [row["epoch"] for d in offline_runs for row in wandb_history(d)] == [1, 2, 3]


@pytest.mark.parametrize(
    "command",
    [
        ["train", "digits"],
        ["retrain", "digits", "--arch", "{arch}"],
        ["search", "digits", "--supernet", "no-supernet-needed"],
        ["run", "digits"],
    ],
    ids=["train", "retrain", "search", "run"],
)
def test_a_missing_backend_is_one_line_before_ray_starts(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import ray

    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"embed_dim": 32, "depth": 2, "num_heads": [2, 2], "mlp_ratio": [2, 2]}))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an environment without it does: import fails
    storage = tmp_path / "store"
    args = [a.format(arch=arch) for a in command]
    code = main([*args, "--storage", str(storage), "--log", "tensorboard", "--log", "mlflow"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        "autoformer: error: tracking backend mlflow needs the mlflow-skinny package: pip install mlflow-skinny "
        "(or pip install 'autoformer-pipeline[tracking]' for every tracker)"
    )
    assert not storage.exists() and not ray.is_initialized()


@pytest.mark.slow
def test_training_logs_every_epoch_to_each_backend(
    offline: dict, one_worker_training, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2 epochs on 1 worker x 1 CPU with --log tensorboard --log mlflow --log wandb, offline, shared with
    # tests/test_train_e2e.py (tests/conftest.py)
    tmp_path, out = one_worker_training
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("logging every epoch to tensorboard") == 1

    run = tmp_path / "digits-supernet"
    _, state = newest_complete_checkpoint(str(tmp_path), "digits-supernet")
    ids = state["tracking"]  # what a resumed run continues
    scalars = tensorboard_scalars(run / TENSORBOARD_DIR)
    for tag in EPOCH_TAGS:
        assert [s for s, _ in scalars[tag]] == [1, 2], tag
    assert ids["tensorboard"] == str(run / TENSORBOARD_DIR)

    client, runs = mlflow_runs(run / MLFLOW_DIR, "digits-supernet", monkeypatch)
    assert [r.info.run_id for r in runs] == [ids["mlflow"]] and runs[0].info.status == "FINISHED"
    for tag in EPOCH_TAGS:
        assert steps(client, ids["mlflow"], tag) == [1, 2], tag
    assert runs[0].data.params["train.epochs"] == "2" and runs[0].data.params["phase"] == "train"

    (wandb_run,) = (run / "wandb").glob(f"offline-run-*-{ids['wandb']}")
    history = wandb_history(wandb_run)
    assert [row["epoch"] for row in history] == [1, 2] and all(set(EPOCH_TAGS) <= set(row) for row in history)


@pytest.mark.slow
def test_search_logs_one_result_per_candidate(finished_search, monkeypatch: pytest.MonkeyPatch) -> None:
    # the shared finished search (tests/conftest.py) logs to TensorBoard and MLflow: 6 x 5 candidates
    storage, out = finished_search
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    run = storage / "whole"
    candidates = {r["key"]: r for r in pq.read_table(run / "candidates.parquet").to_pylist()}
    client, runs = mlflow_runs(run / MLFLOW_DIR, "whole", monkeypatch)
    assert len(runs) == len(candidates) == 30
    for found in runs:
        row = candidates[found.data.params["key"]]
        metrics, params = found.data.metrics, found.data.params
        assert metrics["params"] == row["params"] and metrics["macs"] == row["macs"]
        assert metrics["top1"] == pytest.approx(row["top1"]) and metrics["generation"] == row["generation"]
        assert metrics["latency_ms"] == pytest.approx(row["latency_ms"])
        assert params["node"] == row["node"] and len(params["node"]) == 56 and params["status"] == "ok"
    for directory in (run / f"candidate_{r['trial_id']}" for r in candidates.values()):
        scalars = tensorboard_scalars(directory)
        assert {"ray/tune/top1", "ray/tune/params", "ray/tune/generation"} <= set(scalars), directory
