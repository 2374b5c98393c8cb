"""Transforms on ``(image uint8 (3, H, W), target BoxList or None)`` pairs.

(With ``INPUT.RESIZE_MODE "torchvision"`` the resized image is float in 0..255.)

Randomness comes from the global torch RNG, so ``torch.manual_seed`` makes it
reproducible (the training loader seeds it per sample).
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from maskrcnn.structures.bounding_box import BoxList

__all__ = ["ColorJitter", "Compose", "ResizeShortestEdge", "RandomHorizontalFlip", "RandomVerticalFlip",
           "build_transforms", "get_resize_size", "pil_resize"]

Pair = Tuple[torch.Tensor, Optional[BoxList]]


#: Resize modes (``INPUT.RESIZE_MODE``).
RESIZE_MODES = ("antialias", "torchvision", "pil")
#: How the training short side is drawn from ``INPUT.MIN_SIZE_TRAIN`` (``INPUT.MIN_SIZE_TRAIN_SAMPLING``).
SIZE_SAMPLINGS = ("choice", "range")


def get_resize_size(h: int, w: int, min_size: int, max_size: int,
                    rounding: str = "round") -> Tuple[int, int]:
    """Size after resizing the short side to ``min_size``, capping the long side at ``max_size``.

    ``scale = min_size / short``; if ``long * scale > max_size`` then
    ``scale = max_size / long`` (``max_size <= 0`` disables the cap).

    Args:
        rounding: ``"round"`` (maskrcnn-benchmark), ``"floor"`` (torchvision's
            ``GeneralizedRCNNTransform``, ``floor(side * scale)``) or ``"detectron2"``
            (``ResizeShortestEdge.get_output_shape``: the short side is ``min_size`` itself, the
            long one ``scale * side``; both scaled again when capped; ``int(x + 0.5)``, so
            halves round up where Python's ``round`` rounds them to even).

    Returns:
        ``(new_h, new_w)`` as ints (at least 1).
    """
    if rounding == "detectron2":
        size = min_size * 1.0
        scale = size / min(h, w)
        new_h, new_w = (size, scale * w) if h < w else (scale * h, size)
        if max_size > 0 and max(new_h, new_w) > max_size:
            scale = max_size * 1.0 / max(new_h, new_w)
            new_h, new_w = new_h * scale, new_w * scale
        return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5))
    short, long = float(min(h, w)), float(max(h, w))
    scale = min_size / short
    if max_size > 0 and long * scale > max_size:
        scale = max_size / long
    if rounding == "floor":
        return max(1, math.floor(h * scale)), max(1, math.floor(w * scale))
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def pil_resize(image: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    """``(C, H, W)`` uint8 -> ``(C, new_h, new_w)`` uint8 by PIL's ``Image.BILINEAR`` (which
    widens its filter when shrinking), as detectron2's ``ResizeTransform`` does."""
    from PIL import Image

    array = image.permute(1, 2, 0).contiguous().numpy()
    pil = Image.fromarray(array[:, :, 0], mode="L") if array.shape[2] == 1 else Image.fromarray(array)
    out = np.array(pil.resize((new_w, new_h), Image.BILINEAR))  # a writable copy
    out = out[:, :, None] if out.ndim == 2 else out
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()


class Compose:
    """Apply transforms in sequence."""

    def __init__(self, transforms: Sequence[Callable[[torch.Tensor, Optional[BoxList]], Pair]]) -> None:
        self.transforms: List[Callable[[torch.Tensor, Optional[BoxList]], Pair]] = list(transforms)

    def __call__(self, image: torch.Tensor, target: Optional[BoxList] = None) -> Pair:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class ResizeShortestEdge:
    """Resize so the short side is one of ``min_sizes`` (random choice) and the long side <= ``max_size``.

    Args:
        min_sizes: candidate short-side sizes; one is drawn per call when several. With
            ``sampling="range"``: ``(low, high)``, and a size is drawn uniformly from the
            integers ``low..high`` (detectron2's ``MIN_SIZE_TRAIN_SAMPLING "range"``).
        max_size: cap of the long side (``<= 0``: no cap).
        mode: ``"antialias"`` (default): antialiased bilinear on the uint8 image, sizes
            rounded, like the PIL resize of detectron2 and maskrcnn-benchmark.
            ``"torchvision"``: plain bilinear (``F.interpolate``, ``align_corners=False``,
            no antialiasing) on the float image, sizes floored, exactly what torchvision's
            ``GeneralizedRCNNTransform`` feeds its detection models; the image comes out
            float (0..255), which the model's preprocessing accepts as it is.
            ``"pil"``: detectron2's ``ResizeShortestEdge``: its sizes (``rounding="detectron2"``
            of :func:`get_resize_size`) and PIL's ``Image.BILINEAR`` on the uint8 image
            (``ResizeTransform.apply_image``); the image stays uint8.
    """

    def __init__(self, min_sizes: Union[int, Sequence[int]], max_size: int,
                 mode: str = "antialias", sampling: str = "choice") -> None:
        sizes = (min_sizes,) if isinstance(min_sizes, int) else tuple(int(s) for s in min_sizes)
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"min_sizes must be positive ints, got {min_sizes!r}")
        if mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
        if sampling not in SIZE_SAMPLINGS:
            raise ValueError(f"size sampling must be one of {SIZE_SAMPLINGS}, got {sampling!r}")
        if sampling == "range" and (len(sizes) != 2 or sizes[0] > sizes[1]):
            raise ValueError(f"sampling 'range' takes min_sizes (low, high) with low <= high, got {min_sizes!r}")
        self.min_sizes: Tuple[int, ...] = sizes
        self.max_size = int(max_size)
        self.mode = mode
        self.sampling = sampling

    def _pick_min_size(self) -> int:
        if self.sampling == "range":
            low, high = self.min_sizes
            return int(torch.randint(low, high + 1, (1,)).item())
        if len(self.min_sizes) == 1:
            return self.min_sizes[0]
        return self.min_sizes[int(torch.randint(len(self.min_sizes), (1,)).item())]

    def __call__(self, image: torch.Tensor, target: Optional[BoxList] = None) -> Pair:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        if self.mode == "torchvision":
            new_h, new_w = get_resize_size(h, w, self._pick_min_size(), self.max_size, "floor")
            image = F.interpolate(image[None].float(), size=(new_h, new_w), mode="bilinear",
                                  align_corners=False)[0]
        elif self.mode == "pil":
            new_h, new_w = get_resize_size(h, w, self._pick_min_size(), self.max_size, "detectron2")
            if (new_h, new_w) != (h, w):
                image = pil_resize(image, new_h, new_w)
        else:
            new_h, new_w = get_resize_size(h, w, self._pick_min_size(), self.max_size)
            if (new_h, new_w) != (h, w):
                image = TF.resize(image, [new_h, new_w], interpolation=InterpolationMode.BILINEAR,
                                  antialias=True)
        if (new_h, new_w) != (h, w):
            if target is not None:
                target = target.resize((new_h, new_w))
        return image, target

    def __repr__(self) -> str:
        return (f"ResizeShortestEdge(min_sizes={self.min_sizes}, max_size={self.max_size}, "
                f"mode={self.mode!r}, sampling={self.sampling!r})")


class _RandomFlip:
    """Flip image and target along ``dim`` (BoxList method ``method``, set by the subclasses) with
    probability ``prob``."""

    dim: int
    method: str

    def __init__(self, prob: float = 0.5) -> None:
        self.prob = float(prob)

    def __call__(self, image: torch.Tensor, target: Optional[BoxList] = None) -> Pair:
        if self.prob > 0 and torch.rand(()).item() < self.prob:
            image = image.flip(self.dim)
            if target is not None:
                target = getattr(target, self.method)()
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prob={self.prob})"


class RandomHorizontalFlip(_RandomFlip):
    """Flip image and target left-right with probability ``prob``."""

    dim, method = -1, "flip_horizontal"


class RandomVerticalFlip(_RandomFlip):
    """Flip image and target upside down with probability ``prob``."""

    dim, method = -2, "flip_vertical"


class ColorJitter:
    """Random brightness, contrast, saturation and hue of the uint8 image (the target is
    unchanged), as maskrcnn-benchmark's ``INPUT.BRIGHTNESS`` / ``CONTRAST`` / ``SATURATION`` /
    ``HUE``: torchvision's ``ColorJitter`` (factors drawn from ``[1 - v, 1 + v]``, hue shift from
    ``[-hue, hue]``, the four in a random order), applied before the resize, on the image as read."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0) -> None:
        self.jitter = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    def __call__(self, image: torch.Tensor, target: Optional[BoxList] = None) -> Pair:
        return self.jitter(image), target

    def __repr__(self) -> str:
        return repr(self.jitter)


def _sizes(value: Any) -> Tuple[int, ...]:
    if isinstance(value, (int, float)):
        return (int(value),)
    return tuple(int(v) for v in value)


def build_transforms(cfg: Any, is_train: bool) -> Compose:
    """Resize (+ colour jitter and flips in training) from ``cfg.INPUT``, in maskrcnn-benchmark's
    order: jitter, resize, horizontal flip, vertical flip.

    Reads ``INPUT.BRIGHTNESS`` / ``CONTRAST`` / ``SATURATION`` / ``HUE`` (jitter when any is
    non-zero), ``INPUT.MIN_SIZE_TRAIN`` (tuple) and ``MIN_SIZE_TRAIN_SAMPLING``, ``INPUT.MAX_SIZE_TRAIN``,
    ``INPUT.HORIZONTAL_FLIP_PROB_TRAIN`` and ``VERTICAL_FLIP_PROB_TRAIN`` in training and
    ``INPUT.MIN_SIZE_TEST``, ``INPUT.MAX_SIZE_TEST`` otherwise.
    """
    inp = cfg.INPUT
    if is_train:
        jitter = (inp.BRIGHTNESS, inp.CONTRAST, inp.SATURATION, inp.HUE)
        steps = [ColorJitter(*map(float, jitter))] if any(jitter) else []
        steps += [ResizeShortestEdge(_sizes(inp.MIN_SIZE_TRAIN), int(inp.MAX_SIZE_TRAIN), inp.RESIZE_MODE,
                                     inp.MIN_SIZE_TRAIN_SAMPLING),
                  RandomHorizontalFlip(float(inp.HORIZONTAL_FLIP_PROB_TRAIN))]
        if inp.VERTICAL_FLIP_PROB_TRAIN > 0:
            steps.append(RandomVerticalFlip(float(inp.VERTICAL_FLIP_PROB_TRAIN)))
        return Compose(steps)
    return Compose([ResizeShortestEdge(_sizes(inp.MIN_SIZE_TEST), int(inp.MAX_SIZE_TEST),
                                       inp.RESIZE_MODE)])
