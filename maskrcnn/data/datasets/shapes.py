"""Deterministic synthetic "shapes" dataset in COCO format (circles, squares, triangles).

Images have different sizes and a mildly textured background; every object is
a filled polygon. Pixels are painted where the pixel centre ``(x + 0.5, y + 0.5)``
lies inside the polygon, the same rule used by the mask targets
(:meth:`InstanceMasks.crop_and_resize`) and, to within rounding, by
pycocotools' polygon rasteriser, so image pixels, training targets and
evaluation masks agree.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import zlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image

__all__ = ["ensure_shapes_dataset", "generate_shapes", "SHAPES_CATEGORIES", "SHAPES_VERSION"]

logger = logging.getLogger(__name__)

SHAPES_VERSION = 1
SHAPES_CATEGORIES = [{"id": 1, "name": "circle", "supercategory": "shape"},
                     {"id": 2, "name": "square", "supercategory": "shape"},
                     {"id": 3, "name": "triangle", "supercategory": "shape"}]
IMAGE_SIDE_RANGE = (96, 160)   # inclusive, height and width drawn independently
OBJECT_SIZE_RANGE = (16.0, 60.0)
MAX_OBJECTS = 4
_MARGIN = 2.0                  # min gap between object boxes (px)


def ensure_shapes_dataset(root: str, split: str, num_images: int, seed: int) -> Tuple[str, str]:
    """Generate the split under ``root/shapes/`` unless an identical one is there.

    Args:
        root: data directory.
        split: split name (letters, digits, ``_`` or ``-``), e.g. ``"train"``.
        num_images: number of images.
        seed: generation seed (combined with ``split``).

    Returns:
        ``(ann_file, img_dir)``: ``root/shapes/instances_{split}.json`` and ``root/shapes/{split}``.
    """
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", split):
        raise ValueError(f"invalid shapes split name {split!r}")
    base = os.path.join(os.fspath(root), "shapes")
    os.makedirs(base, exist_ok=True)
    ann_file = os.path.join(base, f"instances_{split}.json")
    img_dir = os.path.join(base, split)
    stamp = os.path.join(base, f".{split}.stamp.json")
    meta = {"num_images": int(num_images), "seed": int(seed), "version": SHAPES_VERSION}
    with _file_lock(os.path.join(base, f".{split}.lock")):
        if _read_json(stamp) == meta and os.path.isfile(ann_file) and os.path.isdir(img_dir):
            return ann_file, img_dir
        logger.info("generating synthetic shapes split %r (%d images) in %s", split, num_images, base)
        _generate_atomically(base, split, meta, ann_file, img_dir, stamp)
    return ann_file, img_dir


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """Exclusive inter-process lock where ``fcntl`` exists (no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_json(path: str) -> Optional[Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _generate_atomically(base: str, split: str, meta: Dict[str, int], ann_file: str,
                         img_dir: str, stamp: str) -> None:
    """Write into a temp dir, then move into place; the stamp is written last."""
    if os.path.exists(stamp):
        os.remove(stamp)
    tmp = tempfile.mkdtemp(prefix=f".tmp_{split}_", dir=base)
    try:
        tmp_imgs = os.path.join(tmp, "images")
        os.makedirs(tmp_imgs)
        dataset = generate_shapes(tmp_imgs, split, meta["num_images"], meta["seed"])
        tmp_json = os.path.join(tmp, "instances.json")
        with open(tmp_json, "w", encoding="utf-8") as f:
            json.dump(dataset, f)
        if os.path.isdir(img_dir):
            shutil.rmtree(img_dir)
        os.replace(tmp_imgs, img_dir)
        os.replace(tmp_json, ann_file)
        tmp_stamp = os.path.join(tmp, "stamp.json")
        with open(tmp_stamp, "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.replace(tmp_stamp, stamp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def generate_shapes(img_dir: str, split: str, num_images: int, seed: int) -> Dict[str, Any]:
    """Write ``num_images`` PNGs into ``img_dir`` and return the COCO dict describing them."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(split.encode("utf-8"))])
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    for i in range(num_images):
        image_id = i + 1
        h, w = (int(v) for v in rng.integers(IMAGE_SIDE_RANGE[0], IMAGE_SIDE_RANGE[1] + 1, size=2))
        pixels, bg_colour = _background(rng, h, w)
        for cat_id, poly in _place_objects(rng, h, w):
            colour = _distinct_colour(rng, bg_colour)
            pixels[_polygon_mask(poly, h, w)] = colour
            annotations.append(_annotation(len(annotations) + 1, image_id, cat_id, poly))
        file_name = f"{image_id:06d}.png"
        Image.fromarray(pixels, mode="RGB").save(os.path.join(img_dir, file_name))
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
    return {"info": {"description": f"synthetic shapes, split {split}", "version": SHAPES_VERSION},
            "images": images, "annotations": annotations, "categories": SHAPES_CATEGORIES}


def _background(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Random-colour background with a gentle gradient, coarse texture and pixel noise."""
    base = rng.integers(30, 226, size=3).astype(np.float32)
    gy, gx = rng.uniform(-20, 20, size=2)
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None, None]
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :, None]
    coarse = rng.normal(0.0, 6.0, size=(h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    texture = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)[:h, :w]
    noise = rng.normal(0.0, 4.0, size=(h, w, 3)).astype(np.float32)
    img = base + gy * ys + gx * xs + texture + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), base


def _distinct_colour(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    """A random colour whose L1 distance from the background colour is at least 180."""
    colour = rng.integers(0, 256, size=3)
    for _ in range(100):
        if np.abs(colour - bg).sum() >= 180:
            break
        colour = rng.integers(0, 256, size=3)
    else:
        colour = np.where(bg > 127, 0, 255)
    return colour.astype(np.uint8)


def _shape_at_origin(rng: np.random.Generator, cat_id: int, size: float) -> np.ndarray:
    """``(n, 2)`` polygon of category ``cat_id`` centred at the origin."""
    phase = rng.uniform(0, 2 * np.pi)
    if cat_id == 1:  # circle: regular 24..32-gon
        n = int(rng.integers(24, 33))
        ang = phase + np.arange(n) * (2 * np.pi / n)
        return np.stack([np.cos(ang), np.sin(ang)], 1) * (size / 2)
    if cat_id == 2:  # square-ish rectangle, axis-aligned or rotated
        a, b = size, size * rng.uniform(0.75, 1.0)
        theta = 0.0 if rng.random() < 0.5 else rng.uniform(0, np.pi / 2)
        corners = np.array([[-a, -b], [a, -b], [a, b], [-a, b]]) / 2
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        return corners @ rot.T
    ang = phase + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.25, 0.25, 3)
    return np.stack([np.cos(ang), np.sin(ang)], 1) * (size / 2)


def _place_objects(rng: np.random.Generator, h: int, w: int) -> List[Tuple[int, np.ndarray]]:
    """1..MAX_OBJECTS polygons inside the image whose boxes do not overlap (rejection sampling)."""
    wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    placed: List[Tuple[int, np.ndarray]] = []
    boxes: List[np.ndarray] = []
    for _ in range(wanted * 20):
        if len(placed) == wanted:
            break
        cat_id = int(rng.integers(1, 4))
        size = rng.uniform(OBJECT_SIZE_RANGE[0], min(OBJECT_SIZE_RANGE[1], min(h, w) / 1.6))
        poly = _shape_at_origin(rng, cat_id, size)
        lo, hi = poly.min(0), poly.max(0)
        centre = rng.uniform(1.0 - lo, np.array([w, h]) - 1.0 - hi)
        poly = np.round(poly + centre, 2)
        box = np.concatenate([poly.min(0), poly.max(0)])
        if all(_boxes_apart(box, other) for other in boxes):
            placed.append((cat_id, poly))
            boxes.append(box)
    return placed


def _boxes_apart(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] > b[2] + _MARGIN or b[0] > a[2] + _MARGIN
                or a[1] > b[3] + _MARGIN or b[1] > a[3] + _MARGIN)


def _polygon_mask(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(h, w)`` bool: pixels whose centre is inside ``poly`` (even-odd rule)."""
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    py, px = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    inside = np.zeros(px.shape, dtype=bool)
    q = np.roll(poly, -1, axis=0)
    for (ax, ay), (bx, by) in zip(poly, q):
        crosses = (ay > py) != (by > py)
        x_at = ax + (py - ay) * (bx - ax) / (by - ay if by != ay else 1.0)
        inside ^= crosses & (px < x_at)
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = inside
    return mask


def _annotation(ann_id: int, image_id: int, cat_id: int, poly: np.ndarray) -> Dict[str, Any]:
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    x0, y0, x1, y1 = float(x.min()), float(y.min()), float(x.max()), float(y.max())
    return {"id": ann_id, "image_id": image_id, "category_id": cat_id,
            "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]],
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "area": round(area, 2), "iscrowd": 0}
