"""Tasks: what to train on and how (``tasks/*.yaml``), with every value overridable from the command line.

A task names a dataset and its shape, the search space (and any fixed parts to change for this dataset), the
held-out search split, the model's regularisation and the training recipe. Loading fills defaults, applies
``section.key=value`` overrides, and validates every value against the schema below, so a typo is one clear
error before anything runs or is written.

Pure Python (YAML only): no torch, no Ray.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.space import SearchSpace, load_space
from pipeline.shared.builtin_yaml import builtin_names, read_yaml_mapping
from pipeline.shared.errors import UserError

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
# Choices that the task schema validates and the code that acts on them imports from here (one definition each).
SHARING_MODES = ("entangled", "classical", "classical_strict")
SEARCH_ALGORITHMS = ("evolution", "random")
SEARCH_OBJECTIVES = ("constrained", "pareto")
SEARCH_PARETO_COSTS = ("params", "macs", "latency_ms")
MUTATION_MODES = ("per_layer", "per_gene")
SAMPLING_MODES = ("uniform", "sandwich")
INPLACE_DISTILLATION = ("off", "kl", "alpha_divergence")
GRADIENT_PROJECTION = ("off", "largest", "others")
TEACHER_DISTILLATION = ("hard", "soft")
OPTIMIZERS = ("adamw", "adam", "sgd", "lamb", "lion")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
SPACE_OVERRIDE_KEYS = ("patch_size", "max_relative_position", "relative_position", "qkv_bias")

Check = Callable[[Any], bool]


def _int(lo: int = 0) -> tuple[str, Check]:
    return f"an integer >= {lo}", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _num(lo: float = 0.0, hi: float = math.inf) -> tuple[str, Check]:
    return (
        f"a number in [{lo:g}, {hi:g}]",
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi,
    )


def _opt(spec: tuple[str, Check]) -> tuple[str, Check]:
    return f"{spec[0]} or null", lambda v: v is None or spec[1](v)


def _choice(options: tuple[str, ...]) -> tuple[str, Check]:
    return f"one of {', '.join(options)}", lambda v: v in options


def _str() -> tuple[str, Check]:
    return "a string", lambda v: isinstance(v, str)


def _bool() -> tuple[str, Check]:
    return "true or false", lambda v: isinstance(v, bool)


def _floats() -> tuple[str, Check]:
    return (
        "a list of numbers",
        lambda v: (
            isinstance(v, list) and bool(v) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        ),
    )


def _names(options: tuple[str, ...]) -> tuple[str, Check]:
    return (
        f"a non-empty list of {', '.join(options)}",
        lambda v: isinstance(v, list) and bool(v) and all(x in options for x in v),
    )


def _pair(lo: float, hi: float) -> tuple[str, Check]:
    return (
        f"[low, high] with {lo:g} <= low <= high <= {hi:g}",
        lambda v: (
            isinstance(v, list)
            and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            and lo <= v[0] <= v[1] <= hi
        ),
    )


# section -> key -> (default, (description of what is allowed, check))
SCHEMA: dict[str, dict[str, tuple[Any, tuple[str, Check]]]] = {
    "data": {
        "dataset": (None, _choice(DATASETS)),
        "root": (None, _opt(_str())),
        "download": (False, _bool()),
        "image_size": (None, _int(1)),
        "in_chans": (3, _int(1)),
        "num_classes": (None, _opt(_int(2))),
        "mean": (None, _floats()),
        "std": (None, _floats()),
        "interpolation": ("bilinear", _choice(INTERPOLATIONS)),
        "eval_crop_pct": (0.875, _num(0.05, 1.0)),
        "loader_workers": (2, _int(0)),
    },
    "splits": {
        "search_per_class": (100, _int(1)),
        "test_per_class": (100, _int(1)),
        "seed": (0, _int(0)),
    },
    "model": {
        "sharing": ("entangled", _choice(SHARING_MODES)),
        "drop_rate": (0.0, _num(0.0, 0.99)),
        "attn_drop_rate": (0.0, _num(0.0, 0.99)),
        "drop_path_rate": (0.1, _num(0.0, 0.99)),
    },
    "train": {
        "epochs": (100, _int(1)),
        "batch_size": (256, _int(2)),
        "optimizer": ("adamw", _choice(OPTIMIZERS)),
        "lr": (1e-3, _num(0.0, 10.0)),
        "lr_base_batch": (1024, _int(1)),
        "min_lr": (1e-5, _num(0.0, 10.0)),
        "warmup_lr": (1e-6, _num(0.0, 10.0)),
        "warmup_epochs": (5, _int(0)),
        "weight_decay": (0.05, _num(0.0, 10.0)),
        "momentum": (0.9, _num(0.0, 1.0)),
        "clip_grad": (None, _opt(_num(0.0))),
        "label_smoothing": (0.1, _num(0.0, 0.99)),
        "mixup": (0.8, _num(0.0, 10.0)),
        "cutmix": (1.0, _num(0.0, 10.0)),
        "mixup_prob": (1.0, _num(0.0, 1.0)),
        "mixup_switch_prob": (0.5, _num(0.0, 1.0)),
        "randaugment": ("rand-m9-mstd0.5-inc1", _opt(_str())),
        "color_jitter": (0.4, _num(0.0, 1.0)),
        "random_erasing": (0.25, _num(0.0, 1.0)),
        "hflip": (0.5, _num(0.0, 1.0)),
        "scale": ([0.08, 1.0], _pair(0.0, 1.0)),
        "ratio": ([0.75, 1.3333333], _pair(0.01, 100.0)),
        "seed": (0, _int(0)),
        "checkpoint_every": (5, _int(1)),
        "keep_checkpoints": (2, _int(1)),
        "eval_subnets": (4, _int(0)),
        "eval_batch_size": (512, _int(1)),
        "log_every_steps": (0, _int(0)),
        "max_failures": (3, _int(0)),
        "precision": ("auto", _choice(("auto", "fp32", "bf16"))),
        "freeze_inactive": (True, _bool()),
        # Which subnets a supernet step trains: one uniform draw (the paper), or the sandwich rule (BigNAS: the
        # largest, the smallest and sandwich_random uniform draws, their gradients summed into one step).
        "sampling": ("uniform", _choice(SAMPLING_MODES)),
        "sandwich_random": (2, _int(0)),
        # In-place distillation (sandwich only): the largest subnet learns from the labels, the others from its
        # detached predictions, by KL or AlphaNet's adaptive alpha-divergence (alpha_min < 0 < alpha_max, the
        # importance ratio clipped at alpha_clip); inplace_weight scales their loss.
        "inplace_distillation": ("off", _choice(INPLACE_DISTILLATION)),
        "inplace_weight": (1.0, _num(0.0, 100.0)),
        "alpha_min": (-1.0, _num(-10.0, 0.0)),
        "alpha_max": (1.0, _num(0.0, 10.0)),
        "alpha_clip": (5.0, _num(1.0, 1e6)),
        # Gradient projection (sandwich only): where the largest subnet's gradient and the other subnets' summed
        # gradient conflict, the one without priority loses its component along the other before they are added.
        # largest: the largest subnet's step is kept whole; others: the smaller subnets' (NASViT's choice).
        "gradient_projection": ("off", _choice(GRADIENT_PROJECTION)),
        # An external teacher, in eval mode: none, a model directory of this tool, or timm:NAME@WEIGHTS_FILE (a
        # local file: nothing is downloaded). hard: DeiT's cross-entropy on its arg-max; soft: KL at distill_tau.
        # The loss is (1 - distill_alpha) x label loss + distill_alpha x teacher loss.
        "teacher": (None, _opt(_str())),
        "distill": ("hard", _choice(TEACHER_DISTILLATION)),
        "distill_alpha": (0.5, _num(0.0, 1.0)),
        "distill_tau": (1.0, _num(0.01, 100.0)),
    },
    # Phase 2 (evolutionary search). Defaults are the paper's protocol (§4.1); constraints are in parameters,
    # MACs per image, and milliseconds per batch of latency_batch images measured on the evaluators.
    "search": {
        "algorithm": ("evolution", _choice(SEARCH_ALGORITHMS)),
        "objective": ("constrained", _choice(SEARCH_OBJECTIVES)),
        "population": (50, _int(1)),
        "generations": (20, _int(1)),
        "parents": (10, _int(1)),
        "mutations": (25, _int(0)),
        "crossovers": (25, _int(0)),
        "depth_prob": (0.2, _num(0.0, 1.0)),
        "gene_prob": (0.4, _num(0.0, 1.0)),
        # per_layer: the paper's P_m per block (a layer's heads and MLP ratio re-drawn together); per_gene: the
        # reference code's loop (heads and ratio re-drawn separately; it sets depth_prob 0.4 and gene_prob 0.2)
        "mutation": ("per_layer", _choice(MUTATION_MODES)),
        "pareto_costs": (["params"], _names(SEARCH_PARETO_COSTS)),
        "min_params": (None, _opt(_int(1))),
        "max_params": (None, _opt(_int(1))),
        "max_macs": (None, _opt(_int(1))),
        "max_latency_ms": (None, _opt(_num(1e-6))),
        "batch_size": (512, _int(1)),
        "latency_batch": (64, _int(1)),
        "latency_repeats": (5, _int(1)),
        # a file from 'autoformer latency build': predicted latency for max_latency_ms and the latency Pareto cost
        "latency_model": (None, _opt(_str())),
        "seed": (0, _int(0)),
    },
}
# The recipes of 'autoformer retrain' (a found architecture trained from scratch, the paper's Table 4 "retrain")
# and 'autoformer finetune' (from inherited weights, or transfer to another dataset): the train keys that apply to
# one model, each null by default, meaning the train section's value. Finetuning defaults as the paper: 40 epochs
# at train.lr x lr_scale (0.1), one warm-up epoch.
SUPERNET_ONLY_KEYS = (
    "freeze_inactive",
    "eval_subnets",
    "sampling",
    "sandwich_random",
    "inplace_distillation",
    "inplace_weight",
    "alpha_min",
    "alpha_max",
    "alpha_clip",
    "gradient_projection",
)
# Train keys that change how a run is kept and shown, not what it learns: two stand-alone trainings that differ
# only in these (and in SUPERNET_ONLY_KEYS, which a single model ignores) give the same model.
BOOKKEEPING_KEYS = ("checkpoint_every", "keep_checkpoints", "eval_batch_size", "log_every_steps", "max_failures")
RECIPE_PHASES = ("train", "retrain", "finetune")


def recipe_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The keys in which two stand-alone recipes (``Task.recipe``) train different models. What a single model
    ignores (SUPERNET_ONLY_KEYS) and how a run is kept (BOOKKEEPING_KEYS) do not count, nor a key the tool gained
    after ``recorded`` was written, at its default (a run started by an older version resumes)."""
    ignored = {*SUPERNET_ONLY_KEYS, *BOOKKEEPING_KEYS}
    return sorted(
        k
        for k in (set(recorded) | set(current)) - ignored
        if recorded.get(k) != current.get(k)
        and not (k not in recorded and k in SCHEMA["train"] and current.get(k) == SCHEMA["train"][k][0])
    )


_INHERITED = {k: (None, _opt(check)) for k, (_, check) in SCHEMA["train"].items() if k not in SUPERNET_ONLY_KEYS}
SCHEMA["retrain"] = dict(_INHERITED)
SCHEMA["finetune"] = {
    **_INHERITED,
    "epochs": (40, _int(1)),
    "warmup_epochs": (1, _int(0)),
    "lr_scale": (0.1, _num(1e-6, 10.0)),
}
TOP_LEVEL = ("description", "space", "space_overrides", *SCHEMA)


@dataclasses.dataclass(frozen=True)
class Task:
    """A validated task. Sections are plain dicts (JSON-ready: stored in checkpoints and exports)."""

    name: str
    description: str
    space_name: str
    space_overrides: dict[str, Any]
    data: dict[str, Any]
    splits: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    search: dict[str, Any]
    retrain: dict[str, Any]
    finetune: dict[str, Any]

    def space(self, num_classes: int | None = None) -> SearchSpace:
        """The task's search space, reshaped for its images (and for ``num_classes`` when found from the data)."""
        base = load_space(self.space_name)
        if self.space_overrides:
            merged = {**base.to_dict(), **self.space_overrides}
            base = SearchSpace.from_dict(merged, source=f"task {self.name!r}: space_overrides")
        classes = num_classes or self.data["num_classes"]
        try:
            return base.with_overrides(
                image_size=self.data["image_size"], in_chans=self.data["in_chans"], num_classes=classes
            )
        except UserError as exc:
            raise UserError(f"task {self.name!r} does not fit space {self.space_name!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "space": self.space_name,
            "space_overrides": dict(self.space_overrides),
            "data": dict(self.data),
            "splits": dict(self.splits),
            "model": dict(self.model),
            "train": dict(self.train),
            "search": dict(self.search),
            "retrain": dict(self.retrain),
            "finetune": dict(self.finetune),
        }

    def recipe(self, phase: str) -> dict[str, Any]:
        """The complete training recipe of ``phase`` (train, retrain or finetune): the train section with the
        phase's own values laid over it (a finetune without its own lr runs at train.lr x finetune.lr_scale)."""
        if phase not in RECIPE_PHASES:
            raise ValueError(f"recipe phase {phase!r} is not one of {RECIPE_PHASES}")
        recipe = dict(self.train)
        if phase == "train":
            return recipe
        own = {k: v for k, v in getattr(self, phase).items() if v is not None and k != "lr_scale"}
        if phase == "finetune" and self.finetune["lr"] is None:
            own["lr"] = self.train["lr"] * self.finetune["lr_scale"]
        recipe.update(own)
        if recipe["teacher"] in ("none", ""):
            recipe["teacher"] = None
        return recipe

    def for_phase(self, phase: str) -> Task:
        """This task with its train section replaced by ``phase``'s recipe: what a retrain or finetune run trains
        with (the training loop reads only ``train``), and what its checkpoints and model record."""
        return dataclasses.replace(self, train=self.recipe(phase))

    def with_overrides(self, overrides: list[str]) -> Task:
        """This task with ``section.key=value`` overrides applied (e.g. a recorded task, re-pointed at local data)."""
        data = self.to_dict()
        name = data.pop("name")
        for item in overrides:
            _apply_override(data, item)
        return _build(data, name, f"task {name!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        data = copy.deepcopy(data)
        name = data.pop("name", "task")
        return _build(data, name, f"task {name!r}")


def builtin_task_names() -> list[str]:
    return builtin_names("tasks")


def load_task(name_or_path: str | Path, overrides: list[str] | None = None) -> Task:
    """Load a task by built-in name or path, apply ``section.key=value`` overrides, validate everything."""
    data, name, label = read_yaml_mapping(name_or_path, "tasks", "task", f"with sections {', '.join(TOP_LEVEL)}")
    for item in overrides or []:
        _apply_override(data, item)
    return _build(data, name, label)


def _apply_override(data: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise UserError(f"override {item!r}: expected key=value, e.g. train.epochs=50")
    key, _, raw = item.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    if len(parts) == 1 and key in ("description", "space"):
        data[key] = value
        return
    if len(parts) != 2 or parts[0] not in (*SCHEMA, "space_overrides"):
        raise UserError(
            f"override {item!r}: unknown key {key!r}; use section.key with section one of "
            f"{', '.join((*SCHEMA, 'space_overrides'))}, or description/space"
        )
    section, name = parts
    if section in SCHEMA and name not in SCHEMA[section]:
        raise UserError(f"override {item!r}: unknown key {key!r}; {section} keys are {', '.join(SCHEMA[section])}")
    data.setdefault(section, {})
    if not isinstance(data[section], dict):
        data[section] = {}
    data[section][name] = value


def _check_distillation(sections: dict[str, dict[str, Any]], where: str) -> None:
    """In-place distillation needs the sandwich rule (its teacher is the step's largest subnet). ``none`` is no
    teacher; in a retrain or finetune section it says so explicitly (null there means the train section's)."""
    train = sections["train"]
    if train["teacher"] in ("none", ""):
        train["teacher"] = None
    if train["gradient_projection"] != "off" and train["sampling"] != "sandwich":
        raise UserError(
            f"{where}: key 'train.gradient_projection': {train['gradient_projection']!r} needs train.sampling = "
            f"sandwich (it sets the step's largest subnet's gradient against the others'); got {train['sampling']!r}"
        )
    if train["inplace_distillation"] != "off" and train["sampling"] != "sandwich":
        raise UserError(
            f"{where}: key 'train.inplace_distillation': {train['inplace_distillation']!r} needs train.sampling = "
            f"sandwich (the step's largest subnet is the teacher); got {train['sampling']!r}"
        )


def _build(data: dict[str, Any], name: str, where: str) -> Task:
    unknown = sorted(str(k) for k in data if k not in TOP_LEVEL)
    if unknown:
        raise UserError(f"{where}: unknown section {unknown[0]!r}; allowed: {', '.join(TOP_LEVEL)}")
    if not isinstance(data.get("space"), str):
        raise UserError(f"{where}: key 'space': value {data.get('space')!r} must name a search space (e.g. digits)")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"{where}: key 'description': value {description!r} must be a string")
    space_overrides = data.get("space_overrides") or {}
    if not isinstance(space_overrides, dict):
        raise UserError(f"{where}: 'space_overrides' must be a mapping")
    for key in space_overrides:
        if key not in SPACE_OVERRIDE_KEYS:
            raise UserError(
                f"{where}: key 'space_overrides.{key}': a task may change only {', '.join(SPACE_OVERRIDE_KEYS)}"
            )
    sections = {}
    for section, schema in SCHEMA.items():
        given = data.get(section) or {}
        if not isinstance(given, dict):
            raise UserError(f"{where}: section {section!r} must be a mapping of keys")
        unknown = sorted(str(k) for k in given if k not in schema)
        if unknown:
            raise UserError(f"{where}: unknown key '{section}.{unknown[0]}'; {section} keys are {', '.join(schema)}")
        values = {}
        for key, (default, (allowed, check)) in schema.items():
            value = given.get(key, copy.deepcopy(default))
            if value is None and default is None and key in ("dataset", "image_size", "mean", "std"):
                raise UserError(f"{where}: missing required key '{section}.{key}' ({allowed})")
            if isinstance(value, bool) and not check(value) and check("on" if value else "off"):
                value = "on" if value else "off"  # YAML reads a bare off (or on) as a boolean
            if not check(value):
                raise UserError(f"{where}: key '{section}.{key}': value {value!r} is not allowed; expected {allowed}")
            values[key] = value
        sections[section] = values
    _check_distillation(sections, where)
    data_section = sections["data"]
    for key in ("mean", "std"):
        if len(data_section[key]) != data_section["in_chans"]:
            raise UserError(
                f"{where}: key 'data.{key}': value {data_section[key]!r} must have one entry per channel "
                f"(data.in_chans = {data_section['in_chans']})"
            )
    if any(s <= 0 for s in data_section["std"]):
        raise UserError(f"{where}: key 'data.std': value {data_section['std']!r} must be positive")
    if data_section["dataset"] != "digits" and not data_section["root"]:
        raise UserError(
            f"{where}: key 'data.root' is required for dataset {data_section['dataset']!r} (--set data.root=PATH)"
        )
    fixed_shape = {"digits": (1, 10), "cifar10": (3, 10), "cifar100": (3, 100)}.get(data_section["dataset"])
    if fixed_shape is not None:  # these datasets fix their channels and classes: a different value is a mistake
        chans, classes = fixed_shape
        if data_section["in_chans"] != chans:
            raise UserError(
                f"{where}: key 'data.in_chans': {data_section['dataset']} images have {chans} channel(s), not "
                f"{data_section['in_chans']}"
            )
        if data_section["num_classes"] not in (None, classes):
            raise UserError(f"{where}: key 'data.num_classes': {data_section['dataset']} has {classes} classes")
        data_section["num_classes"] = classes
    elif data_section["in_chans"] not in (1, 3):
        raise UserError(
            f"{where}: key 'data.in_chans': value {data_section['in_chans']} is not allowed; ImageFolder images "
            f"load as grayscale (1) or RGB (3)"
        )
    task = Task(
        name=name,
        description=description,
        space_name=data["space"],
        space_overrides=dict(space_overrides),
        **sections,
    )
    task.space(num_classes=task.data["num_classes"] or 2)  # fails early when the space does not fit the images
    return task
