"""A config.json that disagrees with its weights, or carries keys where the format does not read them, is refused
in one line naming the key or tensor (issue 29, item 7): never torch's 30-line size-mismatch list, never ignored."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.core.arch import Architecture
from pipeline.core.space import load_space
from pipeline.model.directory import file_checksum
from pipeline.model.state_check import state_difference
from pipeline.model.subnet_dir import load_model, save_model
from pipeline.model.supernet import Supernet
from pipeline.model.supernet_dir import load_supernet, read_supernet_config, save_supernet
from pipeline.shared.errors import UserError

ARCH = Architecture(64, 3, (4, 4, 2), (2.0, 2.0, 2.0))


def _edit(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


def _one_line_error(load: Callable[[Path], Any], path: Path) -> str:
    with pytest.raises(UserError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def supernet_dir(tmp_path: Path) -> Path:
    return save_supernet(Supernet(load_space("digits")), tmp_path / "supernet", epochs=0)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return save_model(Supernet(load_space("digits")).extract(ARCH), tmp_path / "model")


# ---- weights against config ----------------------------------------------------------------------------------


def test_an_edited_supernet_embed_dim_names_the_first_tensor_and_both_shapes(supernet_dir: Path) -> None:
    _edit(supernet_dir, lambda c: c["space"].update(embed_dim=[32, 48]))
    message = _one_line_error(lambda p: load_supernet(p), supernet_dir)
    assert message.startswith(
        f"supernet directory {str(supernet_dir)!r}: supernet.safetensors does not match config.json: "
        "cls_token has shape (1, 1, 64) in the weights, the config makes (1, 1, 48) (and "
    ), message
    assert message.endswith(" more)")


def test_a_smaller_supernet_depth_names_a_tensor_the_config_does_not_make(supernet_dir: Path) -> None:
    _edit(supernet_dir, lambda c: c["space"].update(depth=[2, 3]))
    message = _one_line_error(lambda p: load_supernet(p), supernet_dir)
    assert "the weights hold blocks.3." in message and "which the config does not make (and " in message


def test_supernet_weights_of_another_sharing_mode_are_one_line(supernet_dir: Path) -> None:
    _edit(supernet_dir, lambda c: c.update(sharing="classical"))  # the entangled supernet's weights stay
    message = _one_line_error(lambda p: load_supernet(p), supernet_dir)
    assert "does not match config.json: the weights lack blocks.0.attention." in message, message


def test_an_edited_model_embed_dim_names_the_first_tensor_and_both_shapes(model_dir: Path) -> None:
    _edit(model_dir, lambda c: c["architecture"].update(embed_dim=48))
    message = _one_line_error(lambda p: load_model(p), model_dir)
    assert message.startswith(
        f"model directory {str(model_dir)!r}: model.safetensors does not match config.json: "
        "cls_token has shape (1, 1, 64) in the weights, the config makes (1, 1, 48) (and "
    ), message


def test_model_weights_swapped_in_with_their_checksum_are_one_line(model_dir: Path, tmp_path: Path) -> None:
    other = save_model(Supernet(load_space("digits")).extract(Architecture(64, 2, (4, 4), (2.0, 2.0))), tmp_path / "o")
    (model_dir / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    _edit(model_dir, lambda c: c["checksums"].update({"model.safetensors": file_checksum(other / "model.safetensors")}))
    message = _one_line_error(lambda p: load_model(p), model_dir)
    assert "does not match config.json: the weights lack blocks.2.norm1.weight, which the config makes with " in (
        message
    )


def test_state_difference_counts_every_difference_after_the_first() -> None:
    expected = {"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1)}
    assert state_difference(expected, dict(expected)) is None
    found = {"a": torch.zeros(3, 3), "b": torch.zeros(5), "d": torch.zeros(1)}
    assert state_difference(expected, found) == (
        "a has shape (3, 3) in the weights, the config makes (2, 3) (and 3 more)"
    )


# ---- a model's top-level keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value,home",
    [("embed_dim", 48, "architecture"), ("head_dim", 8, "fixed"), ("notes", "mine", "metadata")],
)
def test_an_unknown_top_level_model_key_is_refused_naming_where_it_belongs(
    model_dir: Path, key: str, value: Any, home: str
) -> None:
    _edit(model_dir, lambda c: c.update({key: value}))
    message = _one_line_error(lambda p: load_model(p), model_dir)
    assert f"config.json has unknown top-level key {key!r}; it belongs under {home!r}" in message


@pytest.mark.parametrize("key,value", [("num_classes", 20), ("image_size", 16)])
def test_a_top_level_copy_that_contradicts_fixed_is_refused(model_dir: Path, key: str, value: int) -> None:
    _edit(model_dir, lambda c: c.update({key: value}))
    message = _one_line_error(lambda p: load_model(p), model_dir)
    assert f"top-level {key!r} is {value} but fixed.{key} is " in message


def test_a_model_config_without_the_top_level_copies_still_loads(model_dir: Path) -> None:
    _edit(model_dir, lambda c: [c.pop("image_size"), c.pop("num_classes")])
    model, config = load_model(model_dir)
    assert model.arch == ARCH and (config["image_size"], config["num_classes"]) == (8, 10)


# ---- a supernet's top-level keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value,home",
    [("embed_dim", [32, 48], "space"), ("image_size", 16, "space"), ("drop_path_rate", 0.1, "regularization")],
)
def test_a_section_key_at_the_supernet_top_level_is_refused(
    supernet_dir: Path, key: str, value: Any, home: str
) -> None:
    _edit(supernet_dir, lambda c: c.update({key: value}))
    message = _one_line_error(read_supernet_config, supernet_dir)
    assert message == (
        f"supernet directory {str(supernet_dir)!r}: config.json has {key!r} at the top level, where it is not read; "
        f"it belongs under {home!r}"
    )


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda c: c.pop("space"), "'space' must be an object, got NoneType"),
        (lambda c: c.update(sharing=["entangled"]), "'sharing' must be a string, got list"),
        (lambda c: c["regularization"].update(dropout=0.1), "'regularization' has unknown key 'dropout'"),
    ],
)
def test_bad_supernet_format_keys_are_one_line(supernet_dir: Path, change, message: str) -> None:
    _edit(supernet_dir, change)
    assert message in _one_line_error(read_supernet_config, supernet_dir)


def test_provenance_keys_stay_free_form_but_may_not_take_a_format_key(supernet_dir: Path, tmp_path: Path) -> None:
    _edit(supernet_dir, lambda c: c.update(notes="kept", source={"format": "elsewhere"}))
    model, config = load_supernet(supernet_dir)
    assert config["notes"] == "kept" and isinstance(model, Supernet)
    for key in ("format", "checksums", "num_classes", "drop_rate"):
        with pytest.raises(ValueError, match=f"provenance key {key!r} is a key of the format"):
            save_supernet(Supernet(load_space("digits")), tmp_path / key, **{key: 1})
        assert not (tmp_path / key).exists()
