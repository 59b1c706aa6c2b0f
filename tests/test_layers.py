"""The package's layering, read from the imports with ``ast`` (every import, also those inside functions).

shared -> core -> model | data -> training | search | latency -> results -> run | api -> cli: a module imports only
from its own layer or the layers below; siblings (model/data, training/search) never import each other; core
imports no torch; core, model and data import no Ray, not even through the modules they import; and there are
no import cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
RANK = {
    "shared": 0,
    "core": 1,
    "model": 2,
    "data": 2,
    "training": 3,
    "search": 3,
    "latency": 3,
    "fidelity": 3.5,  # a phase built on training (it trains stand-alone models in its trials)
    "rerank": 3.5,  # a phase built on training (its trials fine-tune a search's shortlist)
    "results": 4,
    "run": 5,
    "api": 5,
    "cli": 6,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package face (pipeline/__init__.py)


def _imports() -> dict[str, set[str]]:
    """Every module of the package -> the modules it imports (``pipeline.x.y`` or a third-party top name)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                if node.module.startswith("pipeline"):  # `from pipeline.model import subnet_dir` imports a module
                    found.update(
                        f"{node.module}.{a.name}"
                        for a in node.names
                        if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                    )
        graph[_module_name(path)] = found
    return graph


GRAPH = _imports()


def _internal(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith("pipeline.") and n in GRAPH}


def _closure(module: str) -> set[str]:
    """Everything ``module`` imports, directly or through the package's own modules."""
    seen, todo = set(), [module]
    while todo:
        for name in GRAPH[todo.pop()]:
            if name not in seen:
                seen.add(name)
                if name in GRAPH:
                    todo.append(name)
    return seen


def test_every_module_belongs_to_a_known_layer() -> None:
    layers = {_layer(m) for m in GRAPH} - {None}
    assert layers <= set(RANK), layers - set(RANK)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _layer(m)))
def test_imports_point_down_and_never_sideways(module: str) -> None:
    layer = _layer(module)
    for target in _internal(GRAPH[module]):
        other = _layer(target)
        assert other is not None, f"{module} imports the package face {target}"
        assert other == layer or RANK[other] < RANK[layer], (
            f"{module} ({layer}) imports {target} ({other}): not below it"
        )


# The data layer's Ray Data jobs: decoding for training and evaluation, and packing trees into shards.
RAY_DATA_MODULES = {"pipeline.data.ray_ingest", "pipeline.data.pack_job"}


@pytest.mark.parametrize("layer", ["core", "model", "data"])
def test_core_model_and_data_import_no_ray(layer: str) -> None:
    """Only the data layer's Ray Data jobs import Ray; nothing else in these layers imports them."""
    for module in (m for m in GRAPH if _layer(m) == layer and m not in RAY_DATA_MODULES):
        ray = sorted(n for n in _closure(module) if n == "ray" or n.startswith("ray.") or n in RAY_DATA_MODULES)
        assert not ray, f"{module} imports {ray}"


def test_core_imports_no_torch() -> None:
    for module in (m for m in GRAPH if _layer(m) == "core"):
        heavy = sorted(n for n in _closure(module) if n.split(".")[0] in ("torch", "timm", "torchvision", "ray"))
        assert not heavy, f"{module} imports {heavy}"


def test_core_is_pure_python_but_for_scipys_statistics() -> None:
    """numpy and scipy reach the core only through agreement.py, whose statistics are scipy.stats' (imported
    when first computed, so that loading a task or a space stays light)."""
    for module in (m for m in GRAPH if _layer(m) == "core" and m != "pipeline.core.agreement"):
        numeric = sorted(n for n in GRAPH[module] if n.split(".")[0] in ("numpy", "scipy"))
        assert not numeric, f"{module} imports {numeric}"


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(_internal(GRAPH[module])):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(target) :], target]))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
