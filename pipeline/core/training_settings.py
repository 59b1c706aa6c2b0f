"""The training sections of a task (``train``, ``retrain``, ``finetune``) as typed settings.

A task file keeps the keys flat (``train.lr``, ``train.sampling``; that is what users write and what runs
record); the typed object nests the keys that belong together, so what a key is follows from where it sits:
the supernet rules (``TrainSettings.supernet``) are what a stand-alone model ignores and what ``retrain`` and
``finetune`` cannot set; the bookkeeping (``keeping``) changes how a run is kept and shown, not what it learns;
a key marked resumable may change when a run is resumed. Every module that trains reads these objects; this is
the one module that reads the sections' keys.

It lives in the core (pure Python, no torch) because the task validates it when it loads, and the data layer
(augmentation), training, the phases and the pipeline all read it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.core.checks import (
    Spec,
    auto_or_integer,
    boolean,
    integer,
    number,
    one_of,
    optional,
    pair,
    stop_rule,
    text,
)
from pipeline.core.recorded import RESUME_HINT, Rules, check_recorded, differences
from pipeline.shared.errors import UserError

SAMPLING_MODES = ("uniform", "sandwich")
INPLACE_DISTILLATION = ("off", "kl", "alpha_divergence")
GRADIENT_PROJECTION = ("off", "largest", "others")
TEACHER_DISTILLATION = ("hard", "soft")
OPTIMIZERS = ("adamw", "adam", "sgd", "lamb", "lion")
PRECISIONS = ("auto", "fp32", "bf16")
RECIPE_PHASES = ("train", "retrain", "finetune")


def _key(default: Any, spec: Spec, *, key: str | None = None, resumable: bool = False) -> Any:
    """A flat task key: its default, what it allows, its name in the task file when it differs from the field's,
    and whether a resumed run may change it."""
    return dataclasses.field(default=default, metadata={"spec": spec, "key": key, "resumable": resumable})


@dataclasses.dataclass(frozen=True)
class Optimization:
    """The optimizer and its schedule (timm's): linear warm-up, then cosine decay to ``min_lr``."""

    optimizer: str = _key("adamw", one_of(OPTIMIZERS))
    lr: float = _key(1e-3, number(0.0, 10.0))  # at lr_base_batch images per step; scaled linearly
    lr_base_batch: int = _key(1024, integer(1))
    min_lr: float = _key(1e-5, number(0.0, 10.0))
    warmup_lr: float = _key(1e-6, number(0.0, 10.0))
    warmup_epochs: int = _key(5, integer(0))
    weight_decay: float = _key(0.05, number(0.0, 10.0))
    momentum: float = _key(0.9, number(0.0, 1.0))  # SGD only
    clip_grad: float | None = _key(None, optional(number(0.0)))

    def scaled_lr(self, batch_size: int) -> float:
        """Linear scaling rule (DeiT/AutoFormer): lr x global batch / lr_base_batch."""
        return self.lr * batch_size / self.lr_base_batch


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The training images' transform (timm's) and the batch's Mixup/CutMix with label smoothing."""

    label_smoothing: float = _key(0.1, number(0.0, 0.99))
    mixup: float = _key(0.8, number(0.0, 10.0))
    cutmix: float = _key(1.0, number(0.0, 10.0))
    mixup_prob: float = _key(1.0, number(0.0, 1.0))
    mixup_switch_prob: float = _key(0.5, number(0.0, 1.0))
    randaugment: str | None = _key("rand-m9-mstd0.5-inc1", optional(text()))
    color_jitter: float = _key(0.4, number(0.0, 1.0))
    random_erasing: float = _key(0.25, number(0.0, 1.0))
    hflip: float = _key(0.5, number(0.0, 1.0))
    scale: tuple[float, float] = _key((0.08, 1.0), pair(0.0, 1.0))
    ratio: tuple[float, float] = _key((0.75, 1.3333333), pair(0.01, 100.0))

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (Mixup or CutMix): soft targets, and an even batch per worker."""
        return self.mixup > 0 or self.cutmix > 0


@dataclasses.dataclass(frozen=True)
class TeacherSettings:
    """An external teacher, in eval mode: none, a model directory of this tool, or timm:NAME@WEIGHTS_FILE (a local
    file: nothing is downloaded). hard: DeiT's cross-entropy on its arg-max; soft: KL at ``tau``. The loss is
    (1 - alpha) x label loss + alpha x teacher loss."""

    source: str | None = _key(None, optional(text()), key="teacher")
    distill: str = _key("hard", one_of(TEACHER_DISTILLATION))
    alpha: float = _key(0.5, number(0.0, 1.0), key="distill_alpha")
    tau: float = _key(1.0, number(0.01, 100.0), key="distill_tau")


@dataclasses.dataclass(frozen=True)
class SupernetRules:
    """How a supernet is trained; a stand-alone model ignores all of it (and retrain/finetune cannot set it).

    ``sampling``: one uniform draw per step (the paper), or the sandwich rule (BigNAS: the largest, the smallest
    and ``sandwich_random`` uniform draws, their gradients summed into one step). In-place distillation (sandwich
    only): the largest subnet learns from the labels, the others from its detached predictions, by KL or
    AlphaNet's adaptive alpha-divergence (alpha_min < 0 < alpha_max, the importance ratio clipped at alpha_clip);
    ``inplace_weight`` scales their loss. Gradient projection (sandwich only): where the largest subnet's gradient
    and the others' sum conflict, the one without priority loses its component along the other (largest: the
    largest's step is kept whole; others: the smaller subnets', NASViT's choice). ``freeze_inactive``: a step
    changes only what its subnet used (else, like the reference code, every weight). ``eval_subnets``: random
    subnets scored on the search split every epoch, beside the smallest and the largest.

    The convergence probe (``pipeline/core/convergence.py``): ``probe_archs`` architectures spread over the
    space's sizes (0: none) scored on the search split every ``probe_every`` epochs (auto: as often as costs at
    most a tenth of an epoch); ``stop_when_stable`` [tau, n] ends training once the probe ranking's tau against
    the previous evaluation has held at least tau for n evaluations in a row.
    """

    freeze_inactive: bool = _key(True, boolean())
    eval_subnets: int = _key(4, integer(0))
    sampling: str = _key("uniform", one_of(SAMPLING_MODES))
    sandwich_random: int = _key(2, integer(0))
    inplace_distillation: str = _key("off", one_of(INPLACE_DISTILLATION))
    inplace_weight: float = _key(1.0, number(0.0, 100.0))
    alpha_min: float = _key(-1.0, number(-10.0, 0.0))
    alpha_max: float = _key(1.0, number(0.0, 10.0))
    alpha_clip: float = _key(5.0, number(1.0, 1e6))
    gradient_projection: str = _key("off", one_of(GRADIENT_PROJECTION))
    probe_archs: int = _key(16, integer(0))
    probe_every: int | str = _key("auto", auto_or_integer(1), resumable=True)
    stop_when_stable: tuple[float, int] | None = _key(None, stop_rule(), resumable=True)

    @property
    def subnets_per_step(self) -> int:
        return 2 + self.sandwich_random if self.sampling == "sandwich" else 1


@dataclasses.dataclass(frozen=True)
class Bookkeeping:
    """How a run is kept and shown: two trainings that differ only here give the same model."""

    checkpoint_every: int = _key(5, integer(1))
    keep_checkpoints: int = _key(2, integer(1))
    eval_batch_size: int = _key(512, integer(1))
    log_every_steps: int = _key(0, integer(0))
    max_failures: int = _key(3, integer(0), resumable=True)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """One training recipe: the ``train`` section (a supernet's), or a stand-alone phase's (``recipe``)."""

    epochs: int = _key(100, integer(1), resumable=True)
    batch_size: int = _key(256, integer(2))  # global: split over the workers
    seed: int = _key(0, integer(0))
    precision: str = _key("auto", one_of(PRECISIONS))
    optim: Optimization = dataclasses.field(default_factory=Optimization)
    augment: Augmentation = dataclasses.field(default_factory=Augmentation)
    teacher: TeacherSettings = dataclasses.field(default_factory=TeacherSettings)
    supernet: SupernetRules = dataclasses.field(default_factory=SupernetRules)
    keeping: Bookkeeping = dataclasses.field(default_factory=Bookkeeping)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> TrainSettings:
        """From a section's flat keys as validated by the task (or recorded by a run: keys the tool gained since
        take their defaults). ``none`` (or empty) as a teacher is no teacher."""
        values = {k: v for k, v in flat.items() if k in _FIELDS}
        if values.get("teacher") in ("none", ""):
            values["teacher"] = None
        return _build(cls, values)

    def to_flat(self) -> dict[str, Any]:
        """The flat, JSON-ready section (lists where the task file has lists): what tasks and runs record."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in _leaves(self)}

    def check(self, where: str) -> None:
        """The rules between keys that a value's own check cannot see (one line naming the key)."""
        rules = self.supernet
        needs_sandwich = (
            ("gradient_projection", "it sets the step's largest subnet's gradient against the others'"),
            ("inplace_distillation", "the step's largest subnet is the teacher"),
        )
        for key, why in needs_sandwich:
            value = getattr(rules, key)
            if value != "off" and rules.sampling != "sandwich":
                raise UserError(
                    f"{where}: key 'train.{key}': {value!r} needs train.sampling = sandwich ({why}); got "
                    f"{rules.sampling!r}"
                )

    def mode(self, images_per_s: float | None) -> dict[str, Any]:
        """How a supernet was trained, for honest comparisons of supernets (fidelity reports, inherited scores):
        the sampling rule, in-place and external distillation, and its training speed."""
        rules = self.supernet
        mode = {
            "sampling": rules.sampling,
            "subnets_per_step": rules.subnets_per_step,
            "inplace_distillation": rules.inplace_distillation,
            "gradient_projection": rules.gradient_projection,
            "teacher": self.teacher.source,
            "images_per_s": images_per_s,
        }
        if self.teacher.source is not None:
            mode.update(distill=self.teacher.distill, distill_alpha=self.teacher.alpha)
        return mode


def _build(cls: type, values: Mapping[str, Any]) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if "spec" in f.metadata:
            key = f.metadata["key"] or f.name
            if key in values:
                value = values[key]
                kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        else:
            kwargs[f.name] = _build(_GROUPS[f.name], values)
    return cls(**kwargs)


def _walk(cls: type, group: str | None = None) -> Iterator[tuple[str, str | None, dataclasses.Field]]:
    """(flat key, group field name or None, field) of every key, in declaration order."""
    for f in dataclasses.fields(cls):
        if "spec" in f.metadata:
            yield f.metadata["key"] or f.name, group, f
        else:
            yield from _walk(_GROUPS[f.name], f.name)


def _leaves(settings: TrainSettings) -> Iterator[tuple[str, Any]]:
    for key, group, f in _walk(TrainSettings):
        yield key, getattr(getattr(settings, group) if group else settings, f.name)


_GROUPS = {
    "optim": Optimization,
    "augment": Augmentation,
    "teacher": TeacherSettings,
    "supernet": SupernetRules,
    "keeping": Bookkeeping,
}
_FIELDS = {key: (group, f) for key, group, f in _walk(TrainSettings)}
SUPERNET_ONLY_KEYS = tuple(k for k, (group, _) in _FIELDS.items() if group == "supernet")
BOOKKEEPING_KEYS = tuple(k for k, (group, _) in _FIELDS.items() if group == "keeping")
RESUMABLE_KEYS = tuple(k for k, (_, f) in _FIELDS.items() if f.metadata["resumable"])
DEFAULTS = {k: list(f.default) if isinstance(f.default, tuple) else f.default for k, (_, f) in _FIELDS.items()}


def train_schema() -> dict[str, tuple[Any, Spec]]:
    """The ``train`` section's keys for the task's validation: key -> (default, (what is allowed, check))."""
    return {k: (DEFAULTS[k], f.metadata["spec"]) for k, (_, f) in _FIELDS.items()}


def phase_schema(phase: str) -> dict[str, tuple[Any, Spec]]:
    """``retrain`` / ``finetune``: the keys that apply to one model, each null by default (the train section's
    value). Finetuning defaults as the paper: 40 epochs at train.lr x lr_scale (0.1), one warm-up epoch."""
    own = {k: (None, optional(f.metadata["spec"])) for k, (group, f) in _FIELDS.items() if group != "supernet"}
    if phase == "finetune":
        own.update(epochs=(40, integer(1)), warmup_epochs=(1, integer(0)), lr_scale=(0.1, number(1e-6, 10.0)))
    return own


def phase_recipe(train: TrainSettings, phase: str, own: Mapping[str, Any]) -> TrainSettings:
    """The complete recipe of ``phase``: the train section with the phase's own values (``own``, its section)
    laid over it; a finetune without its own lr runs at train lr x lr_scale."""
    if phase not in RECIPE_PHASES:
        raise ValueError(f"recipe phase {phase!r} is not one of {RECIPE_PHASES}")
    if phase == "train":
        return train
    values = train.to_flat()
    values.update({k: v for k, v in own.items() if v is not None and k != "lr_scale"})
    if phase == "finetune" and own.get("lr") is None:
        values["lr"] = train.optim.lr * own["lr_scale"]
    return TrainSettings.from_flat(values)


def recipe_rules(prefix: str = "") -> Rules:
    """Comparing two stand-alone recipes: what a single model ignores (the supernet rules) and how a run is kept
    do not count, nor a key the tool gained after the record was written, at its default."""
    return Rules(
        ignored={prefix + k for k in (*SUPERNET_ONLY_KEYS, *BOOKKEEPING_KEYS)},
        defaults={prefix + k: v for k, v in DEFAULTS.items()},
    )


def recipe_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The keys in which two recorded stand-alone recipes (flat ``to_flat`` mappings) train different models."""
    return [d.key for d in differences(recorded, current, recipe_rules())]


def check_recipe(
    subject: str, recorded: Mapping[str, Any], current: TrainSettings, phase: str, hint: str = RESUME_HINT
) -> None:
    """Refuse a recorded stand-alone recipe that trains another model than ``current`` (one line)."""
    prefix = f"{phase}."
    check_recorded(
        subject,
        {prefix + k: v for k, v in recorded.items()},
        {prefix + k: v for k, v in current.to_flat().items()},
        recipe_rules(prefix),
        hint,
    )
