"""What a dataset check found: findings, the per-dataset report and :class:`DatasetError`.

Every finding has one of three levels:

* ``"error"``: the data cannot be used as it is (training must not start);
* ``"repaired"``: fixed safely while loading (a box clipped, a degenerate polygon part or
  annotation dropped), counted in the summary line;
* ``"converted"``: an image that :func:`~maskrcnn.data.image_io.read_image_rgb` converts
  (16-bit, CMYK, palette, grayscale, alpha, EXIF orientation): information only.

Box-only annotations (a valid box, no segmentation) are none of these: they are counted
apart (:attr:`DatasetReport.box_only`), and the summary line says what becomes of them (see
:attr:`DatasetReport.masks_required`).

Annotations without ``area`` or ``iscrowd`` are none of these either: the fields are filled in
(in memory) and counted in :attr:`DatasetReport.filled`.

See :mod:`maskrcnn.data.datasets.check` for which problem gets which level.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ...utils.errors import DataError

__all__ = ["Finding", "DatasetReport", "DatasetError", "ERROR", "REPAIRED", "CONVERTED", "Issues", "note"]

ERROR, REPAIRED, CONVERTED = "error", "repaired", "converted"
LEVELS = (ERROR, REPAIRED, CONVERTED)
# Findings kept in full per non-error level (all are counted); errors are all kept.
DETAIL_LIMIT = 1000
MESSAGE_LIMIT = 20  # problems listed in a DatasetError message
BOX_ONLY_IDS_SHOWN = 5  # box-only annotation ids named in the summary line
_PLURALS = (("box ", "boxes "), ("annotation ", "annotations "), ("polygon part ", "polygon parts "))

#: Findings of one annotation, ``(level, kind, detail)``; None: do not record.
Issues = Optional[List[Tuple[str, str, str]]]


def note(issues: Issues, level: str, kind: str, detail: str) -> None:
    """Append one finding to ``issues`` (nothing when it is None)."""
    if issues is not None:
        issues.append((level, kind, detail))


@dataclass(frozen=True)
class Finding:
    """One problem (or conversion) with where it is.

    Attributes:
        level: ``"error"``, ``"repaired"`` or ``"converted"``.
        kind: short label, e.g. ``"missing image file"``, ``"box clipped"``, ``"CMYK"``.
        file: the image file concerned, else the annotation file.
        image_id: the image's ``id`` in the JSON, if any.
        ann_id: the annotation's ``id``, if any.
        detail: what exactly is wrong.
    """

    level: str
    kind: str
    file: str
    image_id: Any = None
    ann_id: Any = None
    detail: str = ""

    def __str__(self) -> str:
        if self.ann_id is not None:
            image = f"image id {self.image_id}, " if self.image_id is not None else ""
            where = f"annotation id {self.ann_id} ({image}{self.file})"
        elif self.image_id is not None:
            where = f"image id {self.image_id} ({self.file})"
        else:
            where = self.file
        return f"{self.kind}: {where}" + (f": {self.detail}" if self.detail else "")


def _count_label(kind: str, n: int) -> str:
    if n != 1:
        for singular, plural in _PLURALS:
            if kind.startswith(singular):
                kind = plural + kind[len(singular):]
                break
    return f"{n} {kind}"


class DatasetReport:
    """Findings of one dataset, with exact counts per level and kind.

    Args:
        name: dataset name.
        ann_file: its annotation file.
        img_dir: its image directory.
    """

    def __init__(self, name: str, ann_file: str, img_dir: str) -> None:
        self.name, self.ann_file, self.img_dir = name, ann_file, img_dir
        self.num_images = 0
        self.num_annotations = 0
        self.num_images_unused = 0  # well-formed images without a usable annotation
        #: image id -> ids of its box-only annotations (valid box, no segmentation), in file order
        self.box_only: Dict[Any, List[Any]] = {}
        self._box_only_ids: List[Any] = []  # the same ids, all in file order
        #: how the summary describes box-only annotations: None (a check on its own: what each
        #: model does with them), False (kept as box targets), True (their images left out)
        self.masks_required: Optional[bool] = None
        #: ``"area"`` / ``"iscrowd"`` -> how many annotations lack it (filled in when loading)
        self.filled: Counter = Counter()
        self.counts: Dict[str, Counter] = {level: Counter() for level in LEVELS}
        self.findings: Dict[str, List[Finding]] = {level: [] for level in LEVELS}

    def add(self, level: str, kind: str, file: str, image_id: Any = None, ann_id: Any = None,
            detail: str = "") -> None:
        """Record one finding (kept in full for errors, and up to DETAIL_LIMIT otherwise)."""
        self.counts[level][kind] += 1
        if level == ERROR or len(self.findings[level]) < DETAIL_LIMIT:
            self.findings[level].append(Finding(level, kind, file, image_id, ann_id, detail))

    @property
    def errors(self) -> List[Finding]:
        """Every error found."""
        return self.findings[ERROR]

    def num(self, level: str) -> int:
        """How many findings of ``level`` there were (the lists may be truncated, not this)."""
        return sum(self.counts[level].values())

    def add_box_only(self, image_id: Any, ann_id: Any) -> None:
        """Record one box-only annotation (a valid box, no segmentation)."""
        self.box_only.setdefault(image_id, []).append(ann_id)
        self._box_only_ids.append(ann_id)

    def add_filled(self, key: str) -> None:
        """Count one annotation without ``key`` (``"area"`` or ``"iscrowd"``): filled in when loading."""
        self.filled[key] += 1

    def _filled_part(self) -> str:
        parts = []
        if self.filled["area"]:
            n = self.filled["area"]
            parts.append(f"{n} missing area{'s' if n != 1 else ''} computed (from the segmentation, else the box)")
        if self.filled["iscrowd"]:
            parts.append(f"{self.filled['iscrowd']} missing iscrowd set to 0")
        return ", ".join(parts)

    @property
    def num_box_only(self) -> int:
        """How many box-only annotations there are (in ``len(self.box_only)`` images)."""
        return len(self._box_only_ids)

    def box_only_ids(self, limit: int = BOX_ONLY_IDS_SHOWN) -> str:
        """The first ``limit`` box-only annotation ids in file order, e.g. ``"4, 7, 9 and 12 more"``."""
        ids = self._box_only_ids
        text = ", ".join(str(a) for a in ids[:limit])
        return text + (f" and {len(ids) - limit} more" if len(ids) > limit else "")

    def _box_only_part(self) -> str:
        n, m = self.num_box_only, len(self.box_only)
        what = (f"{n} box-only annotation{'s' if n != 1 else ''} (no segmentation) in {m} "
                f"image{'s' if m != 1 else ''}")
        if self.masks_required is None:
            return (f"{what}, annotation ids {self.box_only_ids()}: box targets for Faster R-CNN "
                    "(MODEL.MASK_ON False); Mask R-CNN leaves those images out")
        if not self.masks_required:
            return f"{what}: kept as box targets without masks"
        return (f"{m} image{'s' if m != 1 else ''} left out (training and evaluation): "
                f"{n} of {'their' if m != 1 else 'its'} annotations (ids {self.box_only_ids()}) "
                "have no segmentation, which Mask R-CNN (MODEL.MASK_ON True) needs; add segmentations "
                "to them, or set MODEL.MASK_ON False to train a box-only detector (Faster R-CNN)")

    def summary(self) -> str:
        """One line: ``name: N images, M annotations; U images without usable annotations
        (...); B box-only annotations (...); A missing areas computed (...); E errors;
        repaired: ...; converted: ...``."""
        parts = [f"{self.name}: {self.num_images} images, {self.num_annotations} annotations"]
        not_problems = 1  # parts that are no problem: counts, unused images, kept box-only ones
        if self.num_images_unused:
            n = self.num_images_unused
            parts.append(f"{n} image{'s' if n != 1 else ''} without usable annotations (training leaves "
                         f"{'them' if n != 1 else 'it'} out)")
            not_problems += 1
        if self.box_only:
            parts.append(self._box_only_part())
            not_problems += int(not self.masks_required)
        if self.filled:
            parts.append(self._filled_part())
            not_problems += 1
        if self.errors:
            parts.append(f"{len(self.errors)} error{'s' if len(self.errors) != 1 else ''}")
        for level in (REPAIRED, CONVERTED):
            if self.counts[level]:
                items = sorted(self.counts[level].items(), key=lambda kv: (-kv[1], kv[0]))
                parts.append(f"{level}: " + ", ".join(_count_label(k, n) for k, n in items))
        if len(parts) == not_problems:
            parts.append("no problems")
        return "; ".join(parts)

    def details(self, level: str, limit: Optional[int] = None) -> List[str]:
        """``"level: finding"`` lines (at most ``limit``), and how many more there were."""
        found = self.findings[level]
        shown = found if limit is None else found[:limit]
        lines = [f"{level}: {f}" for f in shown]
        more = self.num(level) - len(shown)
        if more > 0:
            lines.append(f"... and {more} more {level}")
        return lines

    def raise_if_errors(self) -> None:
        """Raise :class:`DatasetError` if anything cannot be used."""
        if self.errors:
            raise DatasetError(self)


class DatasetError(DataError, ValueError):
    """A dataset has problems that must be fixed before training or evaluation.

    The message lists the first problems (each with its annotation / image id and file),
    their total number and what to do. ``report`` holds every finding.
    """

    def __init__(self, report: DatasetReport) -> None:
        self.report = report
        errors = report.errors
        lines = [f"dataset {report.name!r} has {len(errors)} problem{'s' if len(errors) != 1 else ''} "
                 f"to fix before it can be used (annotations: {report.ann_file}, images: {report.img_dir}):"]
        lines += [f"  - {e}" for e in errors[:MESSAGE_LIMIT]]
        if len(errors) > MESSAGE_LIMIT:
            lines.append(f"  ... and {len(errors) - MESSAGE_LIMIT} more ({len(errors)} in total)")
        lines.append(f"Summary: {report.summary()}")
        lines.append("Fix the annotation file or the image files (or remove the affected entries from "
                     "the JSON), then run `python tools/check_dataset.py --config-file <your config>` "
                     "to list every problem and confirm the dataset is clean.")
        super().__init__("\n".join(lines))
