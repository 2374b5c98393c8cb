"""Where a segmentation lies: polygon parts clipped to the image, the extent of an RLE.

Part of :mod:`maskrcnn.data.datasets.check`, which decides what a finding means (repair or
error). Coordinates are continuous pixels, xyxy; the image is ``[0, W] x [0, H]``.

Cost: a part that lies inside the image (nearly every part of a real dataset) costs four
C-level ``min``/``max`` calls over its coordinates; only parts crossing the border are
clipped point by point (Sutherland-Hodgman against the four image edges).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

__all__ = ["Extent", "clip_polygon", "union_extent", "overlaps", "rle_extent"]

Extent = Tuple[float, float, float, float]  # x0, y0, x1, y1


def clip_polygon(part: Sequence[float], width: int, height: int
                 ) -> Tuple[Optional[List[float]], Optional[Extent], bool]:
    """One polygon part ``[x1, y1, x2, y2, ...]`` clipped to the image.

    Args:
        part: flat coordinates (an even number, at least 6, all finite).
        width, height: the image size.

    Returns:
        ``(part, extent, clipped)``: the part (the same list when it lies inside the image,
        else the clipped polygon), its extent, and whether it was clipped. ``part`` and
        ``extent`` are None when nothing with an area is left: a part outside the image, or
        flat (all points on one horizontal or vertical line, or a clipped polygon of zero
        area).
    """
    xs, ys = part[0::2], part[1::2]
    extent = (min(xs), min(ys), max(xs), max(ys))
    if extent[0] >= 0 and extent[1] >= 0 and extent[2] <= width and extent[3] <= height:
        flat = extent[2] <= extent[0] or extent[3] <= extent[1]
        return (None, None, False) if flat else (list(part), extent, False)
    points = list(zip(xs, ys))
    for axis, limit, keep_below in ((0, 0.0, False), (0, float(width), True),
                                    (1, 0.0, False), (1, float(height), True)):
        points = _clip_half_plane(points, axis, limit, keep_below)
        if len(points) < 3:
            return None, None, True
    if _area(points) <= 0:
        return None, None, True
    clipped = [v for point in points for v in point]
    return clipped, (min(clipped[0::2]), min(clipped[1::2]), max(clipped[0::2]), max(clipped[1::2])), True


def _clip_half_plane(points: List[Tuple[float, float]], axis: int, limit: float,
                     keep_below: bool) -> List[Tuple[float, float]]:
    """Sutherland-Hodgman: the polygon ``points`` cut to ``p[axis] <= limit`` (``keep_below``)
    or ``p[axis] >= limit``."""
    def inside(p: Tuple[float, float]) -> bool:
        return p[axis] <= limit if keep_below else p[axis] >= limit

    def crossing(p: Tuple[float, float], q: Tuple[float, float]) -> Tuple[float, float]:
        t = (limit - p[axis]) / (q[axis] - p[axis])
        other = p[1 - axis] + t * (q[1 - axis] - p[1 - axis])
        return (limit, other) if axis == 0 else (other, limit)

    out: List[Tuple[float, float]] = []
    for i, cur in enumerate(points):
        prev = points[i - 1]
        if inside(cur):
            if not inside(prev):
                out.append(crossing(prev, cur))
            out.append(cur)
        elif inside(prev):
            out.append(crossing(prev, cur))
    return out


def _area(points: List[Tuple[float, float]]) -> float:
    """Absolute shoelace area."""
    total = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
        total += x0 * y1 - x1 * y0
    return abs(total) / 2


def union_extent(extents: Sequence[Extent]) -> Extent:
    """The extent of several extents (at least one)."""
    return (min(e[0] for e in extents), min(e[1] for e in extents),
            max(e[2] for e in extents), max(e[3] for e in extents))


def overlaps(a: Extent, b: Extent) -> bool:
    """Whether two extents share an area (touching edges do not count)."""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def rle_extent(rle: dict, height: int, width: int) -> Optional[Extent]:
    """The extent of the foreground of a COCO RLE (compressed or not) of an ``height x width``
    image, or None when it has no foreground pixel.

    Raises:
        ValueError: the counts are not a valid RLE of that size.
    """
    from pycocotools import mask as mask_utils  # only RLE needs it: polygon data trains without

    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(type(c) is int and c >= 0 for c in counts) or sum(counts) != height * width:
            raise ValueError(f"uncompressed counts must be non-negative integers summing to "
                             f"height * width = {height * width}")
        rle = mask_utils.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    elif not isinstance(counts, (str, bytes)):
        raise ValueError(f"counts is a {type(counts).__name__}, expected a string or a list")
    try:
        if int(mask_utils.area(rle)) == 0:
            return None
        x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    except Exception as exc:  # noqa: BLE001 - pycocotools raises several types on bad strings
        raise ValueError(f"counts cannot be decoded: {exc}") from exc
    return x, y, x + w, y + h
