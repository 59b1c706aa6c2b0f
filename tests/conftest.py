"""Shared fixtures: spaces at a reduced image size so supernet tests stay fast on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from pipeline.space import SearchSpace, builtin_space_names, load_space

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
