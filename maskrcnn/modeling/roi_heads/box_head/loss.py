"""Proposal sampling for the box head and its losses."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from ....structures.bounding_box import BoxList, box_iou
from ...box_coder import BoxCoder
from ...matcher import Matcher
from ...sampler import BalancedPositiveNegativeSampler


class ProposalSampler:
    """Add ground truth to the proposals, match, and sample a balanced set per image.

    Args:
        matcher: foreground/background IoU rule.
        sampler: balanced sampler.
        box_coder: encodes regression targets.
    """

    def __init__(self, *, matcher: Matcher, sampler: BalancedPositiveNegativeSampler, box_coder: BoxCoder) -> None:
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = box_coder

    @torch.no_grad()
    def __call__(self, proposals: List[BoxList], targets: List[BoxList]) -> List[BoxList]:
        """Sampled proposals with fields ``labels``, ``regression_targets``, ``matched_idxs``."""
        labels_all, matched_all, boxes_all = [], [], []
        for props, gt in zip(proposals, targets):
            boxes = torch.cat([props.bbox, gt.bbox.to(props.bbox)], 0)
            if len(gt) == 0:
                matched = torch.full((boxes.shape[0],), Matcher.BELOW_LOW_THRESHOLD,
                                     dtype=torch.int64, device=boxes.device)
                labels = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
            else:
                matched = self.matcher(box_iou(gt.bbox.to(boxes), boxes))
                labels = gt.get_field("labels").to(boxes.device)[matched.clamp(min=0)]
                labels[matched == Matcher.BELOW_LOW_THRESHOLD] = 0
                labels[matched == Matcher.BETWEEN_THRESHOLDS] = -1
            labels_all.append(labels)
            matched_all.append(matched)
            boxes_all.append(boxes)
        pos, neg = self.sampler(labels_all)
        out = []
        for boxes, labels, matched, p, n, gt, props in zip(boxes_all, labels_all, matched_all, pos, neg,
                                                          targets, proposals):
            keep = torch.nonzero(p | n, as_tuple=True)[0]
            bl = BoxList(boxes[keep], props.size)
            bl.add_field("labels", labels[keep])
            bl.add_field("matched_idxs", matched[keep].clamp(min=0))
            gt_boxes = gt.bbox.to(boxes)[matched[keep].clamp(min=0)] if len(gt) else boxes[keep]
            bl.add_field("regression_targets", self.box_coder.encode(gt_boxes, boxes[keep]))
            out.append(bl)
        return out


def box_head_losses(class_logits: torch.Tensor, box_regression: torch.Tensor, sampled: List[BoxList],
                    smooth_l1_beta: float, loss_weight: float = 1.0) -> Dict[str, torch.Tensor]:
    """``loss_classifier`` (cross-entropy) and ``loss_box_reg`` (smooth L1 on the true class's deltas).

    Args:
        class_logits: ``(K, C)``; box_regression: ``(K, C * 4)`` for the sampled proposals.
        sampled: the sampled proposals (fields ``labels``, ``regression_targets``).
    """
    labels = torch.cat([s.get_field("labels") for s in sampled])
    targets = torch.cat([s.get_field("regression_targets") for s in sampled])
    cls_loss = F.cross_entropy(class_logits, labels) if labels.numel() else class_logits.sum() * 0
    pos = torch.nonzero(labels > 0, as_tuple=True)[0]
    deltas = box_regression.view(box_regression.shape[0], -1, 4)[pos, labels[pos]]
    box_loss = F.smooth_l1_loss(deltas, targets[pos], beta=smooth_l1_beta, reduction="sum")
    box_loss = box_loss / max(labels.numel(), 1) + box_regression.sum() * 0
    return {"loss_classifier": loss_weight * cls_loss, "loss_box_reg": loss_weight * box_loss}
