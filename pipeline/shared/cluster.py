"""Joining or starting the Ray cluster a phase runs on (the driver side of training and search).

The driver's storage settings travel with the job: every ``AWS_*`` variable (endpoint, region, credentials,
the way MinIO, Ceph or R2 users work) and the Google Cloud ones reach every Ray process the job starts
(Train controller and workers, Tune trials, evaluators) through its runtime environment, so a cluster whose
nodes were started without them still reads and writes ``s3://`` and ``gs://`` runs. The experiment
trackers' settings (``MLFLOW_*``, ``WANDB_*``) travel the same way.
"""

from __future__ import annotations

import json
import os
import threading
import time

import ray

from pipeline.shared.errors import UserError
from pipeline.shared.progress import say
from pipeline.shared.ray_console import DASHBOARD_ENV, INIT_LOGGING

STORAGE_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS_", "CLOUDSDK_")
TRACKING_ENV_PREFIXES = ("MLFLOW_", "WANDB_")  # trackers: the server, its credentials, W&B's mode and key
FORWARDED_ENV_PREFIXES = STORAGE_ENV_PREFIXES + TRACKING_ENV_PREFIXES


JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job manager in a submitted job's driver


def forwarded_environment() -> dict[str, str]:
    """The driver's storage settings (S3 and Google Cloud endpoint, region, credentials) and tracking settings
    (MLflow's server and token, W&B's key and mode) to forward.

    In a submitted job (``ray job submit``, a KubeRay RayJob) the job's own runtime environment already reaches
    every process, and Ray refuses a driver that sets one of its variables again: those are left to the job.
    """
    job_env = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}").get("runtime_env", {}).get("env_vars") or {}
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES) and k not in job_env}


def node_id() -> str:
    """The Ray node id of the calling process ("" outside Ray): two nodes on one host, or containers with one
    hostname, stay apart."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def connect(gpu: bool, phase: str) -> bool:
    """Join the cluster named by ``RAY_ADDRESS`` (or the one already joined), else start a Ray of our own on this
    machine (never joining one that ``ray start`` left running); True when
    it joined a cluster (whose autoscaler may add nodes), False for a Ray started here.

    With ``gpu``, a local machine without a GPU is a clear error; a cluster without GPU nodes yet is waited on
    (its autoscaler may add them), with a line saying so.
    """
    joining = bool(os.environ.get("RAY_ADDRESS")) or ray.is_initialized()
    if not ray.is_initialized():
        # Without RAY_ADDRESS a Ray of our own, never whatever `ray start` left running on this host (whose
        # processes inherit this environment anyway); a cluster's processes get the storage settings forwarded.
        env = forwarded_environment() if joining else {}
        dashboard = None if joining else os.environ.get(DASHBOARD_ENV) == "1"  # None: the cluster's own
        context = ray.init(
            address=None if joining else "local",
            runtime_env={"env_vars": env} if env else None,
            include_dashboard=dashboard,
            **INIT_LOGGING,
        )
        if dashboard:
            say(f"[{phase}] Ray dashboard: http://{context.dashboard_url}")
    if gpu and ray.cluster_resources().get("GPU", 0) < 1:
        if not joining:
            raise UserError(f"gpu: a GPU was asked for, but this machine has none; {phase} on CPUs instead")
        say(f"[{phase}] no GPU in the cluster yet: waiting for the autoscaler to add GPU nodes")
    return joining


WAIT_LINE_EVERY_S = 30.0  # how often a driver waiting for an autoscaler says so


def _placeable(unit: dict[str, float], count: int) -> tuple[int, list[dict[str, float]]]:
    """How many ``unit``s the cluster's live nodes can hold in all (capacity, not what is free now)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    wanted = {k: v for k, v in unit.items() if v > 0}
    if not wanted:
        return count, nodes
    return sum(min(int(node.get(k, 0) // v) for k, v in wanted.items()) for node in nodes), nodes


def _describe(resources: dict[str, float]) -> str:
    return " + ".join(f"{v:g} {k}" for k, v in resources.items() if v > 0)


def check_resources(unit: dict[str, float], count: int, what: str, phase: str, joined: bool) -> None:
    """Before asking Ray for ``count`` units of ``unit`` resources (e.g. workers of 2 CPUs): on a Ray started
    here, more than the machine can ever place is one clear error in seconds (Ray would wait forever); on a
    cluster, a line says what is waited for, since its autoscaler may add nodes, and another every
    ``WAIT_LINE_EVERY_S`` seconds until the cluster is large enough."""
    placeable, nodes = _placeable(unit, count)
    if placeable >= count:
        return
    asked = _describe(unit)
    have = ", ".join(f"{sum(n.get(k, 0) for n in nodes):g} {k}" for k in unit)
    if not joined:
        raise UserError(
            f"{what}: {count} x ({asked}) asked for, but this machine has {have} ({placeable} fit); ask for fewer "
            f"or smaller units, or run on a cluster (RAY_ADDRESS)"
        )
    wanted = f"{count} x ({asked})"
    say(f"[{phase}] waiting for the cluster to make room for {wanted}: {placeable} fit now ({have})")
    threading.Thread(target=_say_while_waiting, args=(unit, count, wanted, phase), daemon=True).start()


def _say_while_waiting(unit: dict[str, float], count: int, wanted: str, phase: str) -> None:
    start = time.monotonic()
    while True:
        time.sleep(WAIT_LINE_EVERY_S)
        try:
            placeable, _ = _placeable(unit, count)
        except Exception:  # Ray shut down: the phase is over
            return
        if placeable >= count:
            say(f"[{phase}] the cluster now has room for {wanted}")
            return
        say(
            f"[{phase}] still waiting for room for {wanted} after {time.monotonic() - start:.0f} s: {placeable} fit now"
        )
