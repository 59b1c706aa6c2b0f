"""The shape the code keeps (read from the source, like test_layers.py): short functions, and the training sections'
keys read in one module only, so a new training setting touches its section, its user and its test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
SOURCES = sorted(PACKAGE.rglob("*.py"))
SETTINGS_MODULE = PACKAGE / "core" / "training_settings.py"
# A key read of the train/retrain/finetune sections or of a recipe: task.train["lr"], train.get("lr"),
# tr["seed"], recipe["epochs"], task.finetune["lr"], state["task"]["train"]["lr"], task.recipe(p)["x"].
KEY_READ = re.compile(
    r"""(\b(train|tr|recipe|retrain|finetune)\s*(\[\s*["']|\.get\(\s*["']))"""
    r"""|((\btask|\[\s*["']task["']\s*\])\s*\[\s*["'](train|retrain|finetune)["']\s*\]\s*(\[\s*["']|\.get\())"""
    r"""|(\.recipe\([^)]*\)\s*\[)"""
)


def test_no_function_in_the_package_is_longer_than_60_lines() -> None:
    long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_the_training_sections_keys_are_read_only_where_their_types_are_defined() -> None:
    found = []
    for path in SOURCES:
        if path == SETTINGS_MODULE:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if KEY_READ.search(line.split("#")[0]):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, found


@pytest.mark.parametrize(
    "line",
    [
        'lr = task.train["lr"]',
        'seed = tr["seed"]',
        'x = train.get("sampling", "uniform")',
        'epochs = recipe["epochs"]',
        'lr = task.finetune["lr"]',
        'lr = state["task"]["train"]["lr"]',
        'lr = task["train"].get("lr")',
        'e = task.recipe("retrain")["epochs"]',
    ],
)
def test_the_key_read_pattern_catches_what_it_should(line: str) -> None:
    assert KEY_READ.search(line)


@pytest.mark.parametrize(
    "line", ["mode = training_mode(task['train'], history)", "x = plan.train[0]", "n = splits['train']['size']"]
)
def test_the_key_read_pattern_lets_whole_sections_pass(line: str) -> None:
    assert not KEY_READ.search(line)
