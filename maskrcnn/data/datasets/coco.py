"""COCO-format instance segmentation dataset."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import Counter
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from pycocotools.coco import COCO

from maskrcnn.data.image_io import ImageFileNotFoundError, read_image_rgb
from maskrcnn.structures.bounding_box import BoxList
from maskrcnn.structures.segmentation_mask import InstanceMasks

__all__ = ["COCODataset", "load_coco_json", "read_image_rgb"]

logger = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor, Optional[BoxList]], Tuple[torch.Tensor, Optional[BoxList]]]


class _Instance(NamedTuple):
    box: Tuple[float, float, float, float]  # xyxy, clipped to the image
    label: int
    polygons: Optional[List[List[float]]]
    rle: Optional[dict]


def load_coco_json(ann_file: str) -> COCO:
    """Load a COCO annotation file with pycocotools, with clear errors.

    Args:
        ann_file: path of the json file.

    Returns:
        An indexed ``pycocotools.coco.COCO`` object.

    Raises:
        ImageFileNotFoundError: the file does not exist (also a ValueError).
        ValueError: the file is not valid JSON or lacks the COCO structure.
    """
    if not os.path.isfile(ann_file):
        raise ImageFileNotFoundError(f"annotation file not found: {ann_file}")
    try:
        with open(ann_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"annotation file {ann_file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"annotation file {ann_file}: expected a JSON object with an 'images' list")
    if not isinstance(data.get("categories"), list):
        raise ValueError(f"annotation file {ann_file}: expected a 'categories' list")
    data.setdefault("annotations", [])
    _validate_structure(data, ann_file)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _validate_structure(data: Dict[str, Any], ann_file: str) -> None:
    """Check image entries, ids and annotation references; raise ValueError on problems."""
    image_ids = set()
    for img in data["images"]:
        img_id = img.get("id") if isinstance(img, dict) else None
        missing = [k for k in ("id", "height", "width", "file_name") if not isinstance(img, dict) or k not in img]
        if missing:
            raise ValueError(f"annotation file {ann_file}: image id {img_id} lacks keys {missing}")
        if img_id in image_ids:
            raise ValueError(f"annotation file {ann_file}: duplicate image id {img_id}")
        image_ids.add(img_id)
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise ValueError(f"annotation file {ann_file}: category entry {cat!r} lacks 'id' or 'name'")
    cat_ids = {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        if ann.get("image_id") not in image_ids:
            raise ValueError(f"annotation file {ann_file}: annotation id {ann.get('id')} refers to "
                             f"unknown image id {ann.get('image_id')}")
        if ann.get("category_id") not in cat_ids:
            raise ValueError(f"annotation file {ann_file}: annotation id {ann.get('id')} (image id "
                             f"{ann.get('image_id')}) has category id {ann.get('category_id')} not "
                             f"among the categories {sorted(cat_ids)}")


def _valid_polygon_parts(seg: List[Any], drops: Counter) -> List[List[float]]:
    """Keep polygon parts (flat coordinate lists) with an even number (>= 6) of coordinates."""
    parts = []
    for part in seg:
        if isinstance(part, (list, tuple)) and len(part) >= 6 and len(part) % 2 == 0:
            parts.append(part)
        else:
            drops["malformed polygon parts"] += 1
    return parts


def _parse_segmentation(seg: Any, size: Tuple[int, int], drops: Counter
                        ) -> Tuple[Optional[List[List[float]]], Optional[dict]]:
    """Return ``(polygons, rle)`` for one annotation; both None when unusable."""
    if isinstance(seg, list):
        parts = _valid_polygon_parts(seg, drops)
        return (parts or None), None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if [int(v) for v in seg["size"]] != [size[0], size[1]]:
            drops["RLE size differs from the image size"] += 1
            return None, None
        return None, seg
    return None, None


def _parse_annotation(ann: Dict[str, Any], size: Tuple[int, int], cat_map: Dict[int, int],
                      drops: Counter) -> Optional[_Instance]:
    """Turn one COCO annotation into an instance, or None when it must be dropped."""
    if ann.get("iscrowd", 0):
        drops["crowd"] += 1
        return None
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or bbox[2] <= 0 or bbox[3] <= 0:
        drops["empty or invalid boxes"] += 1
        return None
    h, w = size
    x, y, bw, bh = (float(v) for v in bbox)
    box = (min(max(x, 0.0), w), min(max(y, 0.0), h), min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h))
    if box[2] <= box[0] or box[3] <= box[1]:
        drops["empty or invalid boxes"] += 1
        return None
    polygons, rle = _parse_segmentation(ann.get("segmentation"), size, drops)
    if polygons is None and rle is None:
        drops["instances without a valid segmentation"] += 1
        return None
    return _Instance(box, cat_map[ann["category_id"]], polygons, rle)


def instances_to_target(instances: List[_Instance], size: Tuple[int, int]) -> BoxList:
    """Build a BoxList with "labels" and "masks" fields from parsed instances."""
    boxes = torch.tensor([inst.box for inst in instances], dtype=torch.float32).reshape(-1, 4)
    target = BoxList(boxes, size)
    target.add_field("labels", torch.tensor([inst.label for inst in instances], dtype=torch.int64))
    masks = InstanceMasks([inst.polygons for inst in instances], size,
                          rles=[inst.rle for inst in instances])
    target.add_field("masks", masks)
    return target


class COCODataset(torch.utils.data.Dataset):
    """COCO-format dataset yielding ``(image_uint8_CHW, target, info)``.

    Crowd annotations, boxes of non-positive size and instances without a valid
    segmentation are left out of the targets (train and test alike). In
    training with ``filter_empty``, images left without instances are removed.

    Args:
        ann_file: COCO json annotation file.
        img_dir: directory the images' ``file_name`` entries are relative to.
        name: dataset name (for logs and evaluation).
        transforms: callable ``(image, target) -> (image, target)``.
        is_train: training mode (enables empty-image filtering).
        filter_empty: in training, drop images without any usable instance.
    """

    def __init__(self, ann_file: str, img_dir: str, name: str, transforms: Optional[Transform] = None,
                 is_train: bool = True, filter_empty: bool = True) -> None:
        self.ann_file = os.fspath(ann_file)
        self.img_dir = os.fspath(img_dir)
        self.name = name
        self.transforms = transforms
        self.is_train = is_train
        self.coco = load_coco_json(self.ann_file)
        cat_ids = sorted(self.coco.cats.keys())
        self.category_id_to_contiguous: Dict[int, int] = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.contiguous_to_category_id: Dict[int, int] = {i: c for c, i in self.category_id_to_contiguous.items()}
        self.class_names: List[str] = ["__background__"] + [str(self.coco.cats[c]["name"]) for c in cat_ids]
        self.num_classes: int = len(cat_ids)
        self._kept_ann_ids = self._scan_annotations()
        ids = sorted(self.coco.imgs.keys())
        if is_train and filter_empty:
            kept = [i for i in ids if self._kept_ann_ids.get(i)]
            logger.info("%s: removed %d of %d images without usable annotations",
                        name, len(ids) - len(kept), len(ids))
            ids = kept
        self.ids: List[int] = ids

    def _scan_annotations(self) -> Dict[int, List[int]]:
        """Parse every annotation once; return the usable annotation ids per image."""
        drops: Counter = Counter()
        kept: Dict[int, List[int]] = {}
        for img_id, anns in self.coco.imgToAnns.items():
            img = self.coco.imgs[img_id]
            size = (int(img["height"]), int(img["width"]))
            kept[img_id] = [a["id"] for a in anns
                            if _parse_annotation(a, size, self.category_id_to_contiguous, drops)]
        malformed = {k: v for k, v in drops.items() if k != "crowd"}
        if malformed:
            logger.warning("%s (%s): dropped %s", self.name, self.ann_file,
                           ", ".join(f"{v} {k}" for k, v in sorted(malformed.items())))
        return kept

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
        drops: Counter = Counter()
        anns = [self.coco.anns[a] for a in self._kept_ann_ids.get(info["id"], [])]
        instances = [_parse_annotation(a, size, self.category_id_to_contiguous, drops) for a in anns]
        return instances_to_target([i for i in instances if i is not None], size)

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
