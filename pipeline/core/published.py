"""The paper's published architectures (AutoFormer-T/S/B), shipped as files in ``architectures/``.

Each file names its search space, the architecture, and the parameter count and ImageNet top-1 the paper
reports, so ``autoformer arch show autoformer-t`` can print our exact count beside the published one and the
file can be handed to ``autoformer export``/``evaluate`` as an architecture.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.core.arch import Architecture
from pipeline.core.space import SearchSpace, load_space
from pipeline.shared.builtin_yaml import builtin_names, read_yaml_mapping
from pipeline.shared.errors import UserError

KEYS = ("description", "space", "params", "top1", "architecture")


@dataclasses.dataclass(frozen=True)
class Published:
    name: str
    description: str
    space: SearchSpace
    architecture: Architecture
    params: int  # as the paper reports it
    top1: float  # ImageNet top-1 (%), as the paper reports it


def published_names() -> list[str]:
    return builtin_names("architectures")


def load_published(name_or_path: str | Path) -> Published:
    data, name, label = read_yaml_mapping(
        name_or_path, "architectures", "published architecture", f"with keys {', '.join(KEYS)}"
    )
    unknown = sorted(str(k) for k in data if k not in KEYS)
    if unknown:
        raise UserError(f"{label}: unknown key {unknown[0]!r}; allowed keys are {', '.join(KEYS)}")
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise UserError(f"{label}: missing key {missing[0]!r}")
    arch = Architecture.from_dict(data["architecture"], source=f"{label}: architecture")
    return Published(
        name, str(data["description"]), load_space(data["space"]), arch, int(data["params"]), float(data["top1"])
    )
