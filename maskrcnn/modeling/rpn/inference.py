"""Proposal selection: per-level top-k, clip, small-box removal, per-level NMS (and top-N), per-image top-N.

Small boxes are not cut out (that would wait for the device): their score becomes ``-inf``,
so NMS, which visits boxes best first, lets them suppress nothing but one another, and the
final top-N leaves them out. Reading back the number of proposals of each image is the one
wait, besides NMS itself, whose kernel returns a data-dependent count.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

import torch
from torchvision.ops import nms

from ...structures.bounding_box import BoxList, clip_boxes
from ..box_coder import BoxCoder


def _nms_across_images(device: torch.device) -> bool:
    """Whether one NMS call serves a level of all images (boxes of different images offset
    apart, as torchvision's ``batched_nms`` does) rather than one call per image and level.

    On a GPU each call waits for the device, so a batch makes one call per level. On the CPU
    nothing waits, and the greedy kernel visits every pair of boxes of a call, so per-image
    calls are about 3x cheaper there; they run on ``torch.get_num_threads()`` threads (the
    results do not depend on it).
    """
    return device.type != "cpu"


_pool: Optional[ThreadPoolExecutor] = None
_pool_key: Tuple[int, int] = (0, 0)
_pool_lock = threading.Lock()


def _cpu_pool() -> Optional[ThreadPoolExecutor]:
    """Threads for the per-image CPU NMS calls (torchvision's CPU kernel runs on one thread and
    releases the GIL), one per intra-op thread; None with a single thread. A pool made before a
    fork is not used in the child (its threads did not follow)."""
    global _pool, _pool_key
    threads = torch.get_num_threads()
    if threads < 2:
        return None
    with _pool_lock:
        if _pool_key != (os.getpid(), threads):
            if _pool is not None and _pool_key[0] == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="maskrcnn-nms")
            _pool_key = (os.getpid(), threads)
        return _pool


def nms_per_level(boxes: torch.Tensor, scores: torch.Tensor, levels: Sequence[Tuple[int, int]],
                  nms_thresh: float, max_side: int) -> torch.Tensor:
    """Greedy NMS within each (image, level).

    Args:
        boxes: ``(N, K, 4)`` boxes inside ``[0, max_side]``.
        scores: ``(N, K)``.
        levels: ``(start, count)`` of each level's boxes along K.
        nms_thresh: IoU above which a lower-scored box is suppressed.
        max_side: the largest image side (offsets images apart when they share a call).

    Returns:
        ``(N, K)`` bool: the boxes NMS keeps.
    """
    n, k = scores.shape
    kept = torch.zeros(n * k, dtype=torch.bool, device=scores.device)
    for start, count in levels:
        b, s = boxes[:, start:start + count], scores[:, start:start + count]
        if _nms_across_images(scores.device):
            image = torch.arange(n, device=b.device)[:, None].expand(n, count).reshape(-1)
            offset = (image.to(b.dtype) * float(max_side + 1))[:, None]
            keep = nms(b.reshape(-1, 4) + offset, s.reshape(-1), nms_thresh)
            kept[(keep // count) * k + start + keep % count] = True
        else:
            pool = _cpu_pool() if n > 1 else None
            if pool is not None:
                keeps = list(pool.map(nms, b, s, [nms_thresh] * n))
            else:
                keeps = []
                for i in range(n):
                    keeps.append(nms(b[i], s[i], nms_thresh))
            for i, keep in enumerate(keeps):
                kept[i * k + start + keep] = True
    return kept.view(n, k)


class ProposalSelector:
    """Turn RPN outputs into proposals.

    Args:
        box_coder: RPN box coder.
        pre_nms_top_n: proposals kept per level before NMS.
        post_nms_top_n: proposals kept per image after NMS.
        nms_thresh: NMS IoU, applied within each level.
        min_size: boxes with a side below this are dropped.
        level_post_nms_top_n: proposals kept per level (and image) after NMS, before the
            per-image top-N (maskrcnn-benchmark's ``POST_NMS_TOP_N``); None: no such cap.
    """

    def __init__(self, *, box_coder: BoxCoder, pre_nms_top_n: int, post_nms_top_n: int,
                 nms_thresh: float, min_size: float, level_post_nms_top_n: Optional[int] = None) -> None:
        self.box_coder = box_coder
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.level_post_nms_top_n = level_post_nms_top_n
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
        start = taken = 0
        for c in counts:
            k = min(self.pre_nms_top_n, c)
            s, i = objectness[:, start:start + c].topk(k, dim=1)
            scores.append(s)
            idxs.append(i + start)
            levels.append((taken, k))
            start += c
            taken += k
        probs = torch.cat(scores, 1).sigmoid()
        idxs = torch.cat(idxs, 1)
        sel_deltas = deltas.gather(1, idxs[..., None].expand(-1, -1, 4)).reshape(-1, 4)
        boxes = self.box_coder.decode(sel_deltas, anchors[idxs.reshape(-1)]).view(n, -1, 4)
        boxes = torch.stack([clip_boxes(b, size) for b, size in zip(boxes, image_sizes)])
        large = ((boxes[..., 2] - boxes[..., 0]) >= self.min_size) & (
            (boxes[..., 3] - boxes[..., 1]) >= self.min_size)
        ninf = torch.full_like(probs, -float("inf"))
        kept = nms_per_level(boxes, torch.where(large, probs, ninf), levels, self.nms_thresh,
                             max(max(size) for size in image_sizes)) & large
        if self.level_post_nms_top_n is not None and self.level_post_nms_top_n < self.pre_nms_top_n:
            # Within a level the boxes are in score order (topk), so a running count caps it.
            kept = torch.cat([kept[:, a:a + k] & (kept[:, a:a + k].cumsum(1) <= self.level_post_nms_top_n)
                              for a, k in levels], 1)
        # A stable sort: equal probabilities stay in level, then logit, order (as NMS visits them).
        ranked, order = torch.where(kept, probs, ninf).sort(dim=1, descending=True, stable=True)
        num = (ranked[:, : self.post_nms_top_n] > -float("inf")).sum(1).tolist()  # the one read-back
        out = []
        for b, (size, m) in enumerate(zip(image_sizes, num)):
            keep = order[b, :m]
            bl = BoxList(boxes[b, keep], size)
            bl.add_field("objectness", probs[b, keep])
            out.append(bl)
        return out
