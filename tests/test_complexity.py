"""Exact parameter and MAC counts: the reference figures, and agreement with the real model for every space."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core.arch import Architecture
from pipeline.core.complexity import count_macs, count_params, space_ranges
from pipeline.core.sampling import largest_architecture, sample_architecture, smallest_architecture
from pipeline.core.space import builtin_space_names, load_space
from pipeline.model import StaticViT

AUTOFORMER_T = Architecture(
    192, 13, [3] * 10 + [4] + [3] * 2, [3.5, 3.5, 3.0, 3.5, 3.0, 3.0, 4.0, 4.0, 3.5, 4.0, 3.5, 4.0, 3.5]
)
AUTOFORMER_S = Architecture(
    384, 13, [6, 6, 5, 7, 5, 5, 5, 6, 6, 7, 7, 6, 7], [3.0, 3.5, 3.0, 3.5, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 3.5, 4.0]
)
AUTOFORMER_B = Architecture(
    576,
    14,
    [9, 9, 9, 9, 9, 10, 9, 9, 10, 9, 10, 9, 9, 10],
    [3.5, 3.5, 4.0, 3.5, 4.0, 3.5, 3.5, 3.0, 4.0, 4.0, 3.0, 4.0, 3.0, 3.5],
)
# (architecture, params with relative position, without, paper's GFLOPs)
REFERENCE = [
    (AUTOFORMER_T, 5_867_944, 5_768_104, 1.3),
    (AUTOFORMER_S, 22_891_432, 22_791_592, 5.1),
    (AUTOFORMER_B, 53_691_688, 53_584_168, 11.0),
]


def _fixed(relative: bool) -> dict:
    return {**load_space("autoformer-tiny").fixed_parts(), "relative_position": relative}


@pytest.mark.parametrize("arch,with_rel,without_rel,gflops", REFERENCE, ids=["T", "S", "B"])
def test_reference_parameter_counts(arch: Architecture, with_rel: int, without_rel: int, gflops: float) -> None:
    assert count_params(arch, _fixed(True)) == with_rel
    assert count_params(arch, _fixed(False)) == without_rel


@pytest.mark.parametrize("arch,with_rel,without_rel,gflops", REFERENCE, ids=["T", "S", "B"])
def test_macs_land_near_paper(arch: Architecture, with_rel: int, without_rel: int, gflops: float) -> None:
    # The paper's figures leave out the relative-position products; with them counted we are up to ~14 % higher.
    assert count_macs(arch, _fixed(False)) / 1e9 == pytest.approx(gflops, rel=0.10)
    assert count_macs(arch, _fixed(True)) / 1e9 == pytest.approx(gflops, rel=0.15)


def _measured(arch: Architecture, fixed: dict) -> tuple[int, int]:
    """numel of the built static model and FlopCounterMode's count / 2, on the meta device (no memory, no time)."""
    with torch.device("meta"):
        model = StaticViT(arch, fixed)
        images = torch.empty(1, fixed["in_chans"], fixed["image_size"], fixed["image_size"])
        with FlopCounterMode(display=False) as counter:
            model(images)
    total = counter.get_total_flops()
    assert total % 2 == 0
    return sum(p.numel() for p in model.parameters()), total // 2


@pytest.mark.parametrize("name", builtin_space_names())
@pytest.mark.parametrize("relative", [True, False])
def test_counts_equal_model_for_random_architectures(name: str, relative: bool) -> None:
    space = load_space(name)
    fixed = {**space.fixed_parts(), "relative_position": relative}
    rng = random.Random(hash(name) % 1000)
    archs = [smallest_architecture(space), largest_architecture(space)] + [
        sample_architecture(space, rng) for _ in range(6)
    ]
    for arch in archs:
        assert _measured(arch, fixed) == (count_params(arch, fixed), count_macs(arch, fixed)), arch.key


@pytest.mark.parametrize("arch", [a for a, *_ in REFERENCE], ids=["T", "S", "B"])
def test_counts_equal_model_for_reference_models(arch: Architecture) -> None:
    fixed = _fixed(True)
    assert _measured(arch, fixed) == (count_params(arch, fixed), count_macs(arch, fixed))


def test_counts_follow_overrides_and_other_fixed_parts() -> None:
    space = load_space("digits").with_overrides(image_size=16, num_classes=7, in_chans=3)
    fixed = {**space.fixed_parts(), "qkv_bias": False}
    arch = sample_architecture(space, random.Random(3))
    assert _measured(arch, fixed) == (count_params(arch, fixed), count_macs(arch, fixed))


def test_space_ranges_are_the_extremes() -> None:
    space = load_space("digits")
    ranges = space_ranges(space)
    rng = random.Random(0)
    for _ in range(200):
        arch = sample_architecture(space, rng)
        assert ranges["params"][0] <= count_params(arch, space) <= ranges["params"][1]
        assert ranges["macs"][0] <= count_macs(arch, space) <= ranges["macs"][1]
