"""The box head's proposal sampler: add the ground truth, match, sample a balanced set per image."""
from __future__ import annotations

from typing import List, Tuple

import torch

from ....structures.bounding_box import BoxList, box_iou
from ...balanced_sampler import BalancedPositiveNegativeSampler, pad_labels
from ...box_coder import BoxCoder
from ...matcher import Matcher


class ProposalSampler:
    """Add ground truth to the proposals, match, and sample a balanced set per image.

    The sampled proposals of an image come positives first, each group in proposal order.
    Reading back the number of each (one small tensor for the batch) is the one wait for the
    device: every later step of the ROI heads then has exact sizes.

    Args:
        matcher: foreground/background IoU rule.
        sampler: balanced sampler.
        box_coder: encodes regression targets.
    """

    def __init__(self, *, matcher: Matcher, sampler: BalancedPositiveNegativeSampler, box_coder: BoxCoder) -> None:
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = box_coder

    def _label(self, proposals: BoxList, gt: BoxList) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidates (proposals then ground truth) ``(R, 4)``, their labels (class, 0 background,
        -1 ignored) and matched ground truth (negative codes of :class:`Matcher`)."""
        boxes = torch.cat([proposals.bbox, gt.bbox.to(proposals.bbox)], 0)
        if len(gt) == 0:
            matched = torch.full((boxes.shape[0],), Matcher.BELOW_LOW_THRESHOLD, dtype=torch.int64,
                                 device=boxes.device)
            return boxes, torch.zeros_like(matched), matched
        matched = self.matcher(box_iou(gt.bbox.to(boxes), boxes))
        labels = gt.get_field("labels").to(boxes.device)[matched.clamp(min=0)]
        labels = torch.where(matched == Matcher.BELOW_LOW_THRESHOLD, torch.zeros_like(labels), labels)
        labels = torch.where(matched == Matcher.BETWEEN_THRESHOLDS, torch.full_like(labels, -1), labels)
        return boxes, labels, matched

    @torch.no_grad()
    def __call__(self, proposals: List[BoxList], targets: List[BoxList]) -> Tuple[List[BoxList], List[int]]:
        """Sample.

        Args:
            proposals: per image, the RPN's proposals.
            targets: per image, ground truth with field ``labels``.

        Returns:
            Per image, the sampled proposals with fields ``labels``, ``regression_targets``
            ``(K, 4)`` and ``matched_idxs`` (0 for background), positives first; and per
            image the number of positives.
        """
        labelled = [self._label(p, gt) for p, gt in zip(proposals, targets)]
        padded = pad_labels([lab for _, lab, _ in labelled])
        size = padded.shape[1]
        pos, neg = self.sampler.sample(padded)
        index = torch.arange(size, device=padded.device)[None, :]
        key = torch.where(pos, index, torch.where(neg, index + size, index + 2 * size))
        k = min(self.sampler.batch_size_per_image, size)
        order = key.topk(k, 1, largest=False).indices
        counts = torch.stack([pos.sum(1), (pos | neg).sum(1)], 1).tolist()  # the one read-back
        out = []
        for (boxes, labels, matched), rows, (_, total), gt, props in zip(labelled, order, counts, targets,
                                                                         proposals):
            keep = rows[:total]
            idx = matched[keep].clamp(min=0)
            bl = BoxList(boxes[keep], props.size)
            bl.add_field("labels", labels[keep])
            bl.add_field("matched_idxs", idx)
            gt_boxes = gt.bbox.to(boxes)[idx] if len(gt) else boxes[keep]
            bl.add_field("regression_targets", self.box_coder.encode(gt_boxes, boxes[keep]))
            out.append(bl)
        return out, [c[0] for c in counts]
