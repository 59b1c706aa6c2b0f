"""An optimizer step that changes only what the sampled subnet used.

With weight entanglement every step trains one subnet; the paper updates its weights "while freezing the
rest". Plain AdamW would not: entries outside the slice get a zero gradient, yet their momentum keeps moving
them and decoupled weight decay shrinks them (while layers beyond the sampled depth, whose gradient is None,
are skipped altogether). This wrapper snapshots every parameter with a gradient and its per-element optimizer
state, steps, and puts back every entry whose gradient was exactly zero. It costs a few elementwise passes
over the parameters, which is small next to the step's matrix products.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def step_only_active(optimizer: torch.optim.Optimizer) -> None:
    saved = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            inactive = p.grad == 0
            state = {
                k: v.clone() for k, v in optimizer.state.get(p, {}).items() if torch.is_tensor(v) and v.shape == p.shape
            }
            saved.append((p, inactive, p.detach().clone(), state))
    optimizer.step()
    for p, inactive, before, state in saved:
        p.copy_(torch.where(inactive, before, p))
        current = optimizer.state[p]
        for key, old in state.items():
            current[key].copy_(torch.where(inactive, old, current[key]))
        for key, value in current.items():
            if key not in state and torch.is_tensor(value) and value.shape == p.shape:
                value.masked_fill_(inactive, 0)  # state created by this first step: nothing accumulated outside


@torch.no_grad()
def zero_fill_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter without a gradient a zero one, as the reference code's ``zero_grad()`` (set to zero,
    not None) did: the optimizer then steps every weight, so momentum and decoupled weight decay move entries
    the step's subnet never touched, layers beyond its depth included (``train.freeze_inactive: false``)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
