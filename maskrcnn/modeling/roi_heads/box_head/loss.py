"""Box head losses: classification cross-entropy and class-specific box regression."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from ....structures.bounding_box import BoxList


def box_head_losses(class_logits: torch.Tensor, box_regression: torch.Tensor, sampled: List[BoxList],
                    smooth_l1_beta: float, loss_weight: float = 1.0) -> Dict[str, torch.Tensor]:
    """``loss_classifier`` (cross-entropy) and ``loss_box_reg`` (smooth L1 on the true class's
    deltas of the positives, summed and divided by the number of sampled proposals).

    Args:
        class_logits: ``(K, C)``; box_regression: ``(K, C * 4)`` for the sampled proposals.
        sampled: the sampled proposals (fields ``labels`` ``(K_i,)``, ``regression_targets`` ``(K_i, 4)``).
        smooth_l1_beta: beta of the regression loss.
        loss_weight: multiplies both losses.
    """
    labels = torch.cat([s.get_field("labels") for s in sampled])
    targets = torch.cat([s.get_field("regression_targets") for s in sampled])
    k = labels.numel()
    cls_loss = F.cross_entropy(class_logits, labels) if k else class_logits.sum() * 0
    # The true class's deltas of every row; rows of background are masked out, not cut out.
    per_class = box_regression.view(k, class_logits.shape[1], 4)
    deltas = per_class.gather(1, labels.clamp(min=0).view(k, 1, 1).expand(k, 1, 4))[:, 0]
    box = F.smooth_l1_loss(deltas, targets, beta=smooth_l1_beta, reduction="none")
    box_loss = torch.where((labels > 0)[:, None], box, torch.zeros_like(box)).sum() / max(k, 1)
    return {"loss_classifier": loss_weight * cls_loss, "loss_box_reg": loss_weight * box_loss}
