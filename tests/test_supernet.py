"""Supernets: weight entanglement slices, equality with extracted static models, classical sharing."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import ALL_SPACES, space_for_model_tests

from pipeline.core.arch import Architecture
from pipeline.core.sampling import largest_architecture, sample_architecture, smallest_architecture
from pipeline.core.space import load_space
from pipeline.model import Supernet
from pipeline.shared.errors import UserError


def _images(space, batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, space.in_chans, space.image_size, space.image_size)


@pytest.mark.parametrize("sharing", ["entangled", "classical", "classical_strict"])
@pytest.mark.parametrize("name", ALL_SPACES)
def test_extracted_model_matches_supernet(name: str, sharing: str) -> None:
    space = space_for_model_tests(name)
    net = Supernet(space, sharing=sharing).eval()
    images = _images(space)
    rng = random.Random(11)
    archs = [smallest_architecture(space), largest_architecture(space)] + [
        sample_architecture(space, rng) for _ in range(10)
    ]
    with torch.no_grad():
        for arch in archs:
            static = net.extract(arch).eval()
            diff = (net(images, arch) - static(images)).abs().max().item()
            assert diff <= 1e-5, (arch.key, diff)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["autoformer-tiny", "autoformer-small", "autoformer-base"])
def test_extracted_model_matches_supernet_at_full_size(name: str) -> None:
    space = load_space(name)
    net = Supernet(space).eval()
    images = _images(space, batch=2)
    rng = random.Random(5)
    with torch.no_grad():
        for arch in [sample_architecture(space, rng) for _ in range(2)]:
            assert (net(images, arch) - net.extract(arch).eval()(images)).abs().max().item() <= 1e-5


def test_supernet_holds_only_the_largest_block() -> None:
    space = load_space("autoformer-tiny")
    net = Supernet(space)
    big = net.extract(largest_architecture(space))
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in big.parameters())
    layer = net.blocks[0]
    assert layer.attention.attn.qkv.weight.shape == (3 * 4 * 64, 240)
    assert layer.mlp.mlp.fc1.weight.shape == (960, 240)
    assert len(net.blocks) == 14


def test_subnet_uses_first_k_slices_of_q_k_and_v_separately() -> None:
    space = space_for_model_tests("autoformer-tiny")
    net = Supernet(space)
    arch = Architecture(192, 12, [3] * 12, [3.5] * 12)
    static = net.extract(arch)
    full = net.blocks[0].attention.attn.qkv
    q_rows = 3 * 64
    w = full.weight.detach().view(3, 4 * 64, 240)
    b = full.bias.detach().view(3, 4 * 64)
    got_w = static.blocks[0].attn.qkv.weight.detach().view(3, q_rows, 192)
    got_b = static.blocks[0].attn.qkv.bias.detach().view(3, q_rows)
    for i in range(3):  # Q, K and V: each its own first rows
        assert torch.equal(got_w[i], w[i, :q_rows, :192])
        assert torch.equal(got_b[i], b[i, :q_rows])


def test_training_step_updates_only_the_subnet_slice() -> None:
    space = space_for_model_tests("autoformer-tiny")
    net = Supernet(space, drop_path_rate=0.1).train()
    arch = Architecture(216, 12, [3] * 12, [3.5] * 12)
    net(_images(space), arch).sum().backward()
    attn = net.blocks[0].attention.attn
    grad = attn.qkv.weight.grad.view(3, 4 * 64, 240)
    assert grad[:, : 3 * 64, :216].abs().sum() > 0
    assert grad[:, 3 * 64 :, :].abs().sum() == 0 and grad[:, :, 216:].abs().sum() == 0
    fc1 = net.blocks[0].mlp.mlp.fc1.weight.grad
    hidden = int(216 * 3.5)
    assert fc1[:hidden, :216].abs().sum() > 0 and fc1[hidden:].abs().sum() == 0
    for layer in net.blocks[12:]:  # depth 12 of 14: the last two layers take no part
        assert all(p.grad is None for p in layer.parameters())
    assert net.patch_embed.proj.weight.grad[216:].abs().sum() == 0
    assert net.head.weight.grad[:, 216:].abs().sum() == 0


def test_forward_does_not_change_the_model() -> None:
    space = load_space("digits")
    net = Supernet(space).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = random.Random(0)
    with torch.no_grad():
        for _ in range(5):
            net(_images(space), sample_architecture(space, rng))
            net.extract(sample_architecture(space, rng))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_training_mode_with_dropout_and_drop_path_runs_and_is_stochastic() -> None:
    space = load_space("digits")
    net = Supernet(space, drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.2).train()
    arch = largest_architecture(space)
    images = _images(space)
    assert not torch.equal(net(images, arch), net(images, arch))
    net.eval()
    assert torch.equal(net(images, arch), net(images, arch))


def test_classical_supernet_has_independent_blocks_per_choice() -> None:
    space = load_space("digits")
    net = Supernet(space, sharing="classical").eval()
    layer = net.blocks[0]
    assert sorted(layer.attention.keys()) == ["2", "3", "4"]
    assert sorted(layer.mlp.keys()) == ["2", "3", "4"]
    assert layer.attention["3"].attn.qkv.weight.shape == (3 * 3 * 16, 64)
    assert layer.mlp["2"].mlp.fc1.weight.shape == (128, 64)
    assert layer.mlp["4"].mlp.fc1.weight.shape == (256, 64)
    images = _images(space)
    arch = Architecture(64, 2, [3, 3], [2.0, 2.0])
    with torch.no_grad():
        out = net(images, arch)
        layer.attention["4"].attn.qkv.weight.add_(1.0)  # another choice's weights: no effect on this subnet
        layer.mlp["3"].mlp.fc1.weight.add_(1.0)
        assert torch.equal(out, net(images, arch))
        layer.attention["3"].attn.qkv.weight.add_(1.0)
        assert not torch.equal(out, net(images, arch))
    entangled = sum(p.numel() for p in Supernet(space).parameters())
    assert sum(p.numel() for p in net.parameters()) > 2 * entangled
    assert net(images, arch).shape == (4, 10)


def test_strict_classical_supernet_has_one_block_per_pair() -> None:
    """Each (heads, MLP ratio) pair is its own block: another pair's attention or MLP leaves this subnet alone,
    even one that shares the heads (the plain classical mode would share that attention)."""
    space = load_space("digits")
    net = Supernet(space, sharing="classical_strict").eval()
    layer = net.blocks[0]
    assert len(layer.attention) == len(layer.mlp) == len(space.num_heads) * len(space.mlp_ratio)
    images = _images(space)
    arch = Architecture(64, 2, [3, 3], [2.0, 2.0])
    with torch.no_grad():
        out = net(images, arch)
        layer.attention["h3_r3"].attn.qkv.weight.add_(1.0)  # same heads, another ratio: another block
        layer.mlp["h2_r2"].mlp.fc1.weight.add_(1.0)  # same ratio, other heads: another block
        assert torch.equal(out, net(images, arch))
        layer.attention["h3_r2"].attn.qkv.weight.add_(1.0)
        assert not torch.equal(out, net(images, arch))
        extracted = net.extract(arch).eval()
        assert torch.allclose(extracted(images), net(images, arch), atol=1e-5)
    classical = sum(p.numel() for p in Supernet(space, sharing="classical").parameters())
    assert sum(p.numel() for p in net.parameters()) > 2 * classical


def test_architectures_that_do_not_fit_are_refused() -> None:
    space = load_space("digits")
    too_wide = Architecture(80, 2, [2, 2], [2.0, 2.0])
    with pytest.raises(UserError, match="embed_dim 80 > 64"):
        Supernet(space)(_images(space), too_wide)
    off_grid = Architecture(64, 2, [2, 2], [2.5, 2.0])  # fits the entangled weights, not a classical choice
    assert Supernet(space)(_images(space), off_grid).shape == (4, 10)
    with pytest.raises(UserError, match="mlp_ratio 2.5"):
        Supernet(space, sharing="classical")(_images(space), off_grid)
    with pytest.raises(UserError, match="mlp_ratio 2.5"):
        Supernet(space, sharing="classical_strict")(_images(space), off_grid)
    with pytest.raises(UserError, match="sharing mode 'spos'"):
        Supernet(space, sharing="spos")  # type: ignore[arg-type]
