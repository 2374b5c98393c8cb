"""Proposal selection: per-level top-k, clip, small-box removal, per-level NMS, per-image top-N."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torchvision.ops import batched_nms

from ...structures.bounding_box import BoxList, clip_boxes
from ..box_coder import BoxCoder


class ProposalSelector:
    """Turn RPN outputs into proposals.

    Args:
        box_coder: RPN box coder.
        pre_nms_top_n: proposals kept per level before NMS.
        post_nms_top_n: proposals kept per image after NMS.
        nms_thresh: NMS IoU, applied within each level.
        min_size: boxes with a side below this are dropped.
    """

    def __init__(self, *, box_coder: BoxCoder, pre_nms_top_n: int, post_nms_top_n: int,
                 nms_thresh: float, min_size: float) -> None:
        self.box_coder = box_coder
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.min_size = max(float(min_size), 1e-3)

    @torch.no_grad()
    def __call__(self, anchors: torch.Tensor, counts: Sequence[int], objectness: torch.Tensor,
                 deltas: torch.Tensor, image_sizes: List[Tuple[int, int]]) -> List[BoxList]:
        """Select proposals.

        Args:
            anchors: ``(R, 4)``; counts: anchors per level (sum R).
            objectness: ``(N, R)`` logits; deltas: ``(N, R, 4)``.
            image_sizes: (h, w) of each image before padding.

        Returns:
            N BoxLists with field ``objectness`` (probabilities), best first.
        """
        n = objectness.shape[0]
        scores, idxs, levels = [], [], []
        start = 0
        for lvl, c in enumerate(counts):
            k = min(self.pre_nms_top_n, c)
            s, i = objectness[:, start:start + c].topk(k, dim=1)
            scores.append(s)
            idxs.append(i + start)
            levels.append(torch.full((k,), lvl, device=objectness.device))
            start += c
        scores = torch.cat(scores, 1)
        idxs = torch.cat(idxs, 1)
        levels = torch.cat(levels)
        sel_anchors = anchors[idxs.reshape(-1)]
        sel_deltas = deltas.gather(1, idxs[..., None].expand(-1, -1, 4)).reshape(-1, 4)
        boxes = self.box_coder.decode(sel_deltas, sel_anchors).view(n, -1, 4)
        probs = scores.sigmoid()
        out = []
        for b, (h, w) in zip(range(n), image_sizes):
            bx = clip_boxes(boxes[b], (h, w))
            p, lv = probs[b], levels
            keep = ((bx[:, 2] - bx[:, 0]) >= self.min_size) & ((bx[:, 3] - bx[:, 1]) >= self.min_size)
            bx, p, lv = bx[keep], p[keep], lv[keep]
            keep = batched_nms(bx, p, lv, self.nms_thresh)[: self.post_nms_top_n]
            bl = BoxList(bx[keep], (h, w))
            bl.add_field("objectness", p[keep])
            out.append(bl)
        return out
