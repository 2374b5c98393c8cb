"""COCO-format instance segmentation dataset.

Construction checks the data (see :mod:`maskrcnn.data.datasets.check`): problems that
cannot be repaired raise one :class:`DatasetError` listing them; safe repairs and image
conversions are logged in one summary line per dataset.

Box-only annotations (a valid box, no segmentation: detection-only COCO files, Pascal VOC
without ``SegmentationObject``) are targets without a mask when the model does not need masks
(``require_masks=False``, Faster R-CNN). When it does (Mask R-CNN), the images holding one are
left out of the split, for training and for evaluation alike, and the summary line says so
(how many, the first annotation ids, what to do): a Mask R-CNN is then evaluated, boxes and
masks, on the images whose annotations all have segmentations. Why not keep them for
evaluation: pycocotools' segm evaluation raises on ground truth without a segmentation, and a
box in its place would score masks against rectangles. When nothing annotated is left, :class:`MissingMasksError` is raised.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from maskrcnn.data.datasets.check import CHECK_LEVELS, ParsedInstance, check_dataset, fill_missing_fields
from maskrcnn.data.datasets.check import parse_annotation
from maskrcnn.data.datasets.report import DatasetError, DatasetReport
from maskrcnn.data.image_io import ImageFileNotFoundError, read_image_rgb
from maskrcnn.structures.bounding_box import BoxList
from maskrcnn.structures.segmentation_mask import InstanceMasks
from maskrcnn.utils.errors import DataError

__all__ = ["COCODataset", "DatasetError", "MissingMasksError", "load_coco_json", "read_image_rgb"]

logger = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor, Optional[BoxList]], Tuple[torch.Tensor, Optional[BoxList]]]

if TYPE_CHECKING:
    from pycocotools.coco import COCO


class _Index:
    """The tables of ``pycocotools.coco.COCO.createIndex`` (``dataset``, ``anns``, ``imgs``,
    ``cats``, ``imgToAnns``, ``catToImgs``), for machines without pycocotools: enough to train;
    COCO evaluation needs pycocotools."""

    def __init__(self, data: Dict[str, Any]) -> None:
        self.dataset = data
        self.anns = {a["id"]: a for a in data.get("annotations", [])}
        self.imgs = {i["id"]: i for i in data.get("images", [])}
        self.cats = {c["id"]: c for c in data.get("categories", [])}
        self.imgToAnns: Dict[Any, list] = defaultdict(list)
        self.catToImgs: Dict[Any, list] = defaultdict(list)
        for a in data.get("annotations", []):
            self.imgToAnns[a["image_id"]].append(a)
            self.catToImgs[a["category_id"]].append(a["image_id"])


def _index(data: Dict[str, Any]) -> "COCO":
    """The index of checked ``data`` that training and evaluation share, with the ``area`` /
    ``iscrowd`` that pycocotools' evaluation reads filled in where the file lacks them."""
    data = fill_missing_fields(data)
    try:
        from pycocotools.coco import COCO
    except ImportError:
        return _Index(data)  # type: ignore[return-value]
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_json(ann_file: str, img_dir: str = "") -> COCO:
    """Load and check a COCO annotation file (the JSON only; image files are not opened).

    Args:
        ann_file: path of the json file.
        img_dir: image directory, only used to name files in error messages.

    Returns:
        An indexed ``pycocotools.coco.COCO`` object.

    Raises:
        ImageFileNotFoundError: the file does not exist (also a ValueError).
        DatasetError: (a ValueError) invalid JSON or bad entries; the message lists them.
    """
    if not os.path.isfile(ann_file):
        raise ImageFileNotFoundError(f"annotation file not found: {ann_file}")
    result = check_dataset(ann_file, img_dir, os.path.basename(ann_file), images="annotations")
    result.report.raise_if_errors()
    return _index(result.data)


class MissingMasksError(DataError, ValueError):
    """Masks are required (Mask R-CNN) but no annotated image is left once the images with
    box-only annotations are left out; the message names the ids and what to do."""


def instances_to_target(instances: List[ParsedInstance], size: Tuple[int, int],
                        cat_map: Dict[Any, int]) -> BoxList:
    """BoxList of ``(N, 4)`` xyxy boxes with fields "labels" (``(N,)`` int64, ``cat_map[category_id]``)
    and, when every instance has a segmentation, "masks" (an ``InstanceMasks``). An image with
    a box-only instance (kept only when masks are not required) has no "masks" field."""
    boxes = torch.tensor([inst.box for inst in instances], dtype=torch.float32).reshape(-1, 4)
    target = BoxList(boxes, size)
    labels = [cat_map[inst.category_id] for inst in instances]
    target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    if all(inst.has_mask for inst in instances):
        masks = InstanceMasks([inst.polygons for inst in instances], size,
                              rles=[inst.rle for inst in instances])
        target.add_field("masks", masks)
    return target


def _log_summary(report: DatasetReport) -> None:
    """The one summary line: a warning when something was repaired or images are left out
    for want of masks, else info."""
    left_out = bool(report.masks_required and report.box_only)
    level = logging.WARNING if report.num("repaired") or left_out else logging.INFO
    logger.log(level, "%s (annotations %s)", report.summary(), report.ann_file)


def _without_images(data: Dict[str, Any], left_out: set) -> Dict[str, Any]:
    """A shallow copy of the COCO dict without the images ``left_out`` and their annotations."""
    out = dict(data)
    out["images"] = [i for i in data["images"] if i["id"] not in left_out]
    out["annotations"] = [a for a in data["annotations"] if a["image_id"] not in left_out]
    return out


def _check_masks_left(report: DatasetReport, usable: Dict[Any, List[Any]]) -> None:
    """Raise :class:`MissingMasksError` when masks are required and only box-only images had
    annotations."""
    if any(ids for img, ids in usable.items() if img not in report.box_only):
        return
    n = report.num_box_only
    raise MissingMasksError(
        f"dataset {report.name!r} ({report.ann_file}): no annotated image is left for Mask R-CNN "
        f"(MODEL.MASK_ON True): every image with annotations has one without a segmentation "
        f"({n} box-only annotation{'s' if n != 1 else ''} in {len(report.box_only)} "
        f"image{'s' if len(report.box_only) != 1 else ''}, ids {report.box_only_ids()}). Set "
        "MODEL.MASK_ON False to train and evaluate Faster R-CNN on these boxes, or add segmentations "
        "(polygons or RLE) to the annotations.")


class COCODataset(torch.utils.data.Dataset):
    """COCO-format dataset yielding ``(image_uint8_CHW, target, info)``.

    The annotations are checked on construction (and the image files, per ``check``):
    errors raise :class:`DatasetError` (among them a segmentation with no area in the image or
    none inside its box: no target has an all-zero mask inside its box); boxes and polygon
    parts are clipped to the image, and degenerate polygon parts, empty boxes and annotations
    whose segmentation is given but empty or degenerate are left out of the targets (train and
    test alike), as are crowd annotations. Annotations without a segmentation are box-only:
    targets without a mask, or, with ``require_masks``, their images are left out (train and
    test alike, ``coco`` included; see the module docstring). :meth:`get_target` builds the
    targets with the same rules (:func:`~maskrcnn.data.datasets.check.parse_annotation`).
    Annotations without ``area`` / ``iscrowd`` get them in ``coco`` (the area of the
    segmentation or box, 0; :func:`~maskrcnn.data.datasets.check.fill_missing_fields`), so
    that COCO evaluation can run; the file is not changed. One summary line is logged. In
    training with ``filter_empty``, images left without instances are removed.

    Args:
        ann_file: COCO json annotation file.
        img_dir: directory the images' ``file_name`` entries are relative to.
        name: dataset name (for logs and evaluation).
        transforms: callable ``(image, target) -> (image, target)``.
        is_train: training mode (enables empty-image filtering).
        filter_empty: in training, drop images without any usable instance.
        check: ``"annotations"`` (JSON only), ``"header"`` (also open every image's header:
            missing files, sizes, modes) or ``"full"`` (also decode every image).
        require_masks: the model needs a mask per instance (Mask R-CNN: ``MODEL.MASK_ON``):
            images with box-only annotations are left out; False keeps them as box targets.

    Raises:
        ImageFileNotFoundError: ``ann_file`` does not exist.
        DatasetError: (a ValueError) the data has problems that cannot be repaired.
        MissingMasksError: (a ValueError) ``require_masks`` and only box-only images were annotated.
    """

    def __init__(self, ann_file: str, img_dir: str, name: str, transforms: Optional[Transform] = None,
                 is_train: bool = True, filter_empty: bool = True, check: str = "header",
                 require_masks: bool = True) -> None:
        self.ann_file = os.fspath(ann_file)
        self.img_dir = os.fspath(img_dir)
        self.name = name
        self.transforms = transforms
        self.is_train = is_train
        if check not in CHECK_LEVELS:
            raise ValueError(f"check must be one of {CHECK_LEVELS} (DATASETS.CHECK), got {check!r}")
        if not os.path.isfile(self.ann_file):
            raise ImageFileNotFoundError(f"dataset {name!r}: annotation file not found: {self.ann_file}")
        result = check_dataset(self.ann_file, self.img_dir, name, images=check)
        result.report.raise_if_errors()
        result.report.masks_required = bool(require_masks)
        _log_summary(result.report)
        self.require_masks = bool(require_masks)
        data = result.data
        if require_masks and result.report.box_only:
            _check_masks_left(result.report, result.usable)
            data = _without_images(data, set(result.report.box_only))
        self.coco = _index(data)
        cat_ids = sorted(self.coco.cats.keys())
        self.category_id_to_contiguous: Dict[int, int] = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.contiguous_to_category_id: Dict[int, int] = {i: c for c, i in self.category_id_to_contiguous.items()}
        self.class_names: List[str] = ["__background__"] + [str(self.coco.cats[c]["name"]) for c in cat_ids]
        self.num_classes: int = len(cat_ids)
        self._kept_ann_ids = result.usable
        ids = sorted(self.coco.imgs.keys())
        if is_train and filter_empty:
            kept = [i for i in ids if self._kept_ann_ids.get(i)]
            logger.info("%s: removed %d of %d images without usable annotations",
                        name, len(ids) - len(kept), len(ids))
            ids = kept
        self.ids: List[int] = ids

    def __len__(self) -> int:
        return len(self.ids)

    def get_img_info(self, index: int) -> Dict[str, Any]:
        """``{"id", "height", "width", "file_name"}`` of image ``index`` from the json."""
        img = self.coco.imgs[self.ids[index]]
        return {"id": img["id"], "height": int(img["height"]), "width": int(img["width"]),
                "file_name": img["file_name"]}

    def get_target(self, index: int) -> BoxList:
        """Ground truth of image ``index`` at its original size, without decoding the image."""
        info = self.get_img_info(index)
        size = (info["height"], info["width"])
        anns = [self.coco.anns[a] for a in self._kept_ann_ids.get(info["id"], [])]
        instances = [parse_annotation(a, size) for a in anns]
        return instances_to_target([i for i in instances if i is not None], size,
                                   self.category_id_to_contiguous)

    def load_image(self, index: int) -> torch.Tensor:
        """Decode image ``index`` to a ``(3, H, W)`` uint8 RGB tensor at its original size."""
        info = self.get_img_info(index)
        path = os.path.join(self.img_dir, info["file_name"])
        arr = read_image_rgb(path)
        if arr.shape[:2] != (info["height"], info["width"]):
            raise ValueError(
                f"{self.name}: image id {info['id']} ({path}) decodes to (h, w) = {arr.shape[:2]} "
                f"after EXIF orientation, but {self.ann_file} says "
                f"({info['height']}, {info['width']})")
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, BoxList, Dict[str, Any]]:
        """Return ``(image (3, H', W') uint8 RGB, target BoxList at (H', W'), info)``.

        ``info`` holds ``image_id``, ``height``, ``width`` (original, from the json)
        and ``file_name``.
        """
        info = self.get_img_info(index)
        image = self.load_image(index)
        target = self.get_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target, {"image_id": info["id"], "height": info["height"],
                               "width": info["width"], "file_name": info["file_name"]}

    def __repr__(self) -> str:
        return (f"COCODataset(name={self.name!r}, images={len(self)}, classes={self.num_classes}, "
                f"train={self.is_train})")
