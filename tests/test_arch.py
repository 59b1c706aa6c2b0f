"""Architecture values: JSON interchange, validation, keys; seeded uniform sampling; extremes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from pipeline.core.arch import Architecture, in_space, validate_in_space
from pipeline.core.sampling import (
    largest_architecture,
    sample_architecture,
    sample_architectures,
    smallest_architecture,
)
from pipeline.core.space import builtin_space_names, load_space
from pipeline.shared.errors import UserError

T = Architecture(192, 13, [3] * 10 + [4] + [3] * 2, [3.5, 3.5, 3.0, 3.5, 3.0, 3.0, 4.0, 4.0, 3.5, 4.0, 3.5, 4.0, 3.5])


def test_json_round_trip(tmp_path: Path) -> None:
    text = T.to_json()
    assert json.loads(text) == {
        "embed_dim": 192,
        "depth": 13,
        "num_heads": list(T.num_heads),
        "mlp_ratio": list(T.mlp_ratio),
    }
    assert Architecture.from_json(text) == T
    path = tmp_path / "a.json"
    path.write_text(text)
    assert Architecture.load(path) == T


def test_key_is_stable_and_distinguishes() -> None:
    assert T.key == Architecture.from_json(T.to_json()).key
    assert T.key.startswith("e192-d13-h3,3,")
    other = Architecture(192, 13, T.num_heads, (4.0,) + T.mlp_ratio[1:])
    assert other.key != T.key and other != T and len({T, other, Architecture.from_dict(T.to_dict())}) == 2


@pytest.mark.parametrize(
    "data,message",
    [
        ({"embed_dim": 192, "depth": 2, "num_heads": [3], "mlp_ratio": [4.0, 4.0]}, "has 1 entries but depth is 2"),
        ({"embed_dim": 0, "depth": 1, "num_heads": [3], "mlp_ratio": [4.0]}, "'embed_dim': value 0"),
        ({"embed_dim": 192, "depth": 1, "num_heads": [3], "mlp_ratio": [4.0], "extra": 1}, "unknown key 'extra'"),
        ({"embed_dim": 192, "depth": 1, "num_heads": [3]}, "missing key 'mlp_ratio'"),
        ({"embed_dim": 192, "depth": 1, "num_heads": 3, "mlp_ratio": [4.0]}, "'num_heads'.*list"),
        ({"embed_dim": 192, "depth": 1, "num_heads": [0], "mlp_ratio": [4.0]}, "'num_heads': value 0"),
        ({"embed_dim": 192, "depth": 1, "num_heads": [3], "mlp_ratio": ["x"]}, "'mlp_ratio': value 'x'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_architectures(data: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        Architecture.from_dict(data, source="arch.json")


def test_bad_json_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("{nope")
    with pytest.raises(UserError, match="a.json.*not valid JSON"):
        Architecture.load(path)
    with pytest.raises(UserError, match="does not exist"):
        Architecture.load(tmp_path / "missing.json")


def test_validation_against_space() -> None:
    tiny = load_space("autoformer-tiny")
    # The published AutoFormer-T uses MLP ratio 3.0, which the tiny space does not offer.
    with pytest.raises(UserError, match=r"layer 2 mlp_ratio 3 is not one of \[3.5, 4.0\]"):
        validate_in_space(T, tiny)
    assert not in_space(T, tiny)
    assert in_space(smallest_architecture(tiny), tiny) and in_space(largest_architecture(tiny), tiny)
    with pytest.raises(UserError, match="embed_dim 100"):
        validate_in_space(Architecture(100, 12, [3] * 12, [4.0] * 12), tiny)


@pytest.mark.parametrize("name", builtin_space_names())
def test_sampling_is_seeded_valid_and_covers_choices(name: str) -> None:
    space = load_space(name)
    first = sample_architectures(space, 300, seed=7)
    assert first == sample_architectures(space, 300, seed=7)
    assert first != sample_architectures(space, 300, seed=8)
    for arch in first:
        validate_in_space(arch, space)
    assert {a.depth for a in first} == set(space.depth)
    assert {a.embed_dim for a in first} == set(space.embed_dim)
    assert {h for a in first for h in a.num_heads} == set(space.num_heads)
    assert {r for a in first for r in a.mlp_ratio} == set(space.mlp_ratio)


def test_sampling_is_uniform_per_gene() -> None:
    """Depth, embed dim and each layer's genes are drawn with equal probability (the paper's sampler)."""
    space = load_space("digits")
    rng = random.Random(0)
    archs = [sample_architecture(space, rng) for _ in range(6000)]
    for counts in (
        Counter(a.depth for a in archs),
        Counter(a.embed_dim for a in archs),
        Counter(a.num_heads[0] for a in archs),
    ):
        assert len(counts) == 3 and all(abs(c / 6000 - 1 / 3) < 0.03 for c in counts.values())


def test_extremes() -> None:
    tiny = load_space("autoformer-tiny")
    assert smallest_architecture(tiny) == Architecture(192, 12, [3] * 12, [3.5] * 12)
    assert largest_architecture(tiny) == Architecture(240, 14, [4] * 14, [4.0] * 14)


def test_space_and_arch_code_import_no_torch() -> None:
    """The arithmetic layer must run without torch or Ray (layering rule)."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['ray'] = None\n"
        "import pipeline.core.space, pipeline.core.arch, pipeline.core.sampling, pipeline.core.complexity, pipeline.cli.space_commands\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
