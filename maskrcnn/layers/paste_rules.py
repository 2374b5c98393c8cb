"""Where a mask's ``M x M`` grid lies in the image and which pixels it may touch, per paste rule.

Two rules exist; both are bilinear interpolation of the zero-extended grid at pixel centres
(``maskrcnn.layers.mask_window``), they differ only in where the grid is placed:

* ``"center"`` (the default; detectron2's ``grid_sample`` paste): the grid spans the box
  ``(x1, y1, x2, y2)`` exactly; pixels in ``floor(x1) - 1 <= x < ceil(x2) + 1`` (clipped;
  likewise for ``y``) are evaluated, all others are false. See ``maskrcnn.layers.mask_ops``.
* ``"torchvision"`` (torchvision's and maskrcnn-benchmark's ``paste_masks_in_image``, for
  weights trained and evaluated that way): the grid is padded by one zero cell on each side
  and the box is scaled about its centre by ``(M + 2) / M``, then truncated to integers
  ``(bx1, by1, bx2, by2)`` (towards zero, as ``Tensor.to(int64)``). The padded grid is
  resized to the ``(by2 - by1 + 1) x (bx2 - bx1 + 1)`` integer box with
  ``F.interpolate(mode="bilinear", align_corners=False)``, and only pixels of that integer
  box (clipped to the image) are written. In the terms of the bilinear evaluation: the
  unpadded ``M``-cell grid spans ``[bx1 + w / (M + 2), bx1 + w (M + 1) / (M + 2)]`` with
  ``w = bx2 - bx1 + 1`` (``max(w, 1)``), which gives the same source coordinates as
  ``F.interpolate`` and the same values (its clamping at the padded border reads the zero
  padding, as the zero extension does). The threshold is strict (``value > threshold``), as
  torchvision's own ``masks > 0.5``; the ``"center"`` rule keeps ``>=``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

from .mask_window import Window, box_window

__all__ = ["PASTE_RULES", "rule_geometry"]

PASTE_RULES = ("center", "torchvision")

Box = Tuple[float, float, float, float]


def _torchvision_axis(lo: float, hi: float, m: int, size: int) -> Optional[Tuple[float, float, int, int]]:
    """Grid span and pixel range along one axis for the torchvision rule."""
    half, centre = (hi - lo) * 0.5 * (m + 2) / m, (hi + lo) * 0.5
    b1, b2 = int(centre - half), int(centre + half)  # int() truncates towards zero, like .to(int64)
    n = max(b2 - b1 + 1, 1)
    start, end = max(b1, 0), min(b2 + 1, size)
    if end <= start:
        return None
    cell = n / (m + 2)
    return b1 + cell, b1 + cell * (m + 1), start, end


def rule_geometry(box: Sequence[float], m: int, rule: str, height: int, width: int
                  ) -> Optional[Tuple[Box, Window]]:
    """``(grid_box, window)`` of one detection, or None when it pastes nothing.

    Args:
        box: ``(x1, y1, x2, y2)`` detection box in image pixels.
        m: mask resolution ``M``.
        rule: one of :data:`PASTE_RULES`.
        height, width: image size.

    Returns:
        ``grid_box``: the ``(x1, y1, x2, y2)`` span of the ``M x M`` grid (cell centres at
        ``x1 + (j + 0.5) (x2 - x1) / M``); ``window``: ``(y0, y1, x0, x1)`` pixels evaluated.
    """
    if rule == "center":
        win = box_window(box, height, width)
        return None if win is None else ((box[0], box[1], box[2], box[3]), win)
    if rule != "torchvision":
        raise ValueError(f"paste rule must be one of {PASTE_RULES}, got {rule!r}")
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        return None
    ax = _torchvision_axis(x1, x2, m, width)
    ay = _torchvision_axis(y1, y2, m, height)
    if ax is None or ay is None:
        return None
    return (ax[0], ay[0], ax[1], ay[1]), (ay[2], ay[3], ax[2], ax[3])
