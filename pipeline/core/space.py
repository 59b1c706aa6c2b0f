"""Search spaces: loading, validating and describing the YAML files in ``search_spaces/``.

A space has *choices* (lists the search picks from) and *fixed parts* (the same for every architecture).
Image size, input channels and classes are defaults that a task may override (``SearchSpace.with_overrides``),
so one space file serves ImageNet, CIFAR or a user's own ImageFolder.

Pure Python: no torch here, so counting and validating run anywhere.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from pipeline.shared.builtin_yaml import builtin_names, read_yaml_mapping
from pipeline.shared.errors import UserError

CHOICE_KEYS = ("embed_dim", "depth", "num_heads", "qkv_dim", "mlp_ratio")
FIXED_KEYS = (
    "head_dim",
    "patch_size",
    "image_size",
    "in_chans",
    "num_classes",
    "relative_position",
    "max_relative_position",
    "qkv_bias",
    "pooling",
    "layer_norm_eps",
    "qkv_bias_layout",
)
# How the model computes rather than what the search chooses: the AutoFormer reference code differs from this
# package's defaults in these three (mean pooling, eps 1e-5, its Q-K-V bias slicing); imported supernets set them.
MODEL_OPTION_KEYS = ("pooling", "layer_norm_eps", "qkv_bias_layout")
POOLINGS = ("cls", "mean")  # the class token, or the mean of the patch tokens after the final norm
QKV_BIAS_LAYOUTS = ("blocks", "prefix")  # first q of each of Q, K, V; or the first 3q entries (the reference's)
SCALAR_KEYS = ("description", *FIXED_KEYS)
ALLOWED_KEYS = CHOICE_KEYS + SCALAR_KEYS
REQUIRED_KEYS = ("embed_dim", "depth", "mlp_ratio", "head_dim", "patch_size", "image_size", "num_classes")
DEFAULTS: dict[str, Any] = {
    "description": "",
    "in_chans": 3,
    "relative_position": False,
    "max_relative_position": 14,
    "qkv_bias": True,
    "pooling": "cls",
    "layer_norm_eps": 1e-6,  # timm's ViT value, so homogeneous subnets convert to timm with identical logits
    "qkv_bias_layout": "blocks",
}


def mlp_hidden_dim(embed_dim: int, mlp_ratio: float) -> int:
    """Hidden width of an MLP; the one rounding rule used by counting, the supernet and export (as timm/AutoFormer)."""
    return int(embed_dim * mlp_ratio)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A validated search space. Choice tuples are sorted ascending and non-empty."""

    name: str
    embed_dim: tuple[int, ...]
    depth: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratio: tuple[float, ...]
    head_dim: int
    patch_size: int
    image_size: int
    num_classes: int
    in_chans: int = 3
    relative_position: bool = False
    max_relative_position: int = 14
    qkv_bias: bool = True
    pooling: str = "cls"
    layer_norm_eps: float = 1e-6
    qkv_bias_layout: str = "blocks"
    description: str = ""

    def __post_init__(self) -> None:
        _check_consistency(self, f"search space {self.name!r}")

    # ---- derived sizes -------------------------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_tokens(self) -> int:
        """Sequence length: patches plus the class token."""
        return self.num_patches + 1

    @property
    def max_embed_dim(self) -> int:
        return self.embed_dim[-1]

    @property
    def max_depth(self) -> int:
        return self.depth[-1]

    @property
    def max_num_heads(self) -> int:
        return self.num_heads[-1]

    @property
    def max_mlp_hidden_dim(self) -> int:
        return max(mlp_hidden_dim(self.max_embed_dim, r) for r in self.mlp_ratio)

    def num_architectures(self) -> int:
        """How many distinct architectures the space holds (exact, arbitrary precision)."""
        per_layer = len(self.num_heads) * len(self.mlp_ratio)
        return len(self.embed_dim) * sum(per_layer**d for d in self.depth)

    def with_overrides(
        self,
        image_size: int | None = None,
        num_classes: int | None = None,
        in_chans: int | None = None,
    ) -> SearchSpace:
        """The same space for another dataset shape (validated again: the patch must still divide the image)."""
        changes: dict[str, Any] = {}
        for key, value in (("image_size", image_size), ("num_classes", num_classes), ("in_chans", in_chans)):
            if value is not None:
                _require_positive_int(value, f"search space {self.name!r}", key)
                changes[key] = value
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form that ``SearchSpace.from_dict`` reads back (stored in checkpoints and model configs)."""
        out = dataclasses.asdict(self)
        for key in ("embed_dim", "depth", "num_heads", "mlp_ratio"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> SearchSpace:
        data = dict(data)
        name = str(data.pop("name", Path(source).stem))
        return _build(data, name=name, ctx=f"search space from {source}")

    def fixed_parts(self) -> dict[str, Any]:
        """What every architecture of the space shares: what a standalone model needs besides its architecture."""
        return {key: getattr(self, key) for key in FIXED_KEYS}


def complete_fixed_parts(fixed: dict[str, Any]) -> dict[str, Any]:
    """Fixed parts recorded before the model options existed get their defaults (today's behaviour)."""
    return {**{k: DEFAULTS[k] for k in MODEL_OPTION_KEYS}, **fixed}


# ---- loading ---------------------------------------------------------------------------------------------------


def builtin_space_names() -> list[str]:
    """Names of the spaces shipped with the package (the files in ``search_spaces/``)."""
    return builtin_names("search_spaces")


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a space by built-in name (``autoformer-tiny``) or by path to a YAML file.

    Raises ``UserError`` naming the file, key and value for anything malformed.
    """
    data, name, label = read_yaml_mapping(
        name_or_path, "search_spaces", "search space", "of keys (embed_dim, depth, ...)"
    )
    return _build(data, name=name, ctx=label)


def _build(data: dict[str, Any], name: str, ctx: str) -> SearchSpace:
    unknown = sorted(str(k) for k in data if k not in ALLOWED_KEYS)
    if unknown:
        raise UserError(f"{ctx}: unknown key {unknown[0]!r}; allowed keys are {', '.join(ALLOWED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise UserError(f"{ctx}: missing required key {missing[0]!r}")
    if ("num_heads" in data) == ("qkv_dim" in data):
        raise UserError(f"{ctx}: give exactly one of 'num_heads' or 'qkv_dim' (Q-K-V dim = num_heads x head_dim)")

    values = {**DEFAULTS, **data}
    head_dim = _require_positive_int(values["head_dim"], ctx, "head_dim")
    embed = _int_choices(values["embed_dim"], ctx, "embed_dim")
    depth = _int_choices(values["depth"], ctx, "depth")
    if "num_heads" in data:
        heads = _int_choices(values["num_heads"], ctx, "num_heads")
    else:
        qkv = _int_choices(values["qkv_dim"], ctx, "qkv_dim")
        for q in qkv:
            if q % head_dim:
                raise UserError(f"{ctx}: key 'qkv_dim': value {q} is not a multiple of head_dim {head_dim}")
        heads = tuple(q // head_dim for q in qkv)
    ratios = _float_choices(values["mlp_ratio"], ctx, "mlp_ratio")

    description = values["description"]
    if not isinstance(description, str):
        raise UserError(f"{ctx}: key 'description': value {description!r} must be a string")
    for key in ("relative_position", "qkv_bias"):
        if not isinstance(values[key], bool):
            raise UserError(f"{ctx}: key {key!r}: value {values[key]!r} must be true or false")
    _check_file_consistency(values, embed, ratios, ctx)
    return SearchSpace(
        name=name,
        embed_dim=embed,
        depth=depth,
        num_heads=heads,
        mlp_ratio=ratios,
        head_dim=head_dim,
        patch_size=_require_positive_int(values["patch_size"], ctx, "patch_size"),
        image_size=_require_positive_int(values["image_size"], ctx, "image_size"),
        num_classes=_require_positive_int(values["num_classes"], ctx, "num_classes"),
        in_chans=_require_positive_int(values["in_chans"], ctx, "in_chans"),
        relative_position=values["relative_position"],
        max_relative_position=_require_positive_int(values["max_relative_position"], ctx, "max_relative_position"),
        qkv_bias=values["qkv_bias"],
        pooling=_require_choice(values["pooling"], POOLINGS, ctx, "pooling"),
        layer_norm_eps=_require_positive_number(values["layer_norm_eps"], ctx, "layer_norm_eps"),
        qkv_bias_layout=_require_choice(values["qkv_bias_layout"], QKV_BIAS_LAYOUTS, ctx, "qkv_bias_layout"),
        description=description,
    )


def _check_file_consistency(
    values: dict[str, Any], embed: tuple[int, ...], ratios: tuple[float, ...], ctx: str
) -> None:
    """Checks that need several keys, reported with the file name (the dataclass re-checks the patch on overrides)."""
    patch, image = values["patch_size"], values["image_size"]
    if isinstance(patch, int) and isinstance(image, int) and patch > 0 and image > 0 and image % patch:
        raise UserError(f"{ctx}: key 'patch_size': value {patch} does not divide image_size {image}")
    for e in embed:
        for r in ratios:
            if not math.isclose(e * r, round(e * r), abs_tol=1e-9):
                raise UserError(
                    f"{ctx}: key 'mlp_ratio': value {r} times embed_dim {e} = {e * r} is not a whole MLP width"
                )


def _check_consistency(space: SearchSpace, ctx: str) -> None:
    if space.image_size % space.patch_size:
        raise UserError(f"{ctx}: patch_size {space.patch_size} does not divide image_size {space.image_size}")


def _require_positive_int(value: Any, ctx: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{ctx}: key {key!r}: value {value!r} must be a positive integer")
    return value


def _require_choice(value: Any, allowed: tuple[str, ...], ctx: str, key: str) -> str:
    if value not in allowed:
        raise UserError(f"{ctx}: key {key!r}: value {value!r} must be one of {', '.join(allowed)}")
    return value


def _require_positive_number(value: Any, ctx: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{ctx}: key {key!r}: value {value!r} must be a positive number")
    return float(value)


def _choice_list(value: Any, ctx: str, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise UserError(f"{ctx}: key {key!r}: value {value!r} must be a list of choices, e.g. [1, 2, 3]")
    if not value:
        raise UserError(f"{ctx}: key {key!r}: the list of choices is empty; give at least one value")
    return value


def _sorted_unique(values: tuple[Any, ...], ctx: str, key: str) -> tuple[Any, ...]:
    for a, b in zip(values, values[1:]):
        if not a < b:
            problem = "repeats" if a == b else "is not sorted ascending"
            raise UserError(
                f"{ctx}: key {key!r}: value {list(values)!r} {problem}; list each choice once, smallest first"
            )
    return values


def _int_choices(value: Any, ctx: str, key: str) -> tuple[int, ...]:
    items = _choice_list(value, ctx, key)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise UserError(f"{ctx}: key {key!r}: value {v!r} must be a positive integer")
    return _sorted_unique(tuple(items), ctx, key)


def _float_choices(value: Any, ctx: str, key: str) -> tuple[float, ...]:
    items = _choice_list(value, ctx, key)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise UserError(f"{ctx}: key {key!r}: value {v!r} must be a positive number")
    return _sorted_unique(tuple(float(v) for v in items), ctx, key)
