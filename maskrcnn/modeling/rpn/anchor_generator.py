"""Anchors for each FPN level, laid out like torchvision's AnchorGenerator.

Anchors of a level are centred on ``(x * stride, y * stride)`` for every
feature cell, location-major then anchor-minor, matching the flattening of the
RPN head's outputs. The strides are the configured ones (4, 8, ..., 64), or, with
``strides_from_image`` (``MODEL.RPN.ANCHOR_STRIDES_FROM_IMAGE``), torchvision's: each level's
stride is ``padded image side // feature side`` per axis. The two agree when the padded image
is a multiple of the coarsest stride; otherwise the coarsest levels differ (an 800-pixel side
padded to 32 gives P6 13 cells of stride 61 in torchvision, not 64).

Cell anchors come in two flavours (``MODEL.RPN.ANCHOR_ROUNDING``): rounded to whole pixels
(torchvision, maskrcnn-benchmark) or exact (detectron2's ``DefaultAnchorGenerator``, offset 0).
For aspect ratio 1 they agree; for 0.5 and 2 the corners differ by less than 0.5 px.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch


def cell_anchors(size: float, aspect_ratios: Sequence[float], rounding: bool = True) -> torch.Tensor:
    """``(A, 4)`` float32 anchors of one size centred at 0, one per ratio (height / width).

    Args:
        size: sqrt of the anchor area.
        aspect_ratios: height / width of each anchor.
        rounding: True: torchvision's float32 arithmetic, corners rounded to integers.
            False: detectron2's ``generate_cell_anchors`` (``w = sqrt(size**2 / ratio)``,
            ``h = ratio * w``, corners ``-w/2, -h/2, w/2, h/2`` in double precision, then float32).
    """
    if not rounding:
        rows = []
        for ratio in aspect_ratios:
            w = math.sqrt(float(size) ** 2.0 / float(ratio))
            h = float(ratio) * w
            rows.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(rows, dtype=torch.float32)
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
        rounding: round the cell anchors to whole pixels (see :func:`cell_anchors`).
        strides_from_image: per level and axis, stride = padded image side // feature side
            (torchvision's ``AnchorGenerator``), the padded image being the first level's size
            times its stride; False: the configured ``strides``.
    """

    def __init__(self, *, sizes: Sequence[float], strides: Sequence[int], aspect_ratios: Sequence[float],
                 rounding: bool = True, strides_from_image: bool = False) -> None:
        if len(sizes) != len(strides):
            raise ValueError(f"{len(sizes)} anchor sizes for {len(strides)} feature levels")
        self.strides = list(strides)
        self.rounding = rounding
        self.strides_from_image = strides_from_image
        self.cells = [cell_anchors(s, aspect_ratios, rounding) for s in sizes]
        self._cache: Dict[Tuple, torch.Tensor] = {}

    @property
    def num_anchors_per_location(self) -> int:
        return self.cells[0].shape[0]

    def grid(self, level: int, height: int, width: int, device: torch.device,
             stride: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """``(height * width * A, 4)`` anchors of one level; ``stride`` (y, x) defaults to the level's."""
        stride_y, stride_x = stride if stride is not None else (self.strides[level],) * 2
        key = (level, height, width, stride_y, stride_x, str(device))
        if key not in self._cache:
            sx = torch.arange(width, dtype=torch.float32, device=device) * stride_x
            sy = torch.arange(height, dtype=torch.float32, device=device) * stride_y
            yy, xx = torch.meshgrid(sy, sx, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            self._cache[key] = (shifts + self.cells[level].to(device, non_blocking=True)[None]).reshape(-1, 4)
            if len(self._cache) > 256:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]

    def __call__(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, List[int]]:
        """Anchors of all levels concatenated, ``(sum_l H_l W_l A, 4)``, and the count per level."""
        strides: List[Optional[Tuple[int, int]]] = [None] * len(features)
        if self.strides_from_image:
            h, w = features[0].shape[-2] * self.strides[0], features[0].shape[-1] * self.strides[0]
            strides = [(h // f.shape[-2], w // f.shape[-1]) for f in features]
        grids = [self.grid(i, f.shape[-2], f.shape[-1], f.device, s) for i, (f, s) in enumerate(zip(features, strides))]
        return torch.cat(grids, 0), [g.shape[0] for g in grids]
