"""The Kubernetes path (deploy/kuberay/, the Dockerfile) stays runnable: the RayJob's entrypoint is a command the CLI
accepts, the pods give it what its flags ask for, the image carries the Ray this project is tested with, and a
regular (non-editable) install ships every subpackage. Fast: YAML, argparse and pyproject.toml only, no Ray start.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from pipeline.cli.main import build_parser
from pipeline.core.task import load_task
from pipeline.shared.cluster import FORWARDED_ENV_PREFIXES

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
KUBERAY = ROOT / "deploy" / "kuberay"
STORAGE_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / name).read_text())


def _cluster_specs() -> list[Any]:
    return [
        pytest.param("raycluster.yaml", _load("raycluster.yaml")["spec"], id="raycluster"),
        pytest.param("rayjob.yaml", _load("rayjob.yaml")["spec"]["rayClusterSpec"], id="rayjob"),
    ]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _gpu_group(spec: dict[str, Any]) -> dict[str, Any]:
    (group,) = [
        g
        for g in spec["workerGroupSpecs"]
        if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    return group


def _entrypoint_args() -> Any:
    """The RayJob's entrypoint as the CLI parses it (argparse exits on anything it does not accept)."""
    argv = shlex.split(_load("rayjob.yaml")["spec"]["entrypoint"])
    assert argv[0] == "autoformer", argv
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"rayjob.yaml's entrypoint is not a command `autoformer` accepts: {shlex.join(argv)}")


def test_manifests_are_kuberay_v1() -> None:
    assert _load("raycluster.yaml")["apiVersion"] == "ray.io/v1"
    assert _load("raycluster.yaml")["kind"] == "RayCluster"
    job = _load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    # The one-off job runs on the same cluster as the long-lived one.
    assert job["spec"]["rayClusterSpec"] == _load("raycluster.yaml")["spec"]


def test_rayjob_entrypoint_is_a_valid_autoformer_command() -> None:
    args = _entrypoint_args()
    assert args.command == "run" and args.gpu and args.workers >= 1
    assert args.storage.startswith(("s3://", "gs://")), "every pod must see the runs: object storage, not a path"
    data_root = next(s.split("=", 1)[1] for s in args.overrides if s.startswith("data.root="))
    if data_root.startswith(("s3://", "gs://")):
        return  # read through Ray Data on any pod with CPUs: no volume anywhere
    gpu_pods = _gpu_group(_load("raycluster.yaml")["spec"])["template"]["spec"]["containers"]
    mounts = {m["mountPath"] for c in gpu_pods for m in c.get("volumeMounts", [])}
    assert any(data_root == m or data_root.startswith(m.rstrip("/") + "/") for m in mounts), data_root


def test_rayjob_runtime_env_leaves_storage_settings_to_the_driver() -> None:
    """The driver adds its AWS_*/GOOGLE_* variables to the job's runtime env; Ray refuses a key given twice."""
    runtime_env = yaml.safe_load(_load("rayjob.yaml")["spec"]["runtimeEnvYAML"]) or {}
    repeated = [k for k in runtime_env.get("env_vars", {}) if k.startswith(FORWARDED_ENV_PREFIXES)]
    assert not repeated, f"runtimeEnvYAML sets {repeated}; the head pod's env (a Secret) is where they go"


@pytest.mark.parametrize("name,spec", _cluster_specs())
def test_cluster_resources_match_the_entrypoint(name: str, spec: dict[str, Any]) -> None:
    args = _entrypoint_args()
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "no training on the head"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {}), name
    group = _gpu_group(spec)
    resources = group["template"]["spec"]["containers"][0]["resources"]
    if args.gpu:  # one GPU per pod: one Ray Train worker or evaluator each
        assert resources["limits"]["nvidia.com/gpu"] == 1, name
        assert resources["requests"].get("nvidia.com/gpu", 1) == 1, name
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
    assert args.workers <= group["maxReplicas"], f"{name}: --workers {args.workers} > maxReplicas"
    # A training worker asks for data.loader_workers + 1 CPUs beside its GPU (pipeline/training/launch.py).
    loader_workers = load_task(args.task, args.overrides).data["loader_workers"]
    assert float(resources["limits"]["cpu"]) >= loader_workers + 1, name


@pytest.mark.parametrize("name,spec", _cluster_specs())
def test_storage_settings_come_from_a_secret_on_the_head(name: str, spec: dict[str, Any]) -> None:
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in head["env"]}
    for key in STORAGE_KEYS:
        assert "secretKeyRef" in env[key]["valueFrom"], f"{name}: {key} must come from a Secret, not a literal"


@pytest.mark.parametrize("name,spec", _cluster_specs())
def test_images_carry_the_tested_ray(name: str, spec: dict[str, Any]) -> None:
    assert spec["rayVersion"] == ray.__version__, name
    for container in _containers(spec):
        tag = container["image"].rsplit(":", 1)[1]
        found = re.search(r"\d+\.\d+\.\d+", tag)
        assert found and found.group() == ray.__version__, f"{name}: {container['image']} is not Ray {ray.__version__}"


def test_dockerfile_installs_the_project_on_the_tested_ray() -> None:
    text = (ROOT / "Dockerfile").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert re.search(r"^ARG RAY_VERSION=(\S+)$", code, flags=re.M).group(1) == ray.__version__
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py3\d+-gpu$", code, flags=re.M)
    assert re.search(r"pip install [^\n]*(?<![-\w])\.(?=\s)", code), "installs this project (pip install .)"
    assert "-e ." not in code and "--editable" not in code, "a regular install: the image has no checkout to edit"
    assert "+cpu" not in code and "/whl/cpu" not in code, "the image is for GPU nodes: no CPU-only torch"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "runs"} <= set(ignored)


def test_package_list_covers_every_subpackage() -> None:
    """`pip install .` ships only the packages pyproject.toml lists: each folder of pipeline/ with Python in it,
    and the data folders mapped into the package."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "pipeline").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert not on_disk - listed, f"pyproject.toml [tool.setuptools] packages misses {sorted(on_disk - listed)}"
    for package, folder in setuptools["package-dir"].items():
        assert package in listed and (ROOT / folder).is_dir(), package
        assert any((ROOT / folder).glob("*.yaml")) and setuptools["package-data"][package] == ["*.yaml"], package
    stale = {p for p in listed - on_disk if p not in setuptools["package-dir"]}
    assert not stale, f"pyproject.toml lists packages with no folder: {sorted(stale)}"
