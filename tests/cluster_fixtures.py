"""A 3-node Ray cluster and an S3 server on this machine, for the cluster drills (tests/test_cluster_e2e.py).

Both start once per test module that asks for them, and stop when it ends: a Ray cluster left running beside
the later tests' own local Ray instances disturbs them (Ray Train's placement-group cleaner then cannot follow
its controller and prints tracebacks into those runs' consoles, which the console tests rightly refuse):

- ``ray_cluster``: a CPU-less head and two 1-CPU worker nodes (``ray.cluster_utils.Cluster``), run by a helper
  process (this file run as a script) that takes one command a line on stdin: ``add`` (a node, as an
  autoscaler would), ``remove NODE_ID`` (kill a node, as a lost spot instance, and wait until Ray has noticed),
  ``quit``. The helper keeps Ray out of the pytest process (``Cluster`` would make it a process-group leader and
  leave it its reaper) and
  starts the cluster with an environment of its own: no ``AWS_*`` or ``RAY_ADDRESS``, so the storage settings
  reach the cluster only the way a user's do, through the driver. When stdin closes (pytest ended, however it
  ended) or on SIGTERM/SIGINT the helper shuts the cluster down, so no raylet outlives the session.
- ``s3_server``: moto's S3 server (``moto[server]``, in the ``test`` extra) in a thread of the pytest process,
  on a free port, with one bucket; it yields the settings a driver needs (``AWS_ENDPOINT_URL``, credentials,
  region). Missing moto is an error, not a skip.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPLY = "CLUSTER-HELPER "  # prefix of the helper's answers on stdout (Ray may print there too)
# Settings that must not reach the cluster's own processes (the driver forwards the storage ones).
DRIVER_ONLY_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "CLOUDSDK_", "RAY_ADDRESS")
BUCKET = "autoformer-test"


def without_driver_settings(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(DRIVER_ONLY_PREFIXES)}


class RayCluster:
    """The helper process running the cluster, and what it answered (``address``, ``head``, ``workers``)."""

    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log
        self.address, self.head = "", ""
        self.workers: list[str] = []  # Ray node ids of the live worker nodes, oldest first
        self._answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(REPLY):
                self._answers.put(json.loads(line[len(REPLY) :]))
        self._answers.put(None)  # the helper is gone

    def _ask(self, command: str, timeout: float = 120) -> dict[str, Any]:
        if command:
            assert self.process.stdin is not None
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            answer = None
        if answer is None:
            raise RuntimeError(
                f"the cluster helper did not answer {command!r} (exit code {self.process.poll()}); see {self.log}"
            )
        if "error" in answer:
            raise RuntimeError(f"cluster helper: {answer['error']}")
        self.address = answer.get("address", self.address)
        self.head = answer.get("head", self.head)
        self.workers = answer.get("workers", self.workers)
        return answer

    def add_node(self) -> str:
        """Add a 1-CPU worker node (as an autoscaler replacing a lost one would); its node id."""
        return self._ask("add")["node"]

    def remove_node(self, node_id: str) -> None:
        """Kill worker node ``node_id`` and everything running on it, at once."""
        self._ask(f"remove {node_id}")

    def drain_node(self, node_id: str, seconds: int) -> None:
        """Give worker node ``node_id`` the notice a cloud gives before a spot reclaim (Ray's drain, reason
        preemption, with ``seconds`` left); taking the node away stays the test's to do (``remove_node``)."""
        self._ask(f"drain {node_id} {seconds}")

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self._ask("quit", timeout=60)
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the helper and what it started
                self.process.wait()


def start_cluster(log: Path) -> RayCluster:
    env = without_driver_settings(dict(os.environ))
    env.update(RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    with open(log, "ab") as err:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches pytest, whose teardown says quit
        )
    cluster = RayCluster(process, log)
    try:
        cluster._ask("", timeout=300)
    except BaseException:
        cluster.close()
        raise
    return cluster


@dataclass
class S3Server:
    server: Any  # moto.server.ThreadedMotoServer
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a driver's shell would export to use this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def filesystem(self):
        """A pyarrow filesystem on this store, configured explicitly (the test process has no AWS_* set)."""
        import pyarrow.fs

        return pyarrow.fs.S3FileSystem(
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
        )


def start_s3() -> S3Server:
    """moto's S3 server on a free port, in a thread of this process (so it cannot outlive the session), with the
    bucket ``BUCKET``."""
    import boto3  # comes with moto[server]; a missing one fails here, loudly
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    s3 = S3Server(server, server.get_host_and_port()[1])
    boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    return s3


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> Iterator[RayCluster]:
    log = tmp_path_factory.mktemp("ray-cluster") / "helper.log"
    cluster = start_cluster(log)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    s3 = start_s3()
    try:
        yield s3
    finally:
        s3.server.stop()


# ---- the helper process ---------------------------------------------------------------------------------


def _serve() -> None:
    """Start the cluster, answer on stdout, obey stdin; shut the cluster down however this ends."""
    from ray.cluster_utils import Cluster

    def reply(**answer: Any) -> None:
        sys.stdout.write(REPLY + json.dumps(answer) + "\n")
        sys.stdout.flush()

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Ray notices a lost node after 5 missed health checks a second apart (by default 5 every 3 s, with 10 s
    # timeouts: each drill waited ~15 s for that alone)
    health = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000, "health_check_failure_threshold": 5}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": health}, connect=False)
    try:
        workers = {}
        for _ in range(2):
            node = cluster.add_node(num_cpus=1)
            workers[node.node_id] = node
        cluster.wait_for_nodes()
        state = lambda: {"address": cluster.address, "head": cluster.head_node.node_id, "workers": list(workers)}
        reply(**state())
        for line in sys.stdin:
            command, *args = line.split()
            try:
                if command == "add":
                    node = cluster.add_node(num_cpus=1)
                    workers[node.node_id] = node
                    cluster.wait_for_nodes()
                    reply(node=node.node_id, **state())
                elif command == "remove":
                    cluster.remove_node(workers.pop(args[0]), allow_graceful=False)
                    # until Ray has noticed (its health check): an autoscaler replaces a node once it is gone
                    cluster.wait_for_nodes(timeout=120)
                    reply(**state())
                elif command == "drain":
                    ray_cli = str(Path(sys.executable).parent / "ray")
                    subprocess.run(
                        [ray_cli, "drain-node", "--address", cluster.address, "--node-id", args[0], "--reason",
                         "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaim (test)",
                         "--deadline-remaining-seconds", args[1]],
                        check=True, capture_output=True, text=True, timeout=60,
                    )  # fmt: skip
                    reply(**state())
                elif command == "quit":
                    break
                else:
                    reply(error=f"unknown command {command!r}")
            except Exception as exc:  # noqa: BLE001 - reported to the test, which fails with it
                reply(error=f"{command}: {type(exc).__name__}: {exc}")
    finally:
        cluster.shutdown()
        reply(stopped=True)


if __name__ == "__main__":
    _serve()
