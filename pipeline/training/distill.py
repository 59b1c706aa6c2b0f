"""Distillation losses: a student's logits against soft targets, the way a step's teacher hands them over.

In-place distillation (BigNAS) has the largest subnet of a sandwich step teach the others with its detached
predictions; AlphaNet's alpha-divergence replaces KL there, because KL(teacher || student) punishes a student that
under-estimates the teacher's uncertainty but not one that over-estimates it: taking, per image, the larger of the
divergences at a negative and a positive alpha guards against both. External teachers (DeiT-style) give either
their arg-max as a hard label or their softened probabilities.

Targets are always passed detached (or computed under ``torch.no_grad``): no gradient reaches a teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_to_targets(student_logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """KL(targets || student), averaged over the batch."""
    return F.kl_div(F.log_softmax(student_logits.float(), dim=-1), target_probs.float(), reduction="batchmean")


def alpha_divergence(
    student_logits: torch.Tensor, target_probs: torch.Tensor, alpha: float, ratio_clip: float
) -> torch.Tensor:
    """Per-image alpha-divergence D_alpha(p || q) = (sum_i q_i (p_i / q_i)^alpha - 1) / (alpha (alpha - 1)) of the
    student q from the targets p; alpha -> 1 is KL(p || q), alpha -> 0 is KL(q || p). The ratio p / q is clipped at
    ``ratio_clip`` (AlphaNet's beta) so that classes the student all but rules out cannot blow the loss up."""
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    q = log_q.exp()
    p = target_probs.float().clamp_min(1e-12)
    log_ratio = (p.log() - log_q).clamp(max=float(torch.log(torch.tensor(ratio_clip))))
    if abs(alpha - 1.0) < 1e-6:
        return (p * (p.log() - log_q)).sum(-1)
    if abs(alpha) < 1e-6:
        return (q * -log_ratio).sum(-1)
    return ((q * torch.exp(alpha * log_ratio)).sum(-1) - 1.0) / (alpha * (alpha - 1.0))


def adaptive_alpha_divergence(
    student_logits: torch.Tensor, target_probs: torch.Tensor, alpha_min: float, alpha_max: float, ratio_clip: float
) -> torch.Tensor:
    """AlphaNet's adaptive loss: per image the larger of the divergences at ``alpha_min`` (< 0, against
    over-estimating the teacher's uncertainty) and ``alpha_max`` (> 0, against under-estimating it); batch mean."""
    low = alpha_divergence(student_logits, target_probs, alpha_min, ratio_clip)
    high = alpha_divergence(student_logits, target_probs, alpha_max, ratio_clip)
    return torch.maximum(low, high).mean()


def hard_teacher_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DeiT's hard distillation: cross-entropy against the teacher's arg-max."""
    return F.cross_entropy(student_logits.float(), teacher_logits.argmax(dim=-1))


def soft_teacher_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft distillation: KL between the temperature-softened distributions, scaled by T^2 so its
    gradient keeps the size of a label loss."""
    targets = F.softmax(teacher_logits.float() / temperature, dim=-1)
    return kl_to_targets(student_logits / temperature, targets) * temperature**2
