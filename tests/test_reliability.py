"""Inputs refused before anything starts, and files others can read: storage, run names, file modes."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.arch import Architecture
from pipeline.core.space import load_space
from pipeline.core.task import load_task
from pipeline.model.supernet import Supernet
from pipeline.shared.errors import UserError
from pipeline.shared.storage import UMASK, resolve_storage, safe_run_name, write_bytes


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], capture_output=True, text=True)


def test_storage_must_be_a_writable_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        resolve_storage(str(tmp_path / "file"))
    assert resolve_storage(str(tmp_path / "new" / "runs")) == str(tmp_path / "new" / "runs")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="is not writable"):
            resolve_storage(str(locked / "runs"))


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../../b", "", "a//b", "."])
def test_run_names_stay_inside_the_storage_root(name: str) -> None:
    with pytest.raises(UserError, match="must stay inside the storage root"):
        safe_run_name(name)
    assert safe_run_name("team/run-1") == "team/run-1"


def test_cli_refuses_an_escaping_name_and_a_file_as_storage_before_starting(tmp_path: Path) -> None:
    out = _cli("train", "digits", "--storage", str(tmp_path / "runs"), "--name", "../escaped")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "autoformer: error: name '../escaped': a run name must stay inside the storage root (no '..', '.' or "
        "leading '/')"
    ]
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs").exists()
    (tmp_path / "afile").write_text("x")
    out = _cli("train", "digits", "--storage", str(tmp_path / "afile"))
    assert out.returncode == 2 and "is a file, not a directory" in out.stderr


def test_written_files_and_directories_follow_the_umask(tmp_path: Path) -> None:
    from pipeline.api import export_model

    write_bytes(str(tmp_path / "table.parquet"), b"x")
    model_dir = export_model(
        Supernet(load_space("digits")), Architecture(32, 2, (2, 2), (2.0, 2.0)), tmp_path / "m", load_task("digits")
    )
    assert stat.S_IMODE((tmp_path / "table.parquet").stat().st_mode) == 0o666 & ~UMASK
    assert stat.S_IMODE(Path(model_dir).stat().st_mode) == 0o777 & ~UMASK
    for f in Path(model_dir).iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~UMASK, f


def test_a_key_given_twice_in_a_task_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("space: digits\ndata: {dataset: digits, image_size: 8, mean: [0.3], std: [0.4]}\n"
                    "train:\n  epochs: 5\n  lr: 0.001\n  epochs: 7\n", encoding="utf-8")  # fmt: skip
    with pytest.raises(UserError, match="not valid YAML: key 'epochs' appears twice in one mapping at line 6"):
        load_task(str(path))


def test_a_population_larger_than_the_space_is_refused_at_once(tmp_path: Path, digits_supernet: Path) -> None:
    out = _cli("search", "digits", "--supernet", str(digits_supernet), "--population", "1000000",
               "--storage", str(tmp_path / "runs"))  # fmt: skip
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "autoformer: error: search.population 1,000,000 exceeds the 22,113 architectures of space 'digits'; choose "
        "at most 22,113"
    ]


def test_evaluate_gpu_without_a_gpu_is_an_error(tmp_path: Path, digits_supernet: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    arch = tmp_path / "a.json"
    arch.write_text(Architecture(32, 2, (2, 2), (2.0, 2.0)).to_json())
    out = _cli("evaluate", "--supernet", str(digits_supernet), "--arch", str(arch), "--gpu")
    assert out.returncode == 2 and "--gpu was given but this machine has no GPU" in out.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.num_classes=7"], "'data.num_classes': digits has 10 classes"),
        (["data.in_chans=3", "data.mean=[0.3,0.3,0.3]", "data.std=[0.4,0.4,0.4]"], "digits images have 1 channel(s)"),
    ],
)
def test_settings_that_contradict_the_data_are_refused_when_the_task_loads(overrides: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_task("digits", overrides)


@pytest.mark.slow
def test_requests_this_machine_can_never_place_fail_in_seconds(tmp_path: Path, digits_supernet: Path) -> None:
    """On a Ray started here nothing can add CPUs: Ray would wait forever, so the tool says so at once."""
    import time

    start = time.perf_counter()
    out = _cli("train", "digits", "--storage", str(tmp_path / "runs"), "--cpus-per-worker", "4096")
    assert out.returncode == 2 and "workers: 1 x (4096 CPU) asked for, but this machine has" in out.stderr
    out = _cli("search", "digits", "--supernet", str(digits_supernet), "--storage", str(tmp_path / "runs"),
               "--evaluators", "2", "--cpus-per-evaluator", "4096")  # fmt: skip
    assert out.returncode == 2 and "evaluators: 2 x (4096 CPU) asked for" in out.stderr
    assert time.perf_counter() - start < 180
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing written


def test_a_training_run_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """A second ``train`` on a busy run name: one line before anything starts (no header line, nothing written)."""
    from pipeline.shared.storage import LOCK_FILE

    run = tmp_path / "runs" / "busy"
    run.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / LOCK_FILE).write_text(f"{socket.gethostname()}:{holder.pid}\n")
        out = _cli("train", "digits", "--storage", str(tmp_path / "runs"), "--name", "busy")
        assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
        assert f"run '{run}' is in use by another driver ({socket.gethostname()}:{holder.pid})" in out.stderr
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
    finally:
        holder.kill()


def test_a_run_in_use_is_refused_naming_its_holder_and_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    import socket

    from pipeline.shared.storage import LOCK_FILE, run_lock

    run = tmp_path / "run"
    with run_lock(str(run), "search"):
        holder = (run / LOCK_FILE).read_text().strip()
        assert holder == f"{socket.gethostname()}:{os.getpid()}"
        with pytest.raises(UserError, match=f"search '{run}' is in use by another driver \\({holder}\\)"):
            with run_lock(str(run), "search"):
                pass
    assert not run.exists()  # the lock made the run directory and nothing was written into it: none is left
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / LOCK_FILE).write_text(f"{socket.gethostname()}:{dead.stdout.strip()}\n")
    with run_lock(str(run), "search"):  # its driver is gone: taken over
        assert (run / LOCK_FILE).read_text().strip() == f"{socket.gethostname()}:{os.getpid()}"


@pytest.mark.slow
def test_resuming_a_search_with_other_settings_is_refused(digits_supernet: Path, finished_search) -> None:
    from conftest import FINISHED_SEARCH

    # a finished search (population 6, 5 generations), shared (tests/conftest.py): run 'whole'
    storage, out = finished_search
    common = ["search", "digits", "--supernet", str(digits_supernet), "--storage", str(storage), "--name", "whole",
              "--evaluators", "1", "--cpus-per-evaluator", "0.5"]  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    footer = (storage / "whole" / "candidates.parquet").read_bytes()
    out = _cli(*common, *FINISHED_SEARCH, "--population", "5", "--max-params", "50000", "--resume")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"autoformer: error: search '{storage / 'whole'}' was made with search.max_params = 100000 (now 50000); only "
        f"search.generations may grow: re-run with the same settings to resume it, or choose another run name"
    ]
    assert (storage / "whole" / "candidates.parquet").read_bytes() == footer  # nothing rewritten


def test_off_space_architectures_are_exported_with_a_warning(tmp_path: Path, digits_supernet: Path) -> None:
    arch = tmp_path / "a.json"
    arch.write_text(Architecture(40, 2, (2, 2), (2.5, 2.0)).to_json())  # inside the weights, never trained
    out = _cli("export", "--supernet", str(digits_supernet), "--arch", str(arch), "--out", str(tmp_path / "m"))
    assert out.returncode == 0 and out.stderr.count("autoformer: warning:") == 1
    assert "embed_dim 40 is not one of [32, 48, 64]: the supernet never trained that choice" in out.stderr
    out = _cli("export", "--supernet", str(digits_supernet), "--arch", str(arch), "--out", str(tmp_path / "m2"),
               "--allow-off-space")  # fmt: skip
    assert out.returncode == 0 and "warning" not in out.stderr


def test_the_drivers_storage_settings_are_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.shared.cluster import forwarded_environment

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/creds.json")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("UNRELATED", "x")
    env = forwarded_environment()
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000" and env["AWS_ACCESS_KEY_ID"] == "key"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/creds.json" and "UNRELATED" not in env
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_a_submitted_jobs_own_storage_settings_are_left_to_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray refuses a driver whose runtime environment sets a variable the submitted job's already sets."""
    from pipeline.shared.cluster import JOB_CONFIG_ENV, forwarded_environment

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv(JOB_CONFIG_ENV, '{"runtime_env": {"env_vars": {"AWS_ENDPOINT_URL": "http://minio:9000"}}}')
    env = forwarded_environment()
    assert "AWS_ENDPOINT_URL" not in env and env["AWS_ACCESS_KEY_ID"] == "key"


def test_a_cluster_driver_says_while_it_waits_for_room(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """On a cluster (an autoscaler may add nodes) nothing fails, but a line comes every little while until the
    nodes are there."""
    import time

    from pipeline.shared import cluster

    nodes = [{"Alive": True, "Resources": {"CPU": 1.0}}]
    monkeypatch.setattr(cluster.ray, "nodes", lambda: nodes)
    monkeypatch.setattr(cluster, "WAIT_LINE_EVERY_S", 0.05)
    lines: list[str] = []

    def wait_for_line(start: str) -> None:  # the lines come from the waiting thread
        deadline = time.monotonic() + 60
        while not any(line.startswith(start) for line in lines):
            assert time.monotonic() < deadline, f"no line {start!r} in {lines}"
            time.sleep(0.01)
            lines.extend(capsys.readouterr().out.splitlines())

    cluster.check_resources({"CPU": 1.0}, 2, "--workers", "train", joined=True)
    wait_for_line("[train] still waiting for room")
    nodes.append({"Alive": True, "Resources": {"CPU": 1.0}})  # the autoscaler added a node
    wait_for_line("[train] the cluster now has room")
    assert lines[0] == "[train] waiting for the cluster to make room for 2 x (1 CPU): 1 fit now (1 CPU)"
    assert any(line.startswith("[train] still waiting for room for 2 x (1 CPU) after") for line in lines)
    assert lines[-1] == "[train] the cluster now has room for 2 x (1 CPU)"
    with pytest.raises(UserError, match=r"5 x \(1 CPU\) asked for, but this machine has 2 CPU \(2 fit\)"):
        cluster.check_resources({"CPU": 1.0}, 5, "--workers", "train", joined=False)


def test_a_run_on_an_object_store_is_held_by_a_lease(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Object stores have no exclusive create: a renewed lease stands in for the lock file (a file:// URI goes
    through the same pyarrow filesystem code as s3://)."""
    import json
    import time

    from pipeline.shared import storage

    run = f"file://{tmp_path}/run"
    lease = tmp_path / "run" / storage.LOCK_FILE
    monkeypatch.setattr(storage, "RENEW_EVERY_S", 0.05)
    with storage.run_lock(run, "search"):
        first = json.loads(lease.read_text())["renewed"]

        def renewed() -> float:
            try:
                return json.loads(lease.read_text())["renewed"]
            except ValueError:  # read while the renewer rewrites it (a store's write is not atomic)
                return first

        with pytest.raises(UserError, match=r"search 'file://.*' is in use by another driver \(.*:\d+, lease renewed"):
            with storage.run_lock(run, "search"):
                pass
        deadline = time.monotonic() + 60
        while renewed() <= first and time.monotonic() < deadline:  # until the renewer has rewritten it
            time.sleep(0.01)
        assert json.loads(lease.read_text())["renewed"] > first  # renewed while held
    assert not lease.exists()  # released
    lease.write_text(json.dumps({"holder": "elsewhere:1", "token": "x", "renewed": time.time() - 1000}))
    with storage.run_lock(run, "search"):  # a lease its holder stopped renewing is taken over
        assert json.loads(lease.read_text())["holder"].endswith(f":{os.getpid()}")
    lease.write_text(json.dumps({"holder": "elsewhere:1", "token": "x", "renewed": time.time()}))
    with pytest.raises(UserError, match=r"in use by another driver \(elsewhere:1"):
        with storage.run_lock(run, "search"):
            pass
