"""Multi-level ROIAlign: each box is pooled from the FPN level that fits its size.

One read-back per call (the number of boxes of each level); the boxes are grouped by level
with a sort, not selected with masks. ROIAlign is torchvision's, with a faster CPU backward
(:mod:`maskrcnn.layers.roi_align`).
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch

from ..layers.roi_align import roi_align


class LevelMapper:
    """FPN paper eq. 1: level = floor(4 + log2(sqrt(area) / 224)), clamped to the levels present.

    Args:
        k_min, k_max: lowest and highest pyramid level (2 and 5 for P2..P5).
        canonical_scale, canonical_level: 224 and 4.
        eps: added before flooring (torchvision's 1e-6).
    """

    def __init__(self, k_min: int, k_max: int, canonical_scale: int = 224, canonical_level: int = 4,
                 eps: float = 1e-6) -> None:
        self.k_min, self.k_max = k_min, k_max
        self.s0, self.lvl0, self.eps = canonical_scale, canonical_level, eps

    def __call__(self, boxes: torch.Tensor) -> torch.Tensor:
        """``(K,)`` level index, 0 for k_min."""
        s = torch.sqrt(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0))
        lvl = torch.floor(self.lvl0 + torch.log2(s / self.s0) + self.eps)
        return (lvl.clamp(self.k_min, self.k_max) - self.k_min).to(torch.int64)


class Pooler:
    """ROIAlign over several feature levels.

    Args:
        output_size: side of the pooled feature.
        scales: feature scale of each level (1 / stride), e.g. (1/4, 1/8, 1/16, 1/32).
        sampling_ratio: samples per bin side (0: adaptive).
        aligned: ROIAlign's half-pixel correction.
    """

    def __init__(self, *, output_size: int, scales: Sequence[float], sampling_ratio: int,
                 aligned: bool = False) -> None:
        self.output_size = (output_size, output_size)
        self.scales = [float(s) for s in scales]
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        k_min = int(round(-math.log2(self.scales[0])))
        k_max = int(round(-math.log2(self.scales[-1])))
        self.mapper = LevelMapper(k_min, k_max)

    def __call__(self, features: List[torch.Tensor], boxes: List[torch.Tensor]) -> torch.Tensor:
        """Pool.

        Args:
            features: at least ``len(scales)`` maps ``(N, C, H_l, W_l)``; extra levels are unused.
            boxes: per image ``(K_i, 4)`` in input pixels.

        Returns:
            ``(sum K_i, C, R, R)`` in the order of the boxes.
        """
        rois = torch.cat([torch.cat([b.new_full((b.shape[0], 1), i), b], 1) for i, b in enumerate(boxes)])
        feats = features[: len(self.scales)]
        if rois.shape[0] == 0:
            return feats[0].new_zeros((0, feats[0].shape[1]) + self.output_size)
        if len(feats) == 1:
            return roi_align(feats[0], rois, self.output_size, self.scales[0], self.sampling_ratio, self.aligned)
        levels = self.mapper(rois[:, 1:])
        # Rois grouped by level (stable: in their order within a level); reading back the
        # count of each level is the one wait for the device.
        order = torch.argsort(levels, stable=True)
        counts = torch.zeros(len(feats), dtype=torch.int64, device=levels.device).scatter_add_(
            0, levels, torch.ones_like(levels)).tolist()
        grouped = rois[order]
        pooled, start = [], 0
        for f, scale, count in zip(feats, self.scales, counts):
            if count:
                pooled.append(roi_align(f, grouped[start:start + count], self.output_size, scale,
                                        self.sampling_ratio, self.aligned).to(feats[0].dtype))
            start += count
        return torch.cat(pooled).index_select(0, torch.argsort(order))
