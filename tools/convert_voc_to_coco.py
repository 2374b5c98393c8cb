#!/usr/bin/env python
"""Pascal VOC -> COCO JSON, for training and evaluating on VOC with this project:

    python tools/convert_voc_to_coco.py VOC_ROOT --split train --out datasets/voc/voc_2012_train.json \
        [--classes voc|found] [--difficult crowd|skip|keep] [--masks-only]

``VOC_ROOT`` is one year's folder (e.g. ``VOCdevkit/VOC2012``) holding ``Annotations/*.xml``,
``ImageSets/Main/<split>.txt``, ``JPEGImages/`` and, for the segmented images,
``SegmentationObject/*.png``. Use ``VOC_ROOT/JPEGImages`` as the dataset's ``IMG_DIR``.

Decisions (each is written into the JSON's ``info``):

* Categories: ids 1..20 in VOC's canonical order (aeroplane ... tvmonitor), so files of
  different years and splits concatenate; ``--classes found`` uses the names found in the
  split's XML files instead, sorted, ids 1..K (for VOC-format data with other classes).
* Boxes: VOC's 1-based inclusive pixel indices become continuous xyxy without "+1"
  (``x0 = xmin - 1``, ``x1 = xmax``), as detectron2 reads them.
* ``difficult`` objects: ``crowd`` (default) writes them with ``iscrowd: 1``: never a
  training target, and COCO evaluation ignores detections on them, as VOC's evaluation
  ignores difficult objects; ``skip`` leaves them out; ``keep`` makes them normal objects.
* Masks: where ``SegmentationObject/<id>.png`` exists (a palette PNG whose pixel value k
  is the k-th object of the XML; 0 background, 255 the void border, counted as not the
  object) each object gets its mask as compressed RLE. Elsewhere objects are box-only: no
  ``segmentation`` key (a box is not a mask), ``area`` the box's; so is an object without a
  pixel in its PNG. Train Faster R-CNN (``MODEL.MASK_ON False``) on any split: the loader
  keeps box-only annotations as box targets. Mask R-CNN leaves the images with box-only
  objects out (training and evaluation) and says so; ``--masks-only`` writes only the images
  that have a ``SegmentationObject`` PNG, which avoids that warning.
"""
import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from maskrcnn.data.image_io import inspect_image  # noqa: E402
from maskrcnn.utils.errors import DataError, main_guard  # noqa: E402

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
VOID = 255


class VOCError(DataError, ValueError):
    """A VOC tree or file that cannot be converted; the message names the file (exit status 3)."""


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert a Pascal VOC split to a COCO JSON file")
    parser.add_argument("voc_root", help="a year's folder, e.g. VOCdevkit/VOC2012")
    parser.add_argument("--split", default="train", help="ImageSets/Main/<split>.txt (train, val, trainval, test)")
    parser.add_argument("--out", required=True, help="COCO JSON file to write")
    parser.add_argument("--classes", choices=("voc", "found"), default="voc",
                        help="voc: the 20 VOC classes, ids 1..20 in VOC's order; found: the names in the XML")
    parser.add_argument("--difficult", choices=("crowd", "skip", "keep"), default="crowd",
                        help="difficult objects: iscrowd=1 (ignored by training and evaluation), left out, or kept")
    parser.add_argument("--masks-only", action="store_true",
                        help="only images with a SegmentationObject PNG (for Mask R-CNN)")
    return parser.parse_args(argv)


def read_split(voc_root: str, split: str) -> List[str]:
    """Image ids listed in ``ImageSets/Main/<split>.txt``."""
    path = os.path.join(voc_root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise VOCError(f"split file not found: {path} (is {voc_root} a year's folder such as "
                       "VOCdevkit/VOC2012, and is the split name right?)")
    with open(path) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise VOCError(f"split file {path} lists no images")
    return ids


def _number(node: ET.Element, tag: str, xml_path: str) -> float:
    child = node.find(tag)
    try:
        return float(child.text)
    except (AttributeError, TypeError, ValueError):
        raise VOCError(f"{xml_path}: <{tag}> missing or not a number") from None


def parse_xml(xml_path: str) -> Tuple[Optional[Tuple[int, int]], List[dict]]:
    """``((height, width) from <size> or None, objects)``; each object ``{name, difficult, box}``."""
    if not os.path.isfile(xml_path):
        raise VOCError(f"annotation file not found: {xml_path}")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise VOCError(f"{xml_path}: not valid XML ({exc})") from None
    size = root.find("size")
    hw = None
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        hw = (int(_number(size, "height", xml_path)), int(_number(size, "width", xml_path)))
    objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            raise VOCError(f"{xml_path}: an <object> without <name> or <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
        objects.append({"name": name, "difficult": (obj.findtext("difficult") or "0").strip() == "1",
                        "box": (xmin - 1.0, ymin - 1.0, xmax, ymax)})  # 1-based inclusive -> continuous
    return hw, objects


def _instance_masks(png_path: str, count: int, size: Tuple[int, int]) -> np.ndarray:
    """``(count, H, W)`` bool masks from a SegmentationObject PNG (object k has pixel value k)."""
    with Image.open(png_path) as im:
        if im.mode not in ("P", "L"):
            raise VOCError(f"{png_path}: expected a palette PNG of instance indices, got mode {im.mode}")
        index = np.array(im)
    if index.shape != size:
        raise VOCError(f"{png_path}: size (h, w) = {index.shape}, but the image is {size}")
    extra = sorted(set(np.unique(index).tolist()) - {0, VOID} - set(range(1, count + 1)))
    if extra:
        raise VOCError(f"{png_path}: instance values {extra} have no <object> in the XML ({count} objects)")
    return index[None] == np.arange(1, count + 1, dtype=index.dtype)[:, None, None]


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _annotation(obj: dict, mask: Optional[np.ndarray], size: Tuple[int, int]) -> dict:
    """COCO ``bbox`` and ``area``, with ``segmentation`` (RLE) only when ``mask`` has a pixel."""
    h, w = size
    x0, y0, x1, y1 = obj["box"]
    x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
    ann = {"bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}
    if mask is not None and mask.any():
        ann.update(segmentation=_rle(mask), area=float(mask.sum()))
    return ann


def convert(voc_root: str, split: str, classes: str = "voc", difficult: str = "crowd",
            masks_only: bool = False) -> Tuple[dict, Dict[str, int]]:
    """The COCO dict of a VOC split and counts for the summary (see the module docstring)."""
    ids = read_split(voc_root, split)
    parsed = {i: parse_xml(os.path.join(voc_root, "Annotations", f"{i}.xml")) for i in ids}
    names = list(VOC_CLASSES) if classes == "voc" else sorted({o["name"] for _, objs in parsed.values() for o in objs})
    cat_id = {n: k + 1 for k, n in enumerate(names)}
    images, annotations = [], []
    counts = dict(images=0, objects=0, crowd=0, skipped_difficult=0, with_masks=0, box_only=0, size_fixed=0,
                  empty_masks=0)
    for vid in ids:
        hw, objects = parsed[vid]
        png = os.path.join(voc_root, "SegmentationObject", f"{vid}.png")
        has_png = os.path.isfile(png)
        if masks_only and not has_png:
            continue
        img_path = os.path.join(voc_root, "JPEGImages", f"{vid}.jpg")
        if not os.path.isfile(img_path):
            raise VOCError(f"image not found: {img_path} (listed in the {split} split)")
        header = inspect_image(img_path)
        size = (header.height, header.width)
        counts["size_fixed"] += int(hw is not None and hw != size)
        masks = _instance_masks(png, len(objects), size) if has_png else None
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": f"{vid}.jpg", "height": size[0], "width": size[1]})
        counts["with_masks" if has_png else "box_only"] += 1
        for k, obj in enumerate(objects):
            if obj["name"] not in cat_id:
                raise VOCError(f"{os.path.join(voc_root, 'Annotations', vid + '.xml')}: class {obj['name']!r} "
                               "is not a VOC class; convert with --classes found to use the classes of the XML")
            if obj["difficult"] and difficult == "skip":
                counts["skipped_difficult"] += 1
                continue
            crowd = int(obj["difficult"] and difficult == "crowd")
            mask = masks[k] if masks is not None else None
            counts["empty_masks"] += int(mask is not None and not mask.any())
            ann = _annotation(obj, mask, size)
            ann.update(id=len(annotations) + 1, image_id=image_id, category_id=cat_id[obj["name"]], iscrowd=crowd)
            annotations.append(ann)
            counts["objects"] += 1
            counts["crowd"] += crowd
    counts["images"] = len(images)
    info = {"description": f"Pascal VOC {os.path.basename(os.path.normpath(voc_root))} {split}, converted by "
                           "tools/convert_voc_to_coco.py",
            "classes": classes, "difficult": difficult, "masks_only": masks_only,
            "box_only_images": counts["box_only"],
            "box_only_segmentation": "none (no 'segmentation' key; area of the box)"}
    categories = [{"id": cat_id[n], "name": n, "supercategory": "voc"} for n in names]
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}, counts


def write_json(data: dict, path: str) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    data, c = convert(args.voc_root, args.split, args.classes, args.difficult, args.masks_only)
    write_json(data, args.out)
    print(f"{args.split}: {c['images']} images ({c['with_masks']} with SegmentationObject masks, {c['box_only']} "
          f"boxes only), {c['objects']} objects ({c['crowd']} difficult as iscrowd, {c['skipped_difficult']} "
          f"difficult skipped), {len(data['categories'])} categories -> {args.out}")
    if c["size_fixed"]:
        print(f"note: {c['size_fixed']} XML <size> entries disagree with their JPEG; the JPEG's size is used")
    if c["empty_masks"]:
        print(f"note: {c['empty_masks']} objects have no pixel in their SegmentationObject PNG; they are written "
              "box-only (no segmentation)")
    if c["box_only"] and not args.masks_only:
        print("note: objects of images without a SegmentationObject PNG are box-only (no segmentation): Faster "
              "R-CNN (MODEL.MASK_ON False) trains on every image; Mask R-CNN leaves those images out, with a "
              "warning (convert with --masks-only to write only the segmented images)")
    return 0


if __name__ == "__main__":
    main_guard(lambda: main(sys.argv[1:]))
