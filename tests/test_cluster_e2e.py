"""The tool on a multi-node Ray cluster with an S3 store, as a user runs it there: slow, run in CI.

The cluster (a CPU-less head and two 1-CPU worker nodes on this machine) and the S3 server (moto) come from
tests/cluster_fixtures.py, once for this module. Every command runs as ``autoformer`` does on a cluster's head:
``RAY_ADDRESS`` names the cluster, and the S3 settings are in the driver's environment only (the cluster was
started without them), so they reach Ray's processes only through the job. The drills: DDP over two nodes,
a search with one evaluator per node, a driver killed or interrupted (the same command, or ``--resume``,
continues from S3), and a worker node lost mid-run and replaced, as an autoscaler would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs
import pytest
from cluster_fixtures import BUCKET, RayCluster, S3Server, without_driver_settings

from pipeline.training.checkpoint import CHECKPOINT_PREFIX, OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE

pytestmark = pytest.mark.slow

TRAIN = ["--workers", "2", "--cpus-per-worker", "1", "--set", "train.warmup_epochs=1", "--set",
         "train.checkpoint_every=1", "--set", "train.eval_subnets=1"]  # fmt: skip
# 0.9 CPU: one evaluator per 1-CPU node (the trials take none, on the head). 20 generations: the replacement was
# ready 29-30 s after the loss when Ray took about 12 s to notice a lost node (the test cluster's health checks now
# take about 5 s), by generation 10, while the survivor went on alone at 2-3 s a generation; so about half the
# search is still left for it.
GENERATIONS = 20
SEARCH = ["--population", "6", "--generations", str(GENERATIONS), "--set", "search.parents=3", "--set",
          "search.latency_repeats=1", "--evaluators", "2", "--cpus-per-evaluator", "0.9"]  # fmt: skip


class Driver:
    """``autoformer ...`` in a subprocess with the cluster and S3 settings in its environment only; its output
    is collected as it comes, so a test can act on a progress line, and kept in ``log`` (for a post-mortem)."""

    def __init__(self, cluster: RayCluster, s3: S3Server, *args: str, log: Path) -> None:
        env = {**without_driver_settings(dict(os.environ)), **s3.env}
        env.update(RAY_ADDRESS=cluster.address, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.main", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.log = log
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log, "w", encoding="utf-8") as kept:
            for line in self.proc.stdout:
                self.lines.append(line)
                kept.write(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while not condition():
            assert self.proc.poll() is None, (
                f"ended before the drill (exit {self.proc.returncode}):\n{self.output[-4000:]}"
            )
            assert time.time() < deadline, f"timed out waiting:\n{self.output[-4000:]}"
            time.sleep(0.2)

    def wait_for_line(self, text: str, timeout: float = 300) -> None:
        self.wait_for(lambda: text in self.output, timeout)

    def finish(self, timeout: float = 600) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=30)
        return self.proc.returncode

    def ok(self, timeout: float = 600) -> str:
        code = self.finish(timeout)
        assert code == 0, self.output[-6000:]
        return self.output


def _read_json(s3: S3Server, path: str) -> dict:
    with s3.filesystem().open_input_stream(path) as f:
        return json.loads(f.read())


def _checkpointed_epochs(s3: S3Server, run: str) -> list[int]:
    """Epochs of the complete checkpoints of run ``BUCKET/run`` on S3."""
    fs = s3.filesystem()
    infos = fs.get_file_info(pyarrow.fs.FileSelector(f"{BUCKET}/{run}", allow_not_found=True))
    epochs = []
    for info in infos:
        if info.type != pyarrow.fs.FileType.Directory or not info.base_name.startswith(CHECKPOINT_PREFIX):
            continue
        files = fs.get_file_info([f"{info.path}/{f}" for f in (STATE_FILE, WEIGHTS_FILE, OPTIMIZER_FILE)])
        if all(f.type == pyarrow.fs.FileType.File for f in files):
            epochs.append(_read_json(s3, f"{info.path}/{STATE_FILE}")["epoch"])
    return sorted(epochs)


def _candidates(s3: S3Server, run: str) -> pd.DataFrame:
    """``candidates.parquet`` read from S3 with pandas (through pyarrow's S3 filesystem: no s3fs needed)."""
    return pd.read_parquet(f"{BUCKET}/{run}/candidates.parquet", filesystem=s3.filesystem())


@pytest.fixture(scope="module")
def s3_supernet(digits_supernet: Path, s3_server: S3Server) -> str:
    """The session's (untrained) digits supernet, uploaded: searches read it from S3 as from a training run."""
    target = f"{BUCKET}/supernets/digits/supernet"
    pyarrow.fs.copy_files(str(digits_supernet), target, destination_filesystem=s3_server.filesystem())
    return f"s3://{target}"


def _continued_from(out: str, restarts: int) -> list[int]:
    """The epochs the workers continued from with ``restarts`` restarts (and the one resume) so far."""
    found = re.findall(
        rf"continuing from epoch (\d+)(?:, step \d+ of epoch \d+)? \(restarts {restarts}, resumes 1\)", out
    )
    return [int(e) for e in found]


def test_training_on_two_nodes_with_s3_survives_a_killed_driver_and_a_lost_node(
    ray_cluster: RayCluster, s3_server: S3Server, tmp_path: Path
) -> None:
    """DDP with one rank per worker node, checkpoints and the export on S3; the driver killed after the first
    checkpoint (the same command resumes from S3), then a worker node preempted mid-run: the cloud's notice
    (Ray's drain) makes the ranks checkpoint at their next step and train on; the node goes, and Ray Train
    restarts the workers from that checkpoint on S3 once the autoscaler's replacement node is up."""
    run = "runs/digits-supernet"
    args = ["train", "digits", "--storage", f"s3://{BUCKET}/runs", *TRAIN, "--set", "train.epochs=8"]
    first = Driver(ray_cluster, s3_server, *args, log=tmp_path / "first.log")
    first.wait_for(lambda: _checkpointed_epochs(s3_server, run))
    first.proc.kill()  # a lost driver: nothing of it runs to clean up; its job's actors go with it
    first.finish()

    second = Driver(ray_cluster, s3_server, *args, log=tmp_path / "second.log")
    second.wait_for(lambda: _continued_from(second.output, restarts=0))  # the same command resumes from S3
    resumed_at = _continued_from(second.output, restarts=0)[0]
    assert 1 <= resumed_at <= 2
    second.wait_for(lambda: _checkpointed_epochs(s3_server, run)[-1] > resumed_at)
    lost = ray_cluster.workers[0]
    ray_cluster.drain_node(lost, 60)  # a spot instance's notice: it goes in a minute
    second.wait_for_line("preemption notice")
    noticed = re.search(r"checkpointed at epoch (\d+), step (\d+); training goes on", second.output)
    assert noticed, second.output[-4000:]
    ray_cluster.remove_node(lost)  # the spot instance gone, with the rank it held
    new = ray_cluster.add_node()  # and the autoscaler's replacement
    out = second.ok()
    # the restart continues from the notice's checkpoint on S3 (or a newer one), not an older periodic one
    epoch, step = (int(g) for g in noticed.groups())
    restarted = re.search(r"continuing from epoch (\d+)(?:, step (\d+) of epoch \d+)? \(restarts 1, resumes 1\)", out)
    assert restarted, out[-4000:]
    assert (int(restarted.group(1)), int(restarted.group(2) or 0)) >= (epoch - 1, step), out[-4000:]
    config = _read_json(s3_server, f"{BUCKET}/{run}/supernet/config.json")
    assert config["epochs"] == 8 and config["resumes"] == 1 and config["restarts"] >= 1
    assert [h["epoch"] for h in config["history"]] == list(range(1, 9))
    # the last attempt's ranks: one on each worker node (the head has no CPU for one), the new node included
    assert len(config["nodes"]) == 2 and sorted(config["nodes"]) == sorted(ray_cluster.workers)
    assert lost not in config["nodes"] and new in config["nodes"]


def _generations_reported(out: str) -> list[int]:
    return [int(g) for g in re.findall(r"\[search\] generation (\d+) ", out)]


def test_search_on_two_nodes_from_s3_survives_an_interrupt_and_a_lost_node(
    ray_cluster: RayCluster, s3_server: S3Server, s3_supernet: str, tmp_path: Path
) -> None:
    """A search of the S3 supernet with one evaluator per worker node, its records on S3; interrupted after the
    first generation (``--resume`` continues from S3), then a node holding an evaluator lost mid-search and
    replaced: every candidate is scored exactly once."""
    args = ["search", "digits", "--supernet", s3_supernet, "--storage", f"s3://{BUCKET}/runs", "--name", "search",
            "--seed", "3", *SEARCH]  # fmt: skip
    first = Driver(ray_cluster, s3_server, *args, log=tmp_path / "first.log")
    first.wait_for(lambda: _generations_reported(first.output))
    first.proc.send_signal(signal.SIGINT)
    assert first.finish() != 0 and "--resume" in first.output, first.output[-4000:]

    second = Driver(ray_cluster, s3_server, *args, "--resume", log=tmp_path / "second.log")
    second.wait_for(lambda: _generations_reported(second.output))
    assert 0 not in _generations_reported(second.output)  # resumed, not started again
    nodes_before = set(ray_cluster.workers)
    lost = ray_cluster.workers[0]
    ray_cluster.remove_node(lost)  # an evaluator gone mid-search (the trials run on the head)
    new = ray_cluster.add_node()
    out = second.ok()
    assert "evaluator(s) replaced" in out and max(_generations_reported(out)) == GENERATIONS - 1, out[-6000:]
    assert re.search(r"\[search\] evaluator \d replaced: pid \d+", out), out[-6000:]
    df = _candidates(s3_server, "runs/search")
    # every candidate scored exactly once: none lost with the node, none counted twice, no error rows
    assert len(df) == df.key.nunique() == df.trial_id.nunique() == 6 * GENERATIONS and (df.status == "ok").all()
    assert sorted(set(df.generation)) == list(range(GENERATIONS))
    # scored on the worker nodes: both first ones, then the replacement
    assert set(df.node) <= nodes_before | {new} and nodes_before <= set(df.node) and new in set(df.node)
