"""Weights against the model a config builds, compared name by name and shape by shape before loading.

``load_state_dict`` reports a config that disagrees with its weights (an edited ``embed_dim``, another model's
weights swapped in) as one exception listing every mismatched tensor, thirty lines for one edited number. The
comparison here says the same in one line: the first difference in the model's own order, and how many more.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class WeightsMismatch(ValueError):
    """Weights whose names or shapes are not those of the model they are loaded into; the message is one line."""


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))


def state_difference(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str | None:
    """What differs between the tensors the config makes (``expected``, e.g. ``model.state_dict()``, meta tensors
    will do) and those the weights hold (``found``); None when every name and shape agrees.

    Shapes are compared before names that only one side has: a changed dimension is the likely cause, and
    the missing or extra tensors usually follow from it.
    """
    problems = [
        f"{name} has shape {_shape(found[name])} in the weights, the config makes {_shape(tensor)}"
        for name, tensor in expected.items()
        if name in found and tuple(found[name].shape) != tuple(tensor.shape)
    ]
    problems += [
        f"the weights lack {name}, which the config makes with shape {_shape(tensor)}"
        for name, tensor in expected.items()
        if name not in found
    ]
    problems += [f"the weights hold {name}, which the config does not make" for name in found if name not in expected]
    if not problems:
        return None
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def check_state(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> None:
    """Raise ``WeightsMismatch`` (one line) unless ``found`` has exactly the names and shapes of ``expected``."""
    difference = state_difference(expected, found)
    if difference is not None:
        raise WeightsMismatch(difference)
