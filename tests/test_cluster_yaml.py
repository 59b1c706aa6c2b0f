"""cluster.yaml passes Ray's own autoscaler schema (offline), so `ray up cluster.yaml` does not fail on shape."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_yaml_is_valid_for_ray_up() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] == 1 and isinstance(workers["resources"]["CPU"], int)
    assert any("pip install -e ~/autoformer" in c for c in config["setup_commands"])
    assert config["available_node_types"]["cpu_server"]["resources"]["cpu_server"] == 1  # a latency target
