"""One readable drawing of instances, shared by ``tools/demo.py`` and the viewers.

Masks and boxes are drawn by torchvision's ``draw_segmentation_masks`` and
``draw_bounding_boxes``; labels by PIL, on a filled background, with the TrueType font
that Pillow embeds (``ImageFont.load_default(size=...)``, Pillow >= 10.1), because
torchvision only takes a font *file* for a font size and no dependency of this project
ships one. Line width and font size grow with the image (as detectron2's Visualizer:
font ~ sqrt(H * W) / 65 px, at least 10), so labels stay readable on a 4000x3000 photo
and on a 200x200 thumbnail. Each class has its own colour, a function of its id
(:func:`class_color`), the same in every run and in every panel.

Images are RGB ``uint8``, ``(3, H, W)`` tensors or ``(H, W, 3)`` arrays (a ``(H, W)``
array is grayscale); boxes ``(N, 4)`` float xyxy in the image's pixels; labels ``(N,)``
class ids (dataset category ids or contiguous labels: the same id gives the same
colour); masks ``(N, H, W)`` bool. Every function returns a new ``(3, H, W)`` uint8 tensor.
"""
from __future__ import annotations

import colorsys
import functools
import logging
import math
import os
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..structures.segmentation_mask import InstanceMasks

__all__ = ["class_color", "style_for", "to_chw_uint8", "draw_instances", "draw_ground_truth",
           "draw_predictions", "side_by_side", "rasterize_instance_masks", "save_png"]

logger = logging.getLogger(__name__)

ImageLike = Union[torch.Tensor, np.ndarray]
ClassNames = Union[Mapping[int, str], Sequence[str], None]
RGB = Tuple[int, int, int]

_GOLDEN = 0.6180339887498949


def class_color(class_id: int) -> RGB:
    """A saturated colour for ``class_id``, stable from run to run.

    Hues step by the golden ratio, so neighbouring ids get far-apart hues; saturation and
    value alternate over three levels so ids whose hues come close still differ.
    """
    k = int(class_id)
    hue = (k * _GOLDEN) % 1.0
    sat = (0.85, 0.65, 1.0)[k % 3]
    val = (0.95, 0.8, 0.9)[(k // 3) % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def style_for(height: int, width: int) -> Tuple[int, int]:
    """``(font_size, line_width)`` in pixels for an image of ``(height, width)``."""
    font = max(10, int(round(math.sqrt(height * width) / 65)))
    return font, max(1, int(round(font / 6)))


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or without FreeType: fixed bitmap
        return ImageFont.load_default()


def to_chw_uint8(image: ImageLike) -> torch.Tensor:
    """A copy of ``image`` as a ``(3, H, W)`` uint8 tensor.

    Tensors are read as ``(3, H, W)`` / ``(1, H, W)``, arrays as ``(H, W, 3)`` / ``(H, W, 4)``
    (alpha dropped); ``(H, W)`` is grayscale. Float values are taken as 0..255 and rounded.
    """
    if isinstance(image, np.ndarray):
        t = torch.from_numpy(np.array(image, copy=True))
        if t.ndim == 3:
            t = t.permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        t = image.detach().to("cpu").clone()
        if t.ndim == 3 and t.shape[0] not in (1, 3, 4) and t.shape[-1] in (3, 4):
            t = t.permute(2, 0, 1)  # an (H, W, 3) tensor
    else:
        raise TypeError(f"image must be a torch.Tensor (3, H, W) or numpy array (H, W, 3), "
                        f"got {type(image).__name__}")
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(f"image must be (3, H, W) (tensor) or (H, W, 3) (array), got shape "
                         f"{tuple(image.shape)}")
    t = t[:3].expand(3, -1, -1) if t.shape[0] == 1 else t[:3]
    if t.dtype != torch.uint8:
        t = t.float().round().clamp(0, 255).to(torch.uint8)
    return t.contiguous()


def _name(label: int, class_names: ClassNames) -> str:
    if class_names is None:
        return str(label)
    if isinstance(class_names, Mapping):
        return str(class_names.get(label, label))
    return str(class_names[label]) if 0 <= label < len(class_names) else str(label)


def _text_color(background: RGB) -> RGB:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def _overlaps(a: Tuple[float, ...], b: Tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_label(box: Sequence[float], tw: float, th: float, size: Tuple[int, int],
                 taken: Sequence[Tuple[float, ...]]) -> Tuple[float, float]:
    """Top-left corner of a ``tw x th`` label of ``box``: above it, else inside its top, else
    below it, else inside its bottom; the first spot free of the labels ``taken``."""
    height, width = size
    x = min(max(0.0, box[0]), max(0.0, width - tw))
    spots = [y for y in (box[1] - th, box[1], box[3], box[3] - th) if 0 <= y <= height - th]
    spots = spots or [max(0.0, min(box[1], height - th))]
    for y in spots:
        if not any(_overlaps((x, y, x + tw, y + th), t) for t in taken):
            return x, y
    return x, spots[0]


def _draw_labels(canvas: torch.Tensor, boxes: torch.Tensor, texts: Sequence[str],
                 colors: Sequence[RGB], font_size: int) -> torch.Tensor:
    """Each text on a filled box of its colour, next to its box (see :func:`_place_label`).

    The last instances (the highest scores, drawn on top) choose their spot first.
    """
    pil = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    font = _font(font_size)
    pad = max(1, font_size // 6)
    boxes_l = boxes.tolist()
    spots: list = [None] * len(texts)
    for i in range(len(texts) - 1, -1, -1):
        left, top, right, bottom = draw.textbbox((0, 0), texts[i], font=font)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad
        x, y = _place_label(boxes_l[i], tw, th, (pil.size[1], pil.size[0]), [s[0] for s in spots if s])
        spots[i] = ((x, y, x + tw, y + th), (left, top))
    for (rect, (left, top)), text, color in zip(spots, texts, colors):
        draw.rectangle((rect[0], rect[1], rect[2] - 1, rect[3] - 1), fill=color)
        draw.text((rect[0] + pad - left, rect[1] + pad - top), text, fill=_text_color(color), font=font)
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1).contiguous()


def _topmost(masks: torch.Tensor) -> torch.Tensor:
    """Each pixel kept only in the last mask that covers it, so overlaps show the instance drawn
    on top (torchvision would paint pixels of overlapping masks black)."""
    out = masks.clone()
    covered = torch.zeros(masks.shape[1:], dtype=torch.bool)
    for i in range(masks.shape[0] - 1, -1, -1):
        out[i] &= ~covered
        covered |= masks[i]
    return out


def _wrap(text: str, font_size: int, max_width: float) -> str:
    """``text`` with line breaks between words so that each line fits in ``max_width`` pixels."""
    font = _font(font_size)
    lines: list = []
    for word in text.split(" "):
        if lines and font.getlength(lines[-1] + " " + word) <= max_width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


def _darker(color: RGB) -> RGB:
    return tuple(int(v * 0.55) for v in color)  # type: ignore[return-value]


def _edges(masks: torch.Tensor, width: int) -> torch.Tensor:
    """The inner border, ``width`` pixels wide, of each mask ``(N, H, W)``, computed in its own window."""
    out = torch.zeros_like(masks)
    for i, mask in enumerate(masks):
        ys, xs = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
        if ys.numel() == 0:
            continue
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        window = mask[y0:y1, x0:x1]
        # A pixel is on the border when a pixel within `width` of it is outside the mask.
        outside = F.pad((~window).float()[None, None], [width] * 4, value=1.0)
        near_outside = F.max_pool2d(outside, 2 * width + 1, stride=1)[0, 0] > 0
        out[i, y0:y1, x0:x1] = window & near_outside
    return out


def _draw_message(canvas: torch.Tensor, message: str, font_size: int) -> torch.Tensor:
    """``message`` in the top-left corner, white on a dark filled box, wrapped to the image width."""
    text = _wrap(message, font_size, canvas.shape[2] - 2 * max(1, font_size // 6))
    return _draw_labels(canvas, torch.zeros((1, 4)), [text], [(40, 40, 40)], font_size)


def draw_instances(image: ImageLike, boxes: torch.Tensor, labels: torch.Tensor,
                   class_names: ClassNames = None, scores: Optional[torch.Tensor] = None,
                   masks: Optional[torch.Tensor] = None, empty_message: str = "",
                   alpha: float = 0.45) -> torch.Tensor:
    """Masks, boxes and ``"name score"`` labels of N instances over ``image``.

    Args:
        image: RGB uint8 ``(3, H, W)`` tensor or ``(H, W, 3)`` array.
        boxes: ``(N, 4)`` xyxy in the image's pixels.
        labels: ``(N,)`` class ids; they pick the colour and, through ``class_names``, the name.
        class_names: id -> name (mapping, or sequence indexed by id); None: ids are shown.
        scores: ``(N,)`` shown after the name with two decimals when given.
        masks: ``(N, H, W)`` bool, or None.
        empty_message: written on the image when N is 0 (nothing when empty).
        alpha: mask opacity.

    Returns:
        ``(3, H, W)`` uint8 tensor.
    """
    canvas = to_chw_uint8(image)
    h, w = canvas.shape[1:]
    font_size, line = style_for(h, w)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu().reshape(-1, 4)
    labels = torch.as_tensor(labels).detach().cpu().reshape(-1).long()
    n = boxes.shape[0]
    if labels.numel() != n or (scores is not None and len(scores) != n) or (
            masks is not None and len(masks) != n):
        raise ValueError(f"boxes ({n}), labels ({labels.numel()}), scores and masks must have one "
                         "entry per instance")
    if n == 0:
        return _draw_message(canvas, empty_message, font_size) if empty_message else canvas
    colors = [class_color(int(c)) for c in labels]
    if masks is not None:
        masks = torch.as_tensor(masks).detach().cpu().bool()
        if tuple(masks.shape[1:]) != (h, w):
            raise ValueError(f"masks are {tuple(masks.shape[1:])}, the image is (H, W) = {(h, w)}")
        visible = _topmost(masks)
        canvas = draw_segmentation_masks(canvas, visible, alpha=alpha, colors=colors)
        # A crisp, darker outline: the mask stays visible on an object of its own colour.
        edges = _edges(visible, max(1, line // 2))
        canvas = draw_segmentation_masks(canvas, edges, alpha=1.0, colors=[_darker(c) for c in colors])
    # Clipped and ordered so that boxes reaching past the border still draw (torchvision refuses
    # x0 > x1); the outline stays inside the image.
    drawn = boxes.clone()
    drawn[:, 0::2] = drawn[:, 0::2].clamp(0, w - 1)
    drawn[:, 1::2] = drawn[:, 1::2].clamp(0, h - 1)
    drawn = torch.stack([torch.minimum(drawn[:, 0], drawn[:, 2]), torch.minimum(drawn[:, 1], drawn[:, 3]),
                         torch.maximum(drawn[:, 0], drawn[:, 2]), torch.maximum(drawn[:, 1], drawn[:, 3])], 1)
    canvas = draw_bounding_boxes(canvas, drawn, colors=colors, width=line)
    texts = [_name(int(c), class_names) for c in labels]
    if scores is not None:
        texts = [f"{t} {float(s):.2f}" for t, s in zip(texts, torch.as_tensor(scores).reshape(-1))]
    return _draw_labels(canvas, drawn, texts, colors, font_size)


def draw_ground_truth(image: ImageLike, boxes: torch.Tensor, labels: torch.Tensor,
                      class_names: ClassNames = None, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Ground truth (no scores); an image without instances says "no annotations"."""
    return draw_instances(image, boxes, labels, class_names, masks=masks, empty_message="no annotations")


def draw_predictions(image: ImageLike, boxes: torch.Tensor, labels: torch.Tensor,
                     scores: torch.Tensor, class_names: ClassNames = None,
                     masks: Optional[torch.Tensor] = None, score_thr: float = 0.5,
                     image_name: str = "") -> torch.Tensor:
    """Predictions scoring ``>= score_thr``, highest scores drawn last (on top).

    When none is left, the image says ``no detections with score >= thr`` and so does the
    log (INFO, naming ``image_name``).

    Args:
        image: RGB uint8 ``(3, H, W)`` tensor or ``(H, W, 3)`` array.
        boxes: ``(N, 4)`` xyxy. labels: ``(N,)`` class ids. scores: ``(N,)``.
        class_names: id -> name. masks: ``(N, H, W)`` bool or None.
        score_thr: lowest score drawn.
        image_name: names the image in the log line.

    Returns:
        ``(3, H, W)`` uint8 tensor.
    """
    scores = torch.as_tensor(scores, dtype=torch.float32).detach().cpu().reshape(-1)
    keep = torch.nonzero(scores >= score_thr).flatten()
    keep = keep[torch.argsort(scores[keep], stable=True)]
    message = f"no detections with score >= {score_thr:g}"
    if keep.numel() == 0:
        logger.info("%s: %s", image_name or "image", message)
    sel = torch.as_tensor(masks)[keep] if masks is not None else None
    return draw_instances(image, torch.as_tensor(boxes)[keep], torch.as_tensor(labels)[keep], class_names,
                          scores=scores[keep], masks=sel, empty_message=message)


def _title_strip(width: int, title: str, font_size: int) -> torch.Tensor:
    """A white ``(3, h, width)`` strip with ``title`` in black, wrapped to ``width``."""
    font = _font(font_size)
    pad = max(2, font_size // 3)
    title = _wrap(title, font_size, width - 2 * pad)
    left, top, _, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), title, font=font)
    strip = Image.new("RGB", (width, max(font_size, bottom - top) + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    draw.text((pad - left, pad - top), title, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.array(strip)).permute(2, 0, 1)


def side_by_side(panels: Sequence[ImageLike], titles: Sequence[str] = ()) -> torch.Tensor:
    """Panels left to right (e.g. ground truth | predictions), each under its title.

    Panels of different heights are padded at the bottom with white; a white gap separates them.

    Args:
        panels: RGB images, ``(3, H_i, W_i)`` tensors or ``(H_i, W_i, 3)`` arrays.
        titles: one per panel, or none.

    Returns:
        ``(3, H, W)`` uint8 tensor.
    """
    images = [to_chw_uint8(p) for p in panels]
    if not images:
        raise ValueError("side_by_side needs at least one panel")
    if titles and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} panels")
    height = max(int(p.shape[1]) for p in images)
    font_size, _ = style_for(height, max(int(p.shape[2]) for p in images))
    gap = max(4, font_size // 2)
    strips = [_title_strip(int(img.shape[2]), t, font_size) for img, t in zip(images, titles)]
    strip_h = max((int(s.shape[1]) for s in strips), default=0)
    columns = []
    for i, img in enumerate(images):
        parts = []
        if strips:  # every strip as tall as the tallest, so that the panels line up
            below = torch.full((3, strip_h - strips[i].shape[1], img.shape[2]), 255, dtype=torch.uint8)
            parts = [strips[i], below]
        columns.append(torch.cat(parts + [img], 1))
    total_h = max(int(c.shape[1]) for c in columns)
    out = []
    for i, column in enumerate(columns):
        pad = torch.full((3, total_h - column.shape[1], column.shape[2]), 255, dtype=torch.uint8)
        out.append(torch.cat([column, pad], 1))
        if i + 1 < len(columns):
            out.append(torch.full((3, total_h, gap), 255, dtype=torch.uint8))
    return torch.cat(out, 2)


def rasterize_instance_masks(masks: InstanceMasks, boxes: torch.Tensor) -> torch.Tensor:
    """Full-image bool masks ``(N, H, W)`` of ``masks`` (polygons or RLE, after any transform).

    Each instance is rasterised at pixel centres inside a square window over its box, by
    the same rule as the training targets (:meth:`InstanceMasks.crop_and_resize`); a viewer
    tool's cost, not a training one.

    Args:
        masks: the instances' masks, at image size ``masks.size``.
        boxes: ``(N, 4)`` xyxy boxes of the instances (the windows).
    """
    h, w = masks.size
    out = torch.zeros((len(masks), h, w), dtype=torch.bool)
    for i, box in enumerate(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).tolist()):
        x0, y0 = max(0, int(math.floor(box[0])) - 1), max(0, int(math.floor(box[1])) - 1)
        x1, y1 = min(w, int(math.ceil(box[2])) + 1), min(h, int(math.ceil(box[3])) + 1)
        side = max(x1 - x0, y1 - y0)
        if side <= 0:
            continue
        window = torch.tensor([[x0, y0, x0 + side, y0 + side]], dtype=torch.float32)
        cells = masks.crop_and_resize(window, torch.tensor([i]), side)[0] > 0.5
        out[i, y0:y1, x0:x1] = cells[:y1 - y0, :x1 - x0]
    return out


def save_png(image: ImageLike, path: Union[str, os.PathLike]) -> str:
    """Write ``image`` as a PNG file (folders created); returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(to_chw_uint8(image).permute(1, 2, 0).numpy()).save(path, format="PNG")
    return path
