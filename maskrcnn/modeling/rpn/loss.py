"""RPN losses: objectness BCE and box smooth-L1 over the sampled anchors."""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

from ...structures.bounding_box import BoxList, box_iou
from ..balanced_sampler import BalancedPositiveNegativeSampler
from ..box_coder import BoxCoder
from ..matcher import Matcher

#: What the RPN losses are divided by (``MODEL.RPN.LOSS_NORMALIZATION``).
RPN_LOSS_NORMALIZERS = ("sampled", "batch_size")


class RPNLoss:
    """Match anchors to ground truth, sample, and compute the two RPN losses.

    Sampled anchors are selected by masks over all anchors, never by indexing with a mask,
    so nothing waits for the device.

    Args:
        matcher: anchor matcher (foreground / background IoU, low-quality matches on).
        sampler: balanced sampler of anchors per image.
        box_coder: RPN box coder.
        smooth_l1_beta: beta of the regression loss.
        loss_weight: multiplies both losses.
        straddle_thresh: anchors crossing an image's border by more than this many pixels are
            ignored (label -1, never sampled), as maskrcnn-benchmark's ``STRADDLE_THRESH``;
            negative: every anchor is used (torchvision, detectron2).
        normalizer: both losses are sums over the sampled anchors divided by ``"sampled"``,
            their number (torchvision, maskrcnn-benchmark), or ``"batch_size"``,
            ``batch_size_per_image`` x images (detectron2), whatever was sampled.
    """

    def __init__(self, *, matcher: Matcher, sampler: BalancedPositiveNegativeSampler,
                 box_coder: BoxCoder, smooth_l1_beta: float, loss_weight: float = 1.0,
                 straddle_thresh: float = -1.0, normalizer: str = "sampled") -> None:
        if normalizer not in RPN_LOSS_NORMALIZERS:
            raise ValueError(f"RPN loss normalizer must be one of {RPN_LOSS_NORMALIZERS}, got {normalizer!r}")
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = box_coder
        self.beta = smooth_l1_beta
        self.weight = loss_weight
        self.straddle_thresh = straddle_thresh
        self.normalizer = normalizer

    def _ignore_straddling(self, labels: torch.Tensor, anchors: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """``labels`` ``(R,)`` with -1 for the anchors that cross the image (h, w) by more than the threshold."""
        if self.straddle_thresh < 0:
            return labels
        t, (h, w) = self.straddle_thresh, size
        inside = ((anchors[:, 0] >= -t) & (anchors[:, 1] >= -t)
                  & (anchors[:, 2] < w + t) & (anchors[:, 3] < h + t))
        return torch.where(inside, labels, torch.full_like(labels, -1))

    @torch.no_grad()
    def targets(self, anchors: torch.Tensor, gts: List[BoxList]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Labels ``(N, R)`` (1, 0, -1) and regression targets ``(N, R, 4)``."""
        labels, reg = [], []
        for gt in gts:
            if len(gt) == 0:
                labels.append(self._ignore_straddling(torch.zeros(anchors.shape[0], device=anchors.device),
                                                      anchors, gt.size))
                reg.append(torch.zeros_like(anchors))
                continue
            matches = self.matcher(box_iou(gt.bbox, anchors))
            lab = (matches >= 0).to(torch.float32)
            lab = torch.where(matches == Matcher.BETWEEN_THRESHOLDS, torch.full_like(lab, -1), lab)
            labels.append(self._ignore_straddling(lab, anchors, gt.size))
            reg.append(self.box_coder.encode(gt.bbox[matches.clamp(min=0)], anchors))
        return torch.stack(labels), torch.stack(reg)

    def __call__(self, anchors: torch.Tensor, objectness: torch.Tensor, deltas: torch.Tensor,
                 gts: List[BoxList]) -> Dict[str, torch.Tensor]:
        """Losses ``loss_objectness`` and ``loss_rpn_box_reg``, both 0 when nothing is sampled.

        Args:
            anchors: ``(R, 4)`` shared by all images of the batch.
            objectness: ``(N, R)`` logits.
            deltas: ``(N, R, 4)``.
            gts: N ground-truth BoxLists.
        """
        labels, reg = self.targets(anchors, gts)
        pos, neg = self.sampler.sample(labels)
        sampled = pos | neg
        if self.normalizer == "batch_size":
            num = float(self.sampler.batch_size_per_image * labels.shape[0])
        else:
            num = sampled.sum().clamp(min=1)
        bce = F.binary_cross_entropy_with_logits(objectness, labels.clamp(min=0), reduction="none")
        box = F.smooth_l1_loss(deltas, reg, beta=self.beta, reduction="none").sum(-1)
        obj_loss = torch.where(sampled, bce, torch.zeros_like(bce)).sum() / num
        box_loss = torch.where(pos, box, torch.zeros_like(box)).sum() / num
        return {"loss_objectness": self.weight * obj_loss, "loss_rpn_box_reg": self.weight * box_loss}
