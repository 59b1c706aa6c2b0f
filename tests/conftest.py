"""Shared fixtures: spaces at a reduced image size so supernet tests stay fast on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

# The multi-node Ray cluster and the S3 server (started only when a test asks for them).
from cluster_fixtures import ray_cluster, s3_server  # noqa: F401

from pipeline.core.space import SearchSpace, builtin_space_names, load_space

ALL_SPACES = builtin_space_names()
# Slicing does not depend on the image size; 32 px keeps even the base supernet's forward cheap.
SMALL_IMAGE = {"digits": None, "autoformer-tiny": 32, "autoformer-small": 32, "autoformer-base": 32}


def space_for_model_tests(name: str) -> SearchSpace:
    space = load_space(name)
    size = SMALL_IMAGE.get(name, 32)
    return space.with_overrides(image_size=size) if size else space


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits_supernet(tmp_path_factory):
    """A freshly initialised (untrained) digits supernet directory with the task and splits recorded, as
    'autoformer train' exports it: search and export code do not care whether the weights were trained."""
    from pipeline.core.task import load_task
    from pipeline.model.supernet import Supernet
    from pipeline.model.supernet_dir import save_supernet
    from pipeline.training.launch import validate_data

    path = tmp_path_factory.mktemp("digits-supernet") / "supernet"
    task = load_task("digits")
    checked = validate_data(task)
    save_supernet(Supernet(checked["space"]), path, task=task.to_dict(), splits=checked["splits"], epochs=0)
    return path
