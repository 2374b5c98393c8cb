"""Anchors for each FPN level, laid out like torchvision's AnchorGenerator.

Anchors of a level are centred on ``(x * stride, y * stride)`` for every
feature cell, location-major then anchor-minor, matching the flattening of the
RPN head's outputs.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch


def cell_anchors(size: float, aspect_ratios: Sequence[float]) -> torch.Tensor:
    """``(A, 4)`` anchors of one size centred at 0; ratio is height / width (rounded like torchvision)."""
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1.0 / h_ratios
    ws = w_ratios * float(size)
    hs = h_ratios * float(size)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class AnchorGenerator:
    """Anchor grids per level, cached per feature size.

    Args:
        sizes: one anchor size per level.
        strides: stride of each level.
        aspect_ratios: ratios shared by all levels.
    """

    def __init__(self, *, sizes: Sequence[float], strides: Sequence[int], aspect_ratios: Sequence[float]) -> None:
        if len(sizes) != len(strides):
            raise ValueError(f"{len(sizes)} anchor sizes for {len(strides)} feature levels")
        self.strides = list(strides)
        self.cells = [cell_anchors(s, aspect_ratios) for s in sizes]
        self._cache: Dict[Tuple, torch.Tensor] = {}

    @property
    def num_anchors_per_location(self) -> int:
        return self.cells[0].shape[0]

    def grid(self, level: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """``(height * width * A, 4)`` anchors of one level."""
        key = (level, height, width, str(device))
        if key not in self._cache:
            stride = self.strides[level]
            sx = torch.arange(width, dtype=torch.float32, device=device) * stride
            sy = torch.arange(height, dtype=torch.float32, device=device) * stride
            yy, xx = torch.meshgrid(sy, sx, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            self._cache[key] = (shifts + self.cells[level].to(device, non_blocking=True)[None]).reshape(-1, 4)
            if len(self._cache) > 256:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]

    def __call__(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, List[int]]:
        """Anchors of all levels concatenated, ``(sum_l H_l W_l A, 4)``, and the count per level."""
        grids = [self.grid(i, f.shape[-2], f.shape[-1], f.device) for i, f in enumerate(features)]
        return torch.cat(grids, 0), [g.shape[0] for g in grids]
