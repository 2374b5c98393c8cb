"""Box head post-processing: per-class decode, score threshold, per-class NMS, top detections."""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from ....structures.bounding_box import BoxList, clip_boxes
from ...box_coder import BoxCoder


class BoxPostProcessor:
    """Final detections from class logits and deltas.

    Args:
        box_coder: ROI box coder.
        score_thresh: drop detections scoring below this.
        nms_thresh: per-class NMS IoU.
        detections_per_img: keep at most this many, best first.
        min_size: drop boxes with a side below this (pixels).
    """

    def __init__(self, *, box_coder: BoxCoder, score_thresh: float, nms_thresh: float,
                 detections_per_img: int, min_size: float = 1e-2) -> None:
        self.box_coder = box_coder
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.min_size = min_size

    @torch.no_grad()
    def __call__(self, class_logits: torch.Tensor, box_regression: torch.Tensor,
                 proposals: List[BoxList]) -> List[BoxList]:
        """Detections per image with fields ``scores`` and ``labels`` (1..C-1)."""
        num_classes = class_logits.shape[1]
        concat = torch.cat([p.bbox for p in proposals]) if proposals else class_logits.new_zeros((0, 4))
        boxes = self.box_coder.decode(box_regression, concat).view(-1, num_classes, 4)
        scores = F.softmax(class_logits, -1)
        out = []
        start = 0
        for p in proposals:
            n = len(p)
            out.append(self._one_image(boxes[start:start + n], scores[start:start + n], p.size))
            start += n
        return out

    def _one_image(self, boxes: torch.Tensor, scores: torch.Tensor, size) -> BoxList:
        boxes = clip_boxes(boxes, size)
        num_classes = scores.shape[1]
        labels = torch.arange(num_classes, device=scores.device).expand_as(scores)
        boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        keep = (scores > self.score_thresh) & ((boxes[:, 2] - boxes[:, 0]) >= self.min_size) & (
            (boxes[:, 3] - boxes[:, 1]) >= self.min_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        result = BoxList(boxes[keep], size)
        result.add_field("scores", scores[keep])
        result.add_field("labels", labels[keep])
        return result
