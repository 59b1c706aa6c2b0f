"""Supernet training rules, one module each behind one interface (``base.Rule``): which subnets a step trains
(uniform, sandwich), what each learns from (an external teacher, in-place distillation), and how their gradients
combine (gradient projection). ``step_rules`` builds a recipe's rules, in the order a step asks them."""

from __future__ import annotations

from pipeline.core.training_settings import TrainSettings
from pipeline.training.rules.base import Rule, StepBatch
from pipeline.training.rules.inplace import InplaceDistillation
from pipeline.training.rules.projection import GradientProjection
from pipeline.training.rules.sandwich import SandwichSampling
from pipeline.training.rules.teacher import ExternalTeacher
from pipeline.training.rules.uniform import UniformSampling

__all__ = ["Rule", "StepBatch", "step_rules", "sampling_rule"]


def sampling_rule(sampling: str, sandwich_random: int) -> Rule:
    """The rule that draws a step's subnets (``train.sampling``)."""
    return SandwichSampling(sandwich_random) if sampling == "sandwich" else UniformSampling()


def step_rules(train: TrainSettings) -> list[Rule]:
    """A recipe's rules: sampling, then the losses (in-place distillation before the teacher, so the students
    learn from the largest subnet and the largest from the labels and the teacher), then gradient projection."""
    rules = train.supernet
    found = [sampling_rule(rules.sampling, rules.sandwich_random)]
    if rules.inplace_distillation != "off":
        found.append(InplaceDistillation(rules))
    found.append(ExternalTeacher(train.teacher))
    if rules.gradient_projection != "off":
        found.append(GradientProjection(rules.gradient_projection))
    return found
