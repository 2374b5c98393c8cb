"""Checks of one annotation's segmentation: its form, then where it lies.

Part of :mod:`maskrcnn.data.datasets.check` (see there for which finding is an error and
which a repair). :func:`parse_segmentation` checks the form (polygon parts, RLE) against the
image size; :func:`place_segmentation`, for annotations that are targets, clips polygon parts
to the image and compares the segmentation's extent with the box
(:mod:`maskrcnn.data.datasets.extent`), so that no target has an all-zero mask inside its box.
"""
from __future__ import annotations

import math
from typing import Any, List, NamedTuple, Optional, Tuple

from maskrcnn.data.datasets.extent import clip_polygon, overlaps, rle_extent, union_extent
from maskrcnn.data.datasets.report import ERROR, REPAIRED, Issues, note

__all__ = ["Segmentation", "parse_segmentation", "place_segmentation", "is_number", "has_no_segmentation",
           "segmentation_area"]


def is_number(value: Any) -> bool:
    """An int or float from JSON (bool is not a number here)."""
    return type(value) in (int, float)


def has_no_segmentation(seg: Any) -> bool:
    """True for an annotation without a segmentation: the key missing (``seg`` None), null or ``[]``.

    Such an annotation is box-only (a target for Faster R-CNN, see
    :func:`~maskrcnn.data.datasets.check.parse_annotation`), unlike a segmentation that is
    given but turns out empty or degenerate, which is dropped as a repair.
    """
    return seg is None or (isinstance(seg, (list, tuple)) and len(seg) == 0)


class Segmentation(NamedTuple):
    """A well-formed segmentation: polygon parts or an RLE."""

    polygons: Optional[List[List[float]]]
    rle: Optional[dict]
    part_ids: Tuple[int, ...] = ()  # index of each polygon part in the annotation


def parse_segmentation(seg: Any, size: Tuple[int, int], issues: Issues) -> Optional[Segmentation]:
    """Polygons or an RLE, well-formed; None when absent, empty, degenerate or malformed.

    No segmentation at all (:func:`has_no_segmentation`) is not a finding here: the caller
    decides whether a box-only annotation is a target.
    """
    if isinstance(seg, dict):
        return _parse_rle(seg, size, issues)
    if has_no_segmentation(seg):
        return None
    if not isinstance(seg, (list, tuple)):
        note(issues, ERROR, "malformed segmentation", f"a {type(seg).__name__} is neither polygons nor RLE")
        return None
    if is_number(seg[0]):
        note(issues, ERROR, "malformed segmentation",
             "a flat list of numbers; polygons are a list of lists [[x1, y1, x2, y2, ...], ...]")
        return None
    parts, part_ids = [], []
    for k, part in enumerate(seg):
        try:
            total = sum(part)  # one C loop rejects non-numbers and, via the sum, NaN / inf
        except TypeError:
            note(issues, ERROR, "malformed polygon", f"part {k} is not a list of numbers")
            return None
        if not math.isfinite(total):
            note(issues, ERROR, "non-finite polygon", f"part {k} holds NaN or infinity")
            return None
        if len(part) % 2:
            note(issues, REPAIRED, "polygon part dropped (odd coordinate count)",
                 f"part {k} has {len(part)} coordinates")
        elif len(part) < 6:
            note(issues, REPAIRED, "polygon part dropped (< 3 points)",
                 f"part {k} has {len(part) // 2} points")
        else:
            parts.append(part)
            part_ids.append(k)
    if not parts:
        note(issues, REPAIRED, "annotation dropped (no valid polygon)", f"none of {len(seg)} parts is valid")
        return None
    return Segmentation(parts, None, tuple(part_ids))


def place_segmentation(seg: Segmentation, box: Tuple[float, ...], size: Tuple[int, int],
                       issues: Issues) -> Optional[Segmentation]:
    """Polygon parts clipped to the image; None (after noting why) when nothing usable is
    left or the segmentation shares no area with ``box`` (xyxy, clipped to the image)."""
    h, w = size
    if seg.rle is not None:
        try:
            extent = rle_extent(seg.rle, h, w)
        except ValueError as exc:
            note(issues, ERROR, "malformed RLE", str(exc))
            return None
        if extent is None:
            note(issues, REPAIRED, "annotation dropped (empty segmentation)",
                 "the RLE has no foreground pixel")
            return None
    else:
        kept, extents, outside = [], [], 0
        for k, part in zip(seg.part_ids, seg.polygons):
            clipped, part_extent, crossed = clip_polygon(part, w, h)
            if clipped is None:
                outside += crossed
                note(issues, REPAIRED, "polygon part dropped (outside the image)" if crossed else
                     "polygon part dropped (no area)", f"part {k} has no area inside the {w}x{h} image")
                continue
            if crossed:
                note(issues, REPAIRED, "polygon part clipped", f"part {k} clipped to the {w}x{h} image")
            kept.append(clipped)
            extents.append(part_extent)
        if not kept:
            if not outside:
                note(issues, REPAIRED, "annotation dropped (no valid polygon)", "no part has an area")
                return None
            note(issues, ERROR, "segmentation outside the image",
                 f"no polygon part has an area inside the {w}x{h} image, but the box "
                 f"{_fmt(box)} is inside it: the polygon coordinates belong to another image or "
                 "frame (x/y swapped?); fix the polygon or the box")
            return None
        extent = union_extent(extents)
        seg = Segmentation(kept, None, seg.part_ids)
    if not overlaps(extent, box):
        note(issues, ERROR, "segmentation outside its box",
             f"the segmentation spans {_fmt(extent)} and the box {_fmt(box)} (xyxy, in the image): "
             "they share no area, so one of them is wrong; fix the polygon / RLE or the box")
        return None
    return seg


def segmentation_area(seg: Any, size: Tuple[int, int]) -> Optional[float]:
    """The pixel area of a segmentation, as pycocotools counts it for evaluation.

    The ``maskUtils.area`` of the RLE, or of the union of the polygon parts rasterised at the
    image size (``frPyObjects`` + ``merge``: what ``COCO.annToRLE`` does); degenerate polygon
    parts (< 3 points, odd coordinate count) are left out, as they are from the targets.

    Args:
        seg: the annotation's ``segmentation`` (polygons, RLE, or none).
        size: image ``(height, width)`` from the JSON.

    Returns:
        The area in pixels, or None when there is no usable segmentation (none, malformed,
        degenerate, counts that do not decode) or pycocotools is not installed (evaluation
        needs it, and nothing else reads the area): the caller then takes the box's.
    """
    parsed = parse_segmentation(seg, size, None)
    if parsed is None:
        return None
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        return None
    h, w = size
    try:
        if parsed.rle is None:
            return float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(parsed.polygons, h, w))))
        rle = parsed.rle
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects({"counts": rle["counts"], "size": [h, w]}, h, w)
        return float(mask_utils.area(rle))
    except Exception:  # noqa: BLE001 - bad counts of a crowd region (not checked as a target): use the box
        return None


def _fmt(extent: Tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in extent) + "]"


def _parse_rle(seg: dict, size: Tuple[int, int], issues: Issues) -> Optional[Segmentation]:
    try:
        rle_size = tuple(int(v) for v in seg["size"])
        counts = seg["counts"]
    except (KeyError, TypeError, ValueError):
        note(issues, ERROR, "malformed RLE", "an RLE needs 'counts' and 'size': [height, width]")
        return None
    if rle_size != tuple(size):
        note(issues, ERROR, "RLE size mismatch",
             f"RLE size (h, w) = {rle_size} but the image is (h, w) = {tuple(size)} in the JSON")
        return None
    if not counts:
        note(issues, REPAIRED, "annotation dropped (empty segmentation)", "RLE with empty counts")
        return None
    return Segmentation(None, seg)
