"""Search-space files: the paper's Table 1, and one clear error per malformed file."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pipeline.core.space import builtin_space_names, load_space
from pipeline.shared.errors import UserError

TABLE_1 = {
    "autoformer-tiny": ([192, 216, 240], [12, 13, 14], [3, 4], [3.5, 4.0]),
    "autoformer-small": ([320, 384, 448], [12, 13, 14], [5, 6, 7], [3.0, 3.5, 4.0]),
    "autoformer-base": ([528, 576, 624], [14, 15, 16], [8, 9, 10], [3.0, 3.5, 4.0]),
}

GOOD = """\
embed_dim: [32, 48]
depth: [2, 3]
num_heads: [2, 3]
mlp_ratio: [2.0, 4.0]
head_dim: 16
patch_size: 2
image_size: 8
in_chans: 1
num_classes: 10
relative_position: true
max_relative_position: 3
"""


@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_paper_spaces_match_table_1(name: str) -> None:
    space = load_space(name)
    embed, depth, heads, ratios = TABLE_1[name]
    assert list(space.embed_dim) == embed
    assert list(space.depth) == depth
    assert list(space.num_heads) == heads
    assert list(space.mlp_ratio) == ratios
    assert (space.head_dim, space.patch_size, space.image_size, space.in_chans, space.num_classes) == (
        64,
        16,
        224,
        3,
        1000,
    )
    assert space.relative_position and space.max_relative_position == 14


def test_builtin_spaces_include_a_cpu_space() -> None:
    assert {"autoformer-tiny", "autoformer-small", "autoformer-base", "digits"} <= set(builtin_space_names())
    digits = load_space("digits")
    assert (digits.image_size, digits.in_chans, digits.num_classes) == (8, 1, 10)


def test_space_loads_from_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    space = load_space(path)
    assert space.name == "mine" and space.num_heads == (2, 3) and space.mlp_ratio == (2.0, 4.0)


def test_qkv_dim_spelling_equals_num_heads(tmp_path: Path) -> None:
    path = tmp_path / "qkv.yaml"
    path.write_text(GOOD.replace("num_heads: [2, 3]", "qkv_dim: [32, 48]"))
    assert load_space(path).num_heads == (2, 3)


def test_num_architectures_matches_enumeration(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    space = load_space(path)
    count = sum(
        1
        for e in space.embed_dim
        for d in space.depth
        for _ in itertools.product(itertools.product(space.num_heads, space.mlp_ratio), repeat=d)
    )
    assert space.num_architectures() == count == 2 * (4**2 + 4**3)


def test_overrides_revalidate_patch() -> None:
    space = load_space("autoformer-tiny")
    assert space.with_overrides(image_size=32, num_classes=10).grid_size == 2
    with pytest.raises(UserError, match="patch_size 16 does not divide image_size 40"):
        space.with_overrides(image_size=40)
    with pytest.raises(UserError, match="'num_classes'.*0"):
        space.with_overrides(num_classes=0)


def test_to_dict_round_trip() -> None:
    space = load_space("autoformer-small")
    from pipeline.core.space import SearchSpace

    assert SearchSpace.from_dict(space.to_dict()) == space


# (description, edit to GOOD, substrings the one error message must contain)
BAD_CASES = [
    ("unknown key", GOOD + "dropout: 0.1\n", ["'dropout'", "allowed keys"]),
    ("missing key", GOOD.replace("depth: [2, 3]\n", ""), ["missing required key 'depth'"]),
    ("empty list", GOOD.replace("depth: [2, 3]", "depth: []"), ["'depth'", "empty"]),
    (
        "unsorted list",
        GOOD.replace("embed_dim: [32, 48]", "embed_dim: [48, 32]"),
        ["'embed_dim'", "[48, 32]", "not sorted"],
    ),
    ("repeated choice", GOOD.replace("num_heads: [2, 3]", "num_heads: [2, 2]"), ["'num_heads'", "[2, 2]", "repeats"]),
    ("not a list", GOOD.replace("depth: [2, 3]", "depth: 3"), ["'depth'", "3", "list of choices"]),
    (
        "zero dim",
        GOOD.replace("embed_dim: [32, 48]", "embed_dim: [0, 48]"),
        ["'embed_dim'", "value 0", "positive integer"],
    ),
    ("negative dim", GOOD.replace("depth: [2, 3]", "depth: [-1, 3]"), ["'depth'", "value -1", "positive integer"]),
    (
        "float dim",
        GOOD.replace("embed_dim: [32, 48]", "embed_dim: [32.5, 48]"),
        ["'embed_dim'", "32.5", "positive integer"],
    ),
    ("bool dim", GOOD.replace("depth: [2, 3]", "depth: [true, 3]"), ["'depth'", "True", "positive integer"]),
    (
        "bad ratio",
        GOOD.replace("mlp_ratio: [2.0, 4.0]", "mlp_ratio: [-2.0, 4.0]"),
        ["'mlp_ratio'", "-2.0", "positive number"],
    ),
    ("text ratio", GOOD.replace("mlp_ratio: [2.0, 4.0]", "mlp_ratio: [two, 4.0]"), ["'mlp_ratio'", "'two'"]),
    ("zero head dim", GOOD.replace("head_dim: 16", "head_dim: 0"), ["'head_dim'", "value 0"]),
    (
        "head dim does not divide qkv",
        GOOD.replace("num_heads: [2, 3]", "qkv_dim: [32, 40]"),
        ["'qkv_dim'", "40", "not a multiple of head_dim 16"],
    ),
    ("both heads and qkv", GOOD + "qkv_dim: [32, 48]\n", ["exactly one of 'num_heads' or 'qkv_dim'"]),
    ("neither heads nor qkv", GOOD.replace("num_heads: [2, 3]\n", ""), ["exactly one of 'num_heads' or 'qkv_dim'"]),
    (
        "patch does not divide",
        GOOD.replace("patch_size: 2", "patch_size: 3"),
        ["'patch_size'", "3", "does not divide image_size 8"],
    ),
    (
        "fractional MLP width",
        GOOD.replace("mlp_ratio: [2.0, 4.0]", "mlp_ratio: [2.0, 3.3]"),
        ["'mlp_ratio'", "3.3", "not a whole MLP width"],
    ),
    (
        "non-bool flag",
        GOOD.replace("relative_position: true", "relative_position: 1"),
        ["'relative_position'", "1", "true or false"],
    ),
    (
        "zero max distance",
        GOOD.replace("max_relative_position: 3", "max_relative_position: 0"),
        ["'max_relative_position'", "value 0"],
    ),
    ("non-string description", GOOD + "description: [1]\n", ["'description'", "[1]", "string"]),
    ("not a mapping", "- 1\n- 2\n", ["expected a mapping"]),
    ("invalid yaml", "embed_dim: [32, 48\n", ["not valid YAML"]),
]


@pytest.mark.parametrize("desc,text,expected", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_space_file_gives_one_clear_error(tmp_path: Path, desc: str, text: str, expected: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_space(path)
    message = str(info.value)
    assert str(path) in message, message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "\n" not in message


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_space("/nonexistent/space.yaml")
    with pytest.raises(UserError, match="unknown search space 'autoformer-huge'.*autoformer-tiny"):
        load_space("autoformer-huge")
