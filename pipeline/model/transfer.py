"""A model's weights moved to another task: the paper's transfer learning (its Table 6), as plain functions.

Another image size keeps the patch size and resamples the absolute position embedding over the new grid
(timm's ``resample_abs_pos_embed``: bicubic, class token kept); the relative-position tables stay valid as
they are, since they index clipped offsets, not positions (only their derived index is rebuilt for the new
grid). Another class count gets a new, freshly initialised head. Another channel count cannot carry over
the patch embedding, and is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import resample_abs_pos_embed

from pipeline.model.static import StaticViT
from pipeline.shared.errors import UserError


def target_fixed(model: StaticViT, image_size: int, in_chans: int, num_classes: int, where: str) -> dict[str, Any]:
    """The model's fixed parts for a task with these images and classes; a clear error when they cannot carry."""
    fixed = model.fixed
    if in_chans != fixed["in_chans"]:
        raise UserError(
            f"{where}: the model takes {fixed['in_chans']}-channel images and the task has {in_chans}; a patch "
            f"embedding cannot be carried across channel counts (finetune on a task with {fixed['in_chans']} channels)"
        )
    if image_size % fixed["patch_size"]:
        raise UserError(
            f"{where}: image size {image_size} is not a multiple of the model's patch size {fixed['patch_size']}"
        )
    return {**fixed, "image_size": image_size, "num_classes": num_classes}


def transferred_state(model: StaticViT, fixed: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """``model``'s weights for a model of the same architecture with ``fixed`` parts (from ``target_fixed``):
    position embedding resampled to the new grid, a new seeded head when the classes differ."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    old_grid = model.fixed["image_size"] // model.fixed["patch_size"]
    new_grid = fixed["image_size"] // fixed["patch_size"]
    if new_grid != old_grid:
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], new_size=[new_grid, new_grid], old_size=[old_grid, old_grid], num_prefix_tokens=1
        )
    if fixed["num_classes"] != model.fixed["num_classes"]:
        torch.manual_seed(seed)
        head = torch.nn.Linear(model.arch.embed_dim, fixed["num_classes"])
        torch.nn.init.trunc_normal_(head.weight, std=0.02)
        torch.nn.init.zeros_(head.bias)
        state["head.weight"], state["head.bias"] = head.weight.detach(), head.bias.detach()
    return state
