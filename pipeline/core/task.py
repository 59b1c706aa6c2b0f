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
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.checks import Spec, boolean, integer, names_of, number, numbers, one_of, optional, text
from pipeline.core.space import SearchSpace, load_space
from pipeline.core.training_settings import TrainSettings, phase_recipe, phase_schema, train_schema
from pipeline.shared.builtin_yaml import builtin_names, read_yaml_mapping
from pipeline.shared.errors import UserError

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")
# Choices that the task schema validates and the code that acts on them imports from here (one definition each).
SHARING_MODES = ("entangled", "classical", "classical_strict")
SEARCH_ALGORITHMS = ("evolution", "random")
SEARCH_OBJECTIVES = ("constrained", "pareto")
SEARCH_PARETO_COSTS = ("params", "macs", "latency_ms")
MUTATION_MODES = ("per_layer", "per_gene")
DATA_FORMATS = ("auto", "folder", "parquet")
INGEST_MODES = ("auto", "loader", "ray_data")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
SPACE_OVERRIDE_KEYS = ("patch_size", "max_relative_position", "relative_position", "qkv_bias")

# section -> key -> (default, (description of what is allowed, check))
SCHEMA: dict[str, dict[str, tuple[Any, Spec]]] = {
    "data": {
        "dataset": (None, one_of(DATASETS)),
        "root": (None, optional(text())),
        "download": (False, boolean()),
        "image_size": (None, integer(1)),
        "in_chans": (3, integer(1)),
        "num_classes": (None, optional(integer(2))),
        "mean": (None, numbers()),
        "std": (None, numbers()),
        "interpolation": ("bilinear", one_of(INTERPOLATIONS)),
        "eval_crop_pct": (0.875, number(0.05, 1.0)),
        "loader_workers": (2, integer(0)),
        # folder: an ImageFolder tree; parquet: a pack of one (`autoformer data pack`); auto: what data.root holds
        "format": ("auto", one_of(DATA_FORMATS)),
        # loader: a torch DataLoader in each training worker; ray_data: decoding and augmentation in Ray Data
        # tasks on any node with CPUs; auto: ray_data for data in object storage and for packs, else loader
        "ingest": ("auto", one_of(INGEST_MODES)),
        "ingest_cpus": (1.0, number(0.01, 64.0)),  # CPUs each Ray Data decoding task asks for
    },
    "splits": {
        "search_per_class": (100, integer(1)),
        "test_per_class": (100, integer(1)),
        "seed": (0, integer(0)),
    },
    "model": {
        "sharing": ("entangled", one_of(SHARING_MODES)),
        "drop_rate": (0.0, number(0.0, 0.99)),
        "attn_drop_rate": (0.0, number(0.0, 0.99)),
        "drop_path_rate": (0.1, number(0.0, 0.99)),
    },
    "train": train_schema(),  # typed and documented in pipeline.core.training_settings
    # Phase 2 (evolutionary search). Defaults are the paper's protocol (§4.1); constraints are in parameters,
    # MACs per image, and milliseconds per batch of latency_batch images measured on the evaluators.
    "search": {
        "algorithm": ("evolution", one_of(SEARCH_ALGORITHMS)),
        "objective": ("constrained", one_of(SEARCH_OBJECTIVES)),
        "population": (50, integer(1)),
        "generations": (20, integer(1)),
        "parents": (10, integer(1)),
        "mutations": (25, integer(0)),
        "crossovers": (25, integer(0)),
        "depth_prob": (0.2, number(0.0, 1.0)),
        "gene_prob": (0.4, number(0.0, 1.0)),
        # per_layer: the paper's P_m per block (a layer's heads and MLP ratio re-drawn together); per_gene: the
        # reference code's loop (heads and ratio re-drawn separately; it sets depth_prob 0.4 and gene_prob 0.2)
        "mutation": ("per_layer", one_of(MUTATION_MODES)),
        "pareto_costs": (["params"], names_of(SEARCH_PARETO_COSTS)),
        "min_params": (None, optional(integer(1))),
        "max_params": (None, optional(integer(1))),
        "max_macs": (None, optional(integer(1))),
        "max_latency_ms": (None, optional(number(1e-6))),
        "batch_size": (512, integer(1)),
        "latency_batch": (64, integer(1)),
        "latency_repeats": (5, integer(1)),
        # a file from 'autoformer latency build': predicted latency for max_latency_ms and the latency Pareto cost
        "latency_model": (None, optional(text())),
        "seed": (0, integer(0)),
        # After the search: rerank_top candidates (the best, a pareto front, then the best's ties) fine-tuned
        # rerank_steps steps each from inherited weights with the finetune recipe, then picked on those scores
        "rerank_top": (0, integer(0)),
        "rerank_steps": (100, integer(1)),
    },
}
# The recipes of 'autoformer retrain' (a found architecture trained from scratch, the paper's Table 4 "retrain")
# and 'autoformer finetune' (from inherited weights, or transfer to another dataset).
SCHEMA["retrain"] = phase_schema("retrain")
SCHEMA["finetune"] = phase_schema("finetune")
TOP_LEVEL = ("description", "space", "space_overrides", *SCHEMA)


@dataclasses.dataclass(frozen=True)
class Task:
    """A validated task. The training recipe is typed (``TrainSettings``); the other sections are plain dicts, and
    ``to_dict`` gives the whole task JSON-ready (stored in checkpoints and exports)."""

    name: str
    description: str
    space_name: str
    space_overrides: dict[str, Any]
    data: dict[str, Any]
    splits: dict[str, Any]
    model: dict[str, Any]
    train: TrainSettings
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
            "train": self.train.to_flat(),
            "search": dict(self.search),
            "retrain": dict(self.retrain),
            "finetune": dict(self.finetune),
        }

    def recipe(self, phase: str) -> TrainSettings:
        """The complete training recipe of ``phase`` (train, retrain or finetune): the train section with the
        phase's own values laid over it (a finetune without its own lr runs at train.lr x finetune.lr_scale)."""
        return phase_recipe(self.train, phase, getattr(self, phase) if phase != "train" else {})

    def for_phase(self, phase: str) -> Task:
        """This task with its train section replaced by ``phase``'s recipe: what a retrain or finetune run trains
        with (the training loop reads only ``train``), and what its checkpoints and model record."""
        return dataclasses.replace(self, train=self.recipe(phase))

    def with_overrides(self, overrides: list[str]) -> Task:
        """This task with ``section.key=value`` overrides applied (e.g. a recorded task, re-pointed at local data)."""
        if isinstance(overrides, str):  # a string would be applied character by character
            raise TypeError(
                "Task.with_overrides: overrides must be a list of 'section.key=value' strings, not str; "
                f"write [{overrides!r}]"
            )
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
    if isinstance(overrides, str):  # a string would be applied character by character
        raise TypeError(
            f"load_task: overrides must be a list of 'section.key=value' strings, not str; write [{overrides!r}]"
        )
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


def _build(data: dict[str, Any], name: str, where: str) -> Task:
    description, space_overrides = _top_level(data, where)
    sections = {section: _section(data, section, where) for section in SCHEMA}
    _check_data(sections["data"], where)
    train = TrainSettings.from_flat(sections.pop("train"))
    train.check(where)
    task = Task(
        name=name,
        description=description,
        space_name=data["space"],
        space_overrides=dict(space_overrides),
        train=train,
        **sections,
    )
    task.space(num_classes=task.data["num_classes"] or 2)  # fails early when the space does not fit the images
    return task


def _top_level(data: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """The task's sections, space, description and space overrides (whose keys a task may change)."""
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
    return description, space_overrides


def _section(data: dict[str, Any], section: str, where: str) -> dict[str, Any]:
    """One section with defaults filled in and every value checked against the schema."""
    schema = SCHEMA[section]
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
    return values


def _check_data(data_section: dict[str, Any], where: str) -> None:
    """The data section's rules between keys (filling in the classes of datasets that fix them)."""
    for key in ("mean", "std"):
        if len(data_section[key]) != data_section["in_chans"]:
            raise UserError(
                f"{where}: key 'data.{key}': value {data_section[key]!r} must have one entry per channel "
                f"(data.in_chans = {data_section['in_chans']})"
            )
    if any(s <= 0 for s in data_section["std"]):
        raise UserError(f"{where}: key 'data.std': value {data_section['std']!r} must be positive")
    if data_section["dataset"] != "digits" and not data_section["root"]:
        raise UserError(f"{where}: key 'data.root' is required for dataset {data_section['dataset']!r}")
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
