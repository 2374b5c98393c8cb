"""RPN losses: objectness BCE and box smooth-L1 over sampled anchors."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from ...structures.bounding_box import BoxList, box_iou
from ..box_coder import BoxCoder
from ..matcher import Matcher
from ..sampler import BalancedPositiveNegativeSampler


class RPNLoss:
    """Match anchors to ground truth, sample, and compute the two RPN losses.

    Args:
        matcher: anchor matcher (foreground / background IoU, low-quality matches on).
        sampler: balanced sampler of anchors per image.
        box_coder: RPN box coder.
        smooth_l1_beta: beta of the regression loss.
        loss_weight: multiplies both losses.
    """

    def __init__(self, *, matcher: Matcher, sampler: BalancedPositiveNegativeSampler,
                 box_coder: BoxCoder, smooth_l1_beta: float, loss_weight: float = 1.0) -> None:
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = box_coder
        self.beta = smooth_l1_beta
        self.weight = loss_weight

    def targets(self, anchors: torch.Tensor, gts: List[BoxList]):
        """Per image labels ``(R,)`` (1, 0, -1) and regression targets ``(R, 4)``."""
        labels, reg = [], []
        for gt in gts:
            if len(gt) == 0:
                labels.append(torch.zeros(anchors.shape[0], device=anchors.device))
                reg.append(torch.zeros_like(anchors))
                continue
            matches = self.matcher(box_iou(gt.bbox, anchors))
            lab = (matches >= 0).to(torch.float32)
            lab[matches == Matcher.BETWEEN_THRESHOLDS] = -1
            labels.append(lab)
            reg.append(self.box_coder.encode(gt.bbox[matches.clamp(min=0)], anchors))
        return labels, reg

    def __call__(self, anchors: torch.Tensor, objectness: torch.Tensor, deltas: torch.Tensor,
                 gts: List[BoxList]) -> Dict[str, torch.Tensor]:
        """Losses ``loss_objectness`` and ``loss_rpn_box_reg``.

        Args:
            anchors: ``(R, 4)`` shared by all images of the batch.
            objectness: ``(N, R)`` logits.
            deltas: ``(N, R, 4)``.
            gts: N ground-truth BoxLists.
        """
        labels, reg = self.targets(anchors, gts)
        pos, neg = self.sampler(labels)
        pos = torch.cat(pos)
        sampled = pos | torch.cat(neg)
        labels = torch.cat(labels)
        reg = torch.cat(reg)
        obj = objectness.reshape(-1)
        d = deltas.reshape(-1, 4)
        num = sampled.sum().clamp(min=1)
        box_loss = F.smooth_l1_loss(d[pos], reg[pos], beta=self.beta, reduction="sum") / num
        obj_loss = F.binary_cross_entropy_with_logits(obj[sampled], labels[sampled], reduction="sum") / num
        # Keep the graph connected (DDP) and the value 0 when nothing was sampled.
        zero = objectness.sum() * 0 + deltas.sum() * 0
        return {"loss_objectness": self.weight * obj_loss + zero,
                "loss_rpn_box_reg": self.weight * box_loss + zero}
