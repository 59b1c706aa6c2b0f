"""The decomposed relative-position attention equals the materialised form (logits and every gradient, tables
included) for the supernet in both sharing modes and for extracted static models, over random architectures of
every space; parameter names and shapes are unchanged."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import ALL_SPACES, space_for_model_tests
from relpos_reference import reference_attend

from pipeline.core.sampling import largest_architecture, sample_architecture, smallest_architecture
from pipeline.core.space import load_space
from pipeline.model import static as static_module
from pipeline.model import supernet as supernet_module
from pipeline.model.supernet import Supernet


def _run(model: torch.nn.Module, images: torch.Tensor, *args) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits = model(images, *args)
    (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _close(new: torch.Tensor, ref: torch.Tensor, what: str, floor: float = 0.0) -> None:
    """Equal within 1e-5 of the tensor's own scale; ``floor`` keeps gradients that are round-off noise around zero
    (far below every other gradient of the model) from demanding more than fp32 can give."""
    scale = max(ref.abs().max().item(), floor, 1e-30)
    error = (new - ref).abs().max().item()
    assert error <= 1e-5 * scale, f"{what}: max abs difference {error:.3g} vs scale {scale:.3g}"


def _compare(model: torch.nn.Module, images: torch.Tensor, monkeypatch: pytest.MonkeyPatch, *args) -> None:
    new_logits, new_grads = _run(model, images, *args)
    with monkeypatch.context() as m:
        m.setattr(supernet_module, "attend", reference_attend)
        m.setattr(static_module, "attend", reference_attend)
        ref_logits, ref_grads = _run(model, images, *args)
    _close(new_logits, ref_logits, "logits")
    assert new_grads.keys() == ref_grads.keys()
    assert any(".rel_pos_" in name for name in new_grads)
    floor = 1e-3 * max(g.abs().max().item() for g in ref_grads.values())
    for name in ref_grads:
        _close(new_grads[name], ref_grads[name], name, floor)


def _archs(space, count: int, seed: int):
    rng = random.Random(seed)
    return [smallest_architecture(space), largest_architecture(space)] + [
        sample_architecture(space, rng) for _ in range(count)
    ]


@pytest.mark.parametrize("name", ALL_SPACES)
@pytest.mark.parametrize("sharing", ["entangled", "classical"])
def test_supernet_and_extracted_models_match_the_materialised_form(name, sharing, monkeypatch) -> None:
    space = space_for_model_tests(name)
    assert space.relative_position
    net = Supernet(space, sharing=sharing).eval()
    images = torch.randn(3, space.in_chans, space.image_size, space.image_size)
    for arch in _archs(space, 3, seed=len(name)):
        _compare(net, images, monkeypatch, arch)
        _compare(net.extract(arch).eval(), images, monkeypatch)


@pytest.mark.parametrize("max_distance", [1, 2, 7])
def test_clipping_at_max_distance_matches(max_distance: int, monkeypatch) -> None:
    space = load_space("compact-32")  # an 8 x 8 grid: offsets up to 7, clipped below that
    space = type(space).from_dict({**space.to_dict(), "max_relative_position": max_distance})
    net = Supernet(space).eval()
    images = torch.randn(2, 3, 32, 32)
    for arch in _archs(space, 2, seed=max_distance):
        _compare(net, images, monkeypatch, arch)


def test_paper_grid_at_224_px_matches(monkeypatch) -> None:
    space = load_space("autoformer-tiny")  # 14 x 14 grid, max distance 14
    net = Supernet(space).eval()
    _compare(net.extract(smallest_architecture(space)).eval(), torch.randn(1, 3, 224, 224), monkeypatch)


def test_parameter_names_and_shapes_are_unchanged() -> None:
    space = space_for_model_tests("autoformer-tiny")
    state = Supernet(space).state_dict()
    rel = {k: tuple(v.shape) for k, v in state.items() if ".rel_pos_" in k}
    assert rel["blocks.0.attention.attn.rel_pos_k.table_v"] == (2 * 14 + 2, 64)
    assert {k.rsplit(".", 1)[-1] for k in rel} == {"table_v", "table_h"}  # derived buffers stay out of files
