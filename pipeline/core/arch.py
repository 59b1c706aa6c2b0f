"""Architectures as values: the thing the search proposes, the supernet runs and result files hold.

An architecture is an embedding dim shared by all layers, a depth, and per layer a number of heads and an
MLP ratio. Its interchange format is JSON::

    {"embed_dim": 192, "depth": 13, "num_heads": [3, ...], "mlp_ratio": [3.5, ...]}

``Architecture`` accepts any positive sizes (so the paper's published models, some of which step outside
their own space, can be counted); ``validate_in_space`` is the separate check that it belongs to a space.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from pipeline.core.space import SearchSpace, mlp_hidden_dim
from pipeline.shared.errors import UserError

ARCH_KEYS = ("embed_dim", "depth", "num_heads", "mlp_ratio")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One subnet. Immutable and hashable, so it can be a dict key or a set member."""

    embed_dim: int
    depth: int
    num_heads: tuple[int, ...]
    mlp_ratio: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_heads", tuple(self.num_heads))
        object.__setattr__(self, "mlp_ratio", tuple(float(r) for r in self.mlp_ratio))
        if isinstance(self.embed_dim, bool) or not isinstance(self.embed_dim, int) or self.embed_dim <= 0:
            raise UserError(f"architecture: key 'embed_dim': value {self.embed_dim!r} must be a positive integer")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth <= 0:
            raise UserError(f"architecture: key 'depth': value {self.depth!r} must be a positive integer")
        for key in ("num_heads", "mlp_ratio"):
            values = getattr(self, key)
            if len(values) != self.depth:
                raise UserError(
                    f"architecture: key {key!r}: has {len(values)} entries but depth is {self.depth}; give one per layer"
                )
        for h in self.num_heads:
            if isinstance(h, bool) or not isinstance(h, int) or h <= 0:
                raise UserError(f"architecture: key 'num_heads': value {h!r} must be a positive integer")
        for r in self.mlp_ratio:
            if not math.isfinite(r) or r <= 0:
                raise UserError(f"architecture: key 'mlp_ratio': value {r!r} must be a positive number")

    # ---- derived -----------------------------------------------------------------------------------------------
    def mlp_hidden_dims(self) -> tuple[int, ...]:
        return tuple(mlp_hidden_dim(self.embed_dim, r) for r in self.mlp_ratio)

    def is_homogeneous(self) -> bool:
        """Same heads and MLP ratio in every layer (the shape a plain ViT has)."""
        return len(set(self.num_heads)) == 1 and len(set(self.mlp_ratio)) == 1

    @property
    def key(self) -> str:
        """Stable, human-readable identity used for de-duplication and memoisation."""
        heads = ",".join(str(h) for h in self.num_heads)
        ratios = ",".join(f"{r:g}" for r in self.mlp_ratio)
        return f"e{self.embed_dim}-d{self.depth}-h{heads}-r{ratios}"

    # ---- interchange -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": list(self.num_heads),
            "mlp_ratio": list(self.mlp_ratio),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "architecture") -> Architecture:
        if not isinstance(data, dict):
            raise UserError(
                f"{source}: expected a JSON object with keys {', '.join(ARCH_KEYS)}, got {type(data).__name__}"
            )
        unknown = sorted(str(k) for k in data if k not in ARCH_KEYS)
        if unknown:
            raise UserError(f"{source}: unknown key {unknown[0]!r}; allowed keys are {', '.join(ARCH_KEYS)}")
        missing = [k for k in ARCH_KEYS if k not in data]
        if missing:
            raise UserError(f"{source}: missing key {missing[0]!r}")
        for key in ("num_heads", "mlp_ratio"):
            if not isinstance(data[key], list):
                raise UserError(f"{source}: key {key!r}: value {data[key]!r} must be a list with one entry per layer")
            for v in data[key]:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise UserError(f"{source}: key {key!r}: value {v!r} must be a number")
        try:
            return cls(
                embed_dim=data["embed_dim"],
                depth=data["depth"],
                num_heads=tuple(data["num_heads"]),
                mlp_ratio=tuple(data["mlp_ratio"]),
            )
        except UserError as exc:
            raise UserError(str(exc).replace("architecture:", f"{source}:", 1)) from None

    @classmethod
    def from_json(cls, text: str, source: str = "architecture") -> Architecture:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: not valid JSON: {exc}") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> Architecture:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"architecture file {str(path)!r} does not exist (or is not a file)")
        return cls.from_json(path.read_text(encoding="utf-8"), source=f"architecture file {str(path)!r}")


def validate_in_space(arch: Architecture, space: SearchSpace) -> None:
    """Raise ``UserError`` naming the first gene of ``arch`` that ``space`` does not offer."""
    ctx = f"architecture {arch.key} in search space {space.name!r}"
    if arch.embed_dim not in space.embed_dim:
        raise UserError(f"{ctx}: embed_dim {arch.embed_dim} is not one of {list(space.embed_dim)}")
    if arch.depth not in space.depth:
        raise UserError(f"{ctx}: depth {arch.depth} is not one of {list(space.depth)}")
    for i, (h, r) in enumerate(zip(arch.num_heads, arch.mlp_ratio)):
        if h not in space.num_heads:
            raise UserError(f"{ctx}: layer {i} num_heads {h} is not one of {list(space.num_heads)}")
        if r not in space.mlp_ratio:
            raise UserError(f"{ctx}: layer {i} mlp_ratio {r:g} is not one of {list(space.mlp_ratio)}")


def validate_fits(arch: Architecture, space: SearchSpace) -> None:
    """Raise ``UserError`` unless ``arch`` fits inside the space's largest block (every gene at most the space's
    maximum): what a weight-entangled supernet of ``space`` holds weights for, choices it never trained included."""
    s, ctx = space, f"architecture {arch.key} does not fit supernet of space {space.name!r}"
    if arch.embed_dim > s.max_embed_dim:
        raise UserError(f"{ctx}: embed_dim {arch.embed_dim} > {s.max_embed_dim}")
    if arch.depth > s.max_depth:
        raise UserError(f"{ctx}: depth {arch.depth} > {s.max_depth}")
    for i, (h, hidden) in enumerate(zip(arch.num_heads, arch.mlp_hidden_dims())):
        if h > s.max_num_heads:
            raise UserError(f"{ctx}: layer {i} num_heads {h} > {s.max_num_heads}")
        if hidden > s.max_mlp_hidden_dim:
            raise UserError(f"{ctx}: layer {i} MLP width {hidden} > {s.max_mlp_hidden_dim}")


def in_space(arch: Architecture, space: SearchSpace) -> bool:
    try:
        validate_in_space(arch, space)
    except UserError:
        return False
    return True
