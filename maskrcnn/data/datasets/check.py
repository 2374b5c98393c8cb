"""Checks of a COCO-format dataset: the annotation JSON and, optionally, the image files.

Used in two places with the same code:

* every :class:`~maskrcnn.data.datasets.coco.COCODataset` (so every dataset in
  ``DATASETS.TRAIN`` and ``DATASETS.TEST`` before the first iteration) runs the checks at
  the level ``DATASETS.CHECK`` and raises one :class:`DatasetError` listing the problems;
* ``tools/check_dataset.py`` runs them at ``"header"`` (or ``"full"`` with
  ``--full-decode``) and prints every finding without raising.

What is checked when (cost decision). Levels, each including the previous one:

* ``"annotations"``: the JSON alone, no image file is touched. Pure Python over the
  annotations (polygon coordinates are summed in C, not visited one by one), the same order
  of cost as ``json.load`` itself. Always done: the loader needs it anyway.
* ``"header"`` (the default when loading): every image file is opened and only its header
  parsed (PIL ``Image.open``, no pixel decoding, ~40 us per file on a local disk, so ~4 s for
  100k images): missing files, files that are not images, size disagreeing with the JSON and
  modes that get converted. A truncated pixel stream is *not* noticed at this level.
* ``"full"``: every image is decoded (~0.5-5 ms each, minutes for 100k images), which also
  finds truncated or corrupt files. Only ``tools/check_dataset.py --full-decode`` by default;
  ``DATASETS.CHECK full`` turns it on for loading too.

Classification:

* errors (the dataset cannot be used until fixed): invalid JSON (file, line, column),
  missing ``images``/``categories`` top-level keys, malformed image/annotation/category
  entries, duplicate image, annotation or category ids, annotations of a missing image,
  unknown category ids, missing / unreadable / (``full``) truncated image files, an image
  size disagreeing with the JSON, malformed or non-finite (NaN/inf) boxes and polygons, a
  flat polygon list, RLE whose size disagrees with the image. Non-finite values mean the
  converter that wrote the file is broken, so nothing else in the entry can be trusted.
* repaired (safe, done while loading, counted): a box partly outside the image is clipped;
  a polygon part with fewer than 3 points or an odd number of coordinates is dropped; an
  annotation whose box has zero or negative size, lies outside the image, whose
  segmentation is an empty RLE or has no valid polygon part left is dropped from the targets.
  Crowd annotations are never targets; only their errors are reported.
* box-only (neither an error nor a repair, counted in ``report.box_only``): an annotation
  with a valid box and no segmentation (the key missing, ``null`` or ``[]``; crowd ones
  included). It is a target without a mask; what the dataset does with it depends on whether
  the model needs masks (``COCODataset(require_masks=...)``, from ``MODEL.MASK_ON``):
  Faster R-CNN trains on its box, Mask R-CNN leaves its image out (see the class).
* where the segmentation lies (targets only, :mod:`~maskrcnn.data.datasets.segmentation_check`): a
  polygon part partly outside the image is clipped to it and one wholly outside (or flat:
  no area) is dropped (repaired, counted; the pixels inside the image are unchanged). When
  parts existed but none has an area inside the image, or when the segmentation (polygons or
  RLE) shares no area with the box, it is an error: the box says there is an object where
  the mask says there is none, so one of the two is wrong (coordinates of another image or
  frame, x/y swapped) and training would learn an all-zero mask inside a real box. An RLE
  without a foreground pixel is an empty segmentation (annotation dropped).
* filled in (information, counted): an annotation without ``area`` (the key missing or
  null) gets the area of its segmentation (pycocotools' ``maskUtils.area``), else of its box
  (w * h); one without ``iscrowd`` gets 0, as detectron2 does when it converts a dataset for
  COCO evaluation (pycocotools' ``COCOeval`` reads both of every ground-truth annotation). It
  is done in memory, by :func:`fill_missing_fields` on the index that training and evaluation
  share, never in the file. An ``area`` that is not a number >= 0 is an error, and so is an
  ``iscrowd`` other than 0 or 1.
* images without usable annotations are counted in the summary line (training leaves them
  out, see ``COCODataset(filter_empty=True)``).
* converted (information): 16-bit, CMYK, palette, grayscale, alpha and EXIF-oriented
  images, which :func:`~maskrcnn.data.image_io.read_image_rgb` turns into 8-bit RGB.

Image size and EXIF: the JSON ``height``/``width`` must be the size *after* applying the
EXIF orientation (what ``read_image_rgb`` returns, what the annotations' coordinates refer
to, and what detectron2 checks). A 90-degree-rotated file whose JSON holds the stored,
untransposed size is an error whose message says so: which of the two frames the boxes
were drawn in cannot be told from the file, so it is not repaired.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from maskrcnn.data.datasets.image_check import check_image_files
from maskrcnn.data.datasets.report import ERROR, REPAIRED, DatasetReport, Issues, note as _note
from maskrcnn.data.datasets.segmentation_check import is_number as _is_number
from maskrcnn.data.datasets.segmentation_check import has_no_segmentation, parse_segmentation, place_segmentation
from maskrcnn.data.datasets.segmentation_check import segmentation_area

__all__ = ["CHECK_LEVELS", "CheckResult", "ParsedInstance", "check_dataset", "read_annotation_json",
           "parse_annotation", "check_image_files", "fill_missing_fields"]

CHECK_LEVELS = ("annotations", "header", "full")


class ParsedInstance(NamedTuple):
    """A usable (possibly repaired) annotation; ``polygons`` and ``rle`` are both None when it
    is box-only (has no segmentation)."""

    box: Tuple[float, float, float, float]  # xyxy, clipped to the image
    category_id: Any
    polygons: Optional[List[List[float]]]
    rle: Optional[dict]

    @property
    def has_mask(self) -> bool:
        """Whether the instance has a segmentation (polygons or RLE)."""
        return self.polygons is not None or self.rle is not None


class CheckResult(NamedTuple):
    """Output of :func:`check_dataset`."""

    data: Optional[Dict[str, Any]]  # the parsed JSON (None when it could not be read)
    report: DatasetReport
    usable: Dict[Any, List[Any]]  # image id -> ids of its annotations usable as targets


def check_dataset(ann_file: str, img_dir: str, name: str, images: str = "header") -> CheckResult:
    """Check an annotation file and (per ``images``) its image files; never raises on bad data.

    Args:
        ann_file: COCO json file.
        img_dir: directory the ``file_name`` entries are relative to.
        name: dataset name for the report.
        images: ``"annotations"`` (JSON only), ``"header"`` or ``"full"`` (see module doc).

    Returns:
        :class:`CheckResult`; ``report.raise_if_errors()`` turns errors into a DatasetError.
    """
    if images not in CHECK_LEVELS:
        raise ValueError(f"dataset check level must be one of {CHECK_LEVELS}, got {images!r}")
    report = DatasetReport(name, ann_file, img_dir)
    data = read_annotation_json(ann_file, report)
    if data is None:
        return CheckResult(None, report, {})
    report.num_images, report.num_annotations = len(data["images"]), len(data["annotations"])
    cat_ids = _check_categories(data["categories"], report)
    valid_images = _check_images(data["images"], report)
    usable = _check_annotations(data["annotations"], valid_images, cat_ids, report)
    report.num_images_unused = sum(1 for ids in usable.values() if not ids)  # box-only ones are usable
    if images != "annotations":
        check_image_files(valid_images, img_dir, report, full_decode=images == "full")
    return CheckResult(data, report, usable)


def read_annotation_json(ann_file: str, report: DatasetReport) -> Optional[Dict[str, Any]]:
    """Parse the JSON and its top-level keys; record errors and return None when unusable.

    A missing ``annotations`` list is taken as empty (image-info files of test sets have none).
    """
    if not os.path.isfile(ann_file):
        report.add(ERROR, "missing annotation file", ann_file, detail="no such file")
        return None
    try:
        with open(ann_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        report.add(ERROR, "invalid JSON", ann_file,
                   detail=f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
        return None
    except UnicodeDecodeError as exc:
        report.add(ERROR, "invalid JSON", ann_file, detail=f"not valid JSON (not UTF-8): {exc}")
        return None
    if not isinstance(data, dict):
        report.add(ERROR, "invalid JSON", ann_file, detail=f"top level is a {type(data).__name__}, "
                   "expected an object with 'images', 'annotations' and 'categories'")
        return None
    data.setdefault("annotations", [])
    for key in ("images", "annotations", "categories"):
        if key not in data:
            report.add(ERROR, "missing top-level key", ann_file, detail=f"no {key!r} list")
        elif not isinstance(data[key], list):
            report.add(ERROR, "missing top-level key", ann_file,
                       detail=f"{key!r} is a {type(data[key]).__name__}, expected a list")
    return None if report.errors else data


def _is_id(value: Any) -> bool:
    return type(value) in (int, str)  # exact types: JSON gives no subclasses, and bool is not an id


def _check_categories(categories: List[Any], report: DatasetReport) -> set:
    """Ids of the well-formed categories; malformed and duplicate ones are errors."""
    ids: set = set()
    for cat in categories:
        if not isinstance(cat, dict) or not _is_id(cat.get("id")) or "name" not in cat:
            report.add(ERROR, "malformed category", report.ann_file,
                       detail=f"{cat!r} needs an 'id' (integer or string) and a 'name'")
        elif cat["id"] in ids:
            report.add(ERROR, "duplicate category id", report.ann_file,
                       detail=f"category id {cat['id']} ({cat['name']!r}) appears more than once")
        else:
            ids.add(cat["id"])
    return ids


def _image_entry_problem(img: Any) -> str:
    if not isinstance(img, dict):
        return f"{img!r} is not an object"
    missing = [k for k in ("id", "file_name", "height", "width") if k not in img]
    if missing:
        return f"lacks keys {missing}"
    if not _is_id(img["id"]) or not isinstance(img["file_name"], str):
        return f"'id' {img['id']!r} or 'file_name' {img['file_name']!r} has the wrong type"
    for key in ("height", "width"):
        v = img[key]
        if not _is_number(v) or not math.isfinite(v) or v != int(v) or v <= 0:
            return f"{key} {v!r} is not a positive integer"
    return ""


def _check_images(images: List[Any], report: DatasetReport) -> Dict[Any, dict]:
    """Well-formed image entries by id (the first of duplicates); record the others."""
    valid: Dict[Any, dict] = {}
    for img in images:
        img_id = img.get("id") if isinstance(img, dict) and _is_id(img.get("id")) else None
        problem = _image_entry_problem(img)
        if problem:
            report.add(ERROR, "malformed image entry", report.ann_file, image_id=img_id, detail=problem)
        elif img_id in valid:
            report.add(ERROR, "duplicate image id", os.path.join(report.img_dir, img["file_name"]),
                       image_id=img_id, detail=f"id also used by {valid[img_id]['file_name']!r}")
        else:
            valid[img_id] = img
    return valid


def _annotation_refs_ok(ann: Any, images: Dict[Any, dict], cat_ids: set, seen: set,
                        report: DatasetReport) -> bool:
    """Record malformed, duplicate or dangling annotations; True when usable."""
    if not isinstance(ann, dict) or not _is_id(ann.get("id")):
        report.add(ERROR, "malformed annotation", report.ann_file,
                   detail=f"{str(ann)[:200]} has no 'id' (integer or string)")
        return False
    ann_id, img_id = ann["id"], ann.get("image_id")
    img = images.get(img_id) if _is_id(img_id) else None
    if ann_id in seen:
        file = os.path.join(report.img_dir, img["file_name"]) if img else report.ann_file
        report.add(ERROR, "duplicate annotation id", file, img_id, ann_id, "id used more than once")
        return False
    seen.add(ann_id)
    if img is None:
        report.add(ERROR, "annotation of a missing image", report.ann_file, img_id, ann_id,
                   f"image_id {img_id!r} is not among the (well-formed) images")
        return False
    cat = ann.get("category_id")
    if not _is_id(cat) or cat not in cat_ids:
        report.add(ERROR, "unknown category id", os.path.join(report.img_dir, img["file_name"]), img_id, ann_id,
                   f"category id {cat!r} is not among the categories {sorted(cat_ids, key=str)}")
        return False
    return True


def _check_annotations(anns: List[Any], images: Dict[Any, dict], cat_ids: set,
                       report: DatasetReport) -> Dict[Any, List[Any]]:
    """Check every annotation; return the usable annotation ids per image (box-only ones
    included) and record the box-only ones in ``report.box_only``."""
    usable: Dict[Any, List[Any]] = {img_id: [] for img_id in images}
    seen: set = set()
    for ann in anns:
        if not _annotation_refs_ok(ann, images, cat_ids, seen, report):
            continue
        img = images[ann["image_id"]]
        _check_coco_fields(ann, img, report)
        issues: List[Tuple[str, str, str]] = []
        size = (int(img["height"]), int(img["width"]))
        instance = parse_annotation(ann, size, issues)
        if instance is not None:
            usable[img["id"]].append(ann["id"])
        if _is_box_only(ann, instance, size):
            report.add_box_only(img["id"], ann["id"])
        for level, kind, detail in issues:
            report.add(level, kind, os.path.join(report.img_dir, img["file_name"]), img["id"],
                       ann["id"], detail)
    return usable


def _missing(ann: Dict[str, Any], key: str) -> bool:
    return ann.get(key) is None  # absent or null: filled in (see fill_missing_fields)


def _check_coco_fields(ann: Dict[str, Any], img: Dict[str, Any], report: DatasetReport) -> None:
    """Count the ``area`` / ``iscrowd`` that :func:`fill_missing_fields` fills in; an area that
    is not a finite number >= 0 is an error (pycocotools compares it with the area ranges), and so
    is an ``iscrowd`` other than 0 or 1 (pycocotools' evaluation takes ``int(iscrowd)``)."""
    for key in ("area", "iscrowd"):
        if _missing(ann, key):
            report.add_filled(key)
    area = ann.get("area")
    if area is not None and (not _is_number(area) or not math.isfinite(area) or area < 0):
        report.add(ERROR, "invalid area", os.path.join(report.img_dir, img["file_name"]), img["id"], ann["id"],
                   f"area {area!r} is not a number >= 0 (pixels); fix it, or remove the key to have it "
                   "computed from the segmentation (or the box)")
    crowd = ann.get("iscrowd")
    if crowd is not None and not (isinstance(crowd, bool) or (_is_number(crowd) and crowd in (0, 1))):
        report.add(ERROR, "invalid iscrowd", os.path.join(report.img_dir, img["file_name"]), img["id"], ann["id"],
                   f"iscrowd {crowd!r} is not 0 or 1; fix it, or remove the key to have it set to 0")


def fill_missing_fields(data: Dict[str, Any]) -> Dict[str, Any]:
    """``data`` with ``area`` and ``iscrowd`` set on every annotation lacking them (or null).

    The area is that of the segmentation (:func:`segmentation_area`, at the image size) or,
    without a usable one, of the box (``w * h``); ``iscrowd`` is 0. The data must have passed
    :func:`check_dataset` without errors.

    Args:
        data: a parsed COCO dict; it is not modified.

    Returns:
        ``data`` itself when nothing is missing, else a shallow copy whose annotations that
        lacked a field are copies with it.
    """
    anns = data["annotations"]
    if not any(_missing(a, "area") or _missing(a, "iscrowd") for a in anns):
        return data
    sizes = {img["id"]: (int(img["height"]), int(img["width"])) for img in data["images"]}
    out = dict(data)
    out["annotations"] = [_with_fields(a, sizes.get(a.get("image_id")))
                          if _missing(a, "area") or _missing(a, "iscrowd") else a for a in anns]
    return out


def _with_fields(ann: Dict[str, Any], size: Optional[Tuple[int, int]]) -> Dict[str, Any]:
    ann = dict(ann)
    if _missing(ann, "iscrowd"):
        ann["iscrowd"] = 0
    if _missing(ann, "area"):
        area = None if size is None else segmentation_area(ann.get("segmentation"), size)
        if area is None:
            _, _, w, h = ann["bbox"]
            area = float(max(w, 0) * max(h, 0))
        ann["area"] = area
    return ann


def _is_box_only(ann: Dict[str, Any], instance: Optional[ParsedInstance], size: Tuple[int, int]) -> bool:
    """A valid box and no segmentation (crowd annotations included)."""
    if not has_no_segmentation(ann.get("segmentation")):
        return False
    if instance is not None:
        return True
    return bool(ann.get("iscrowd", 0)) and _parse_box(ann.get("bbox"), size, None) is not None


def parse_annotation(ann: Dict[str, Any], size: Tuple[int, int], issues: Issues = None
                     ) -> Optional[ParsedInstance]:
    """Turn one annotation into a training target, repairing what is safe.

    Args:
        ann: COCO annotation (its ids and category already checked).
        size: image ``(height, width)`` from the JSON.
        issues: list to append ``(level, kind, detail)`` findings to; None records nothing.

    Returns:
        The instance (its box and polygon parts clipped to the image; box-only, with
        ``polygons`` and ``rle`` None, when the annotation has no segmentation), or None when
        it is a crowd region or has to be dropped (or is an error).
    """
    crowd = bool(ann.get("iscrowd", 0))
    box_issues: Issues = [] if issues is not None else None
    seg_issues: Issues = [] if issues is not None else None
    box = _parse_box(ann.get("bbox"), size, box_issues)
    box_only = has_no_segmentation(ann.get("segmentation"))
    seg = None if box_only else parse_segmentation(ann.get("segmentation"), size, seg_issues)
    if seg is not None and box is not None and not crowd:
        seg = place_segmentation(seg, box, size, seg_issues)
    if box_issues or seg_issues:
        # Repairs are counted for annotations that are targets (and once per dropped one).
        issues.extend(i for i in box_issues if i[0] == ERROR or not crowd)
        issues.extend(i for i in seg_issues if i[0] == ERROR or (not crowd and box is not None))
    if crowd or box is None or (seg is None and not box_only):
        return None
    if seg is None:
        return ParsedInstance(box, ann["category_id"], None, None)
    return ParsedInstance(box, ann["category_id"], seg.polygons, seg.rle)


def _parse_box(bbox: Any, size: Tuple[int, int], issues: Issues) -> Optional[Tuple[float, ...]]:
    """xywh -> xyxy clipped to the image, or None (malformed, non-finite, empty, outside)."""
    try:
        total = sum(bbox) if isinstance(bbox, (list, tuple)) and len(bbox) == 4 else None
    except TypeError:  # not numbers
        total = None
    if total is None:
        _note(issues, ERROR, "malformed box", f"bbox {bbox!r} is not [x, y, width, height]")
        return None
    x, y, bw, bh = (float(v) for v in bbox)
    if not math.isfinite(total):
        _note(issues, ERROR, "non-finite box", f"bbox {list(bbox)} holds NaN or infinity")
        return None
    if bw <= 0 or bh <= 0:
        _note(issues, REPAIRED, "annotation dropped (empty box)", f"bbox {list(bbox)} has a size <= 0")
        return None
    h, w = size
    box = (min(max(x, 0.0), w), min(max(y, 0.0), h), min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h))
    if box[2] <= box[0] or box[3] <= box[1]:
        _note(issues, REPAIRED, "annotation dropped (box outside the image)",
              f"bbox {list(bbox)} lies outside the {w}x{h} image")
        return None
    if box != (x, y, x + bw, y + bh):
        _note(issues, REPAIRED, "box clipped", f"bbox {list(bbox)} clipped to the {w}x{h} image")
    return box
