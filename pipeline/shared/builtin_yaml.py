"""YAML files shipped with the package (search spaces, tasks), addressed by built-in name or by path.

The folders live at the top of the repository and are installed as ``pipeline.<folder>`` packages; from a
source checkout that is not installed, they are found beside the package.
"""

from __future__ import annotations

import importlib.resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from pipeline.shared.errors import UserError


def builtin_dir(folder: str) -> Traversable:
    try:
        return importlib.resources.files(f"pipeline.{folder}")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / folder


def builtin_names(folder: str) -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in builtin_dir(folder).iterdir() if p.name.endswith(".yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """A YAML error as one line with its position (PyYAML's own message spans several)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_yaml_mapping(spec: str | Path, folder: str, what: str, expected: str) -> tuple[dict[str, Any], str, str]:
    """Read a ``what`` (e.g. "task") by built-in name or path: returns (mapping, name, label for messages).

    ``expected`` describes the mapping for the error raised when the file holds something else.
    """
    spec = str(spec)
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in spec:
        if not path.is_file():
            raise UserError(f"{what} file {spec!r} does not exist (or is not a file)")
        text, name, label = path.read_text(encoding="utf-8"), path.stem, f"{what} file {str(path)!r}"
    else:
        names = builtin_names(folder)
        if spec not in names:
            raise UserError(
                f"unknown {what} {spec!r}: use a built-in {what} ({', '.join(names)}) or a path to a .yaml file"
            )
        text, name, label = (builtin_dir(folder) / f"{spec}.yaml").read_text(encoding="utf-8"), spec, f"{what} {spec!r}"
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise UserError(f"{label}: not valid YAML: {yaml_error_line(exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a mapping {expected}, got {type(data).__name__}")
    return data, name, label
