"""Mask targets by torchvision's rule, computed box-locally: ``roi_align`` of the ground-truth bitmap.

torchvision's ``project_masks_on_boxes`` makes the target of a positive proposal
``roi_align(gt_masks[:, None], rois, (M, M), 1.0)`` with ``aligned=False`` and the adaptive
sampling ratio (``ceil(box side / M)`` samples per cell side): the mean of bilinear samples
of the instance's 0/1 bitmap, soft where a cell straddles the outline, never thresholded.
It pools from full-image bitmaps ``(instances, H, W)``; here no full-image mask is built.

Each instance gets a *window*: its bitmap on the pixels of its extent plus a one-pixel zero
margin (clipped to the image), with the window's origin. ``roi_align`` on the window with the
boxes shifted by that origin reads the same four pixels with the same weights for every
sample that the full-image ``roi_align`` reads: samples outside the window fall on the zero
margin or beyond it (0 in both), and at an image border the window ends where the image ends.
Windows are stacked, edge-padded to one size (the margin is zero, so edge padding is zero
padding except at an image border, where it stands for ``roi_align``'s clamp), and ONE
``roi_align`` serves the batch. The sample positions are computed from the shifted, smaller
coordinates, so they round differently from the full-image call, by an ulp of the image
coordinates: most cells are equal, a cell on the outline differs by about that much (up to
4e-5 measured on a 320 x 448 image; ``tests/modeling/test_recipes.py``), and the mask loss and
its gradients agree with torchvision's (``tests/modeling/test_torchvision_train_parity.py``).
The stack holds one window per instance, each at most the image's size.

The bitmap of an instance at the current image size:

* polygons: pycocotools' rasterisation of the polygon as it is now (after resizing and
  flipping), the rule of torchvision's reference ``ConvertCocoPolysToMask``; the window is
  rasterised on its own (the polygon shifted by a non-negative integer origin, which
  pycocotools' fixed-point rasterisation maps exactly onto the full-image raster).
  torchvision's reference rasterises at the original size and resizes the bitmap with
  nearest-neighbour; on a resized image the two differ on outline pixels only.
* RLE: decoded at its own (original) size, flipped when the image was flipped, resized to
  the current size with nearest-neighbour exactly as ``GeneralizedRCNNTransform`` resizes
  ``masks``.

The host work depends on the ground truth only, never on the boxes. Polygon points held on
a GPU are copied back once per call.
"""
from __future__ import annotations

import functools
import math
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

__all__ = ["instance_windows", "roi_align_mask_targets"]

Window = Tuple[np.ndarray, int, int]  # (h, w) uint8 bitmap, x0, y0 in current image pixels


def _empty_window() -> Window:
    return np.zeros((1, 1), np.uint8), 0, 0


def _polygon_window(parts: List[np.ndarray], height: int, width: int) -> Window:
    """pycocotools' raster of the union of ``parts`` (each ``(n, 2)`` float64 x, y), on the
    instance's extent plus a zero margin, clipped to the ``height x width`` image."""
    from pycocotools import mask as mask_utils

    parts = [p for p in parts if p.shape[0] >= 3]
    if not parts:
        return _empty_window()
    pts = np.concatenate(parts)
    if not np.isfinite(pts).all():
        return _empty_window()
    # Origin <= floor(min) - 1 keeps every shifted coordinate >= 1, where pycocotools'
    # (int)(5 x + 0.5) is translation-exact; at 0 the polygon is not shifted at all.
    x0 = min(max(0, math.floor(pts[:, 0].min()) - 1), width - 1)
    y0 = min(max(0, math.floor(pts[:, 1].min()) - 1), height - 1)
    x1 = max(min(width, math.ceil(pts[:, 0].max()) + 2), x0 + 1)
    y1 = max(min(height, math.ceil(pts[:, 1].max()) + 2), y0 + 1)
    h, w = y1 - y0, x1 - x0
    shifted = [(p - np.array([x0, y0], np.float64)).ravel().tolist() for p in parts]
    rles = mask_utils.frPyObjects(shifted, h, w)
    return np.ascontiguousarray(mask_utils.decode(rles).any(2).astype(np.uint8)), x0, y0


@functools.lru_cache(maxsize=64)
def _nearest_source(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out,)`` source index of each output index of PyTorch's nearest-neighbour resize
    (what ``GeneralizedRCNNTransform`` does to ``masks``), read off a resized index ramp."""
    ramp = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1)
    return F.interpolate(ramp, size=(n_out, 1), mode="nearest").view(-1).long().numpy()


def _rle_window(rle: dict, flip_x: bool, flip_y: bool, height: int, width: int) -> Window:
    """The RLE's bitmap flipped as the image was and nearest-resized to ``height x width``,
    on its extent plus a zero margin."""
    from pycocotools import mask as mask_utils

    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    full = mask_utils.decode(rle)
    ho, wo = full.shape
    src_y, src_x = _nearest_source(ho, height), _nearest_source(wo, width)
    if flip_y:
        src_y = ho - 1 - src_y
    if flip_x:
        src_x = wo - 1 - src_x
    rows, cols = full.any(1)[src_y], full.any(0)[src_x]
    if not rows.any():
        return _empty_window()
    ys, xs = np.nonzero(rows)[0], np.nonzero(cols)[0]
    y0, y1 = max(0, int(ys[0]) - 1), min(height, int(ys[-1]) + 2)
    x0, x1 = max(0, int(xs[0]) - 1), min(width, int(xs[-1]) + 2)
    return np.ascontiguousarray(full[np.ix_(src_y[y0:y1], src_x[x0:x1])]), x0, y0


def instance_windows(masks) -> List[Window]:
    """The window of every instance of one image.

    Args:
        masks: an :class:`~maskrcnn.structures.segmentation_mask.InstanceMasks`.

    Returns:
        Per instance, ``(bitmap (h, w) uint8, x0, y0)``: the instance's bitmap at the current
        image size on pixels ``[y0, y0 + h) x [x0, x0 + w)``, zero outside.
    """
    height, width = masks.size
    ax, _, ay, _ = masks.affine
    points = masks.points.detach().cpu().double().numpy()
    ptr = masks.part_ptr.tolist()
    owner = masks.part_owner.tolist()
    parts: List[List[np.ndarray]] = [[] for _ in range(len(masks))]
    for k, i in enumerate(owner):
        parts[i].append(points[ptr[k]:ptr[k + 1]])
    out = []
    for i, rle in enumerate(masks.rles):
        if rle is not None:
            out.append(_rle_window(rle, ax < 0, ay < 0, height, width))
        else:
            out.append(_polygon_window(parts[i], height, width))
    return out


def roi_align_mask_targets(masks: Sequence, boxes: Sequence[torch.Tensor], indices: Sequence[torch.Tensor],
                           m: int) -> torch.Tensor:
    """Soft ``m x m`` targets of instance ``indices[i][k]`` of image ``i`` inside ``boxes[i][k]``,
    equal to torchvision's ``project_masks_on_boxes`` on the full-image bitmaps.

    Args:
        masks: per image, an :class:`~maskrcnn.structures.segmentation_mask.InstanceMasks`.
        boxes: per image, ``(K_i, 4)`` xyxy boxes in current image pixels.
        indices: per image, ``(K_i,)`` int64 instance index of each box.
        m: output resolution.

    Returns:
        ``(sum K_i, m, m)`` in ``[0, 1]`` on the device of the boxes, float64 for float64 boxes,
        else float32.
    """
    total = sum(int(b.shape[0]) for b in boxes)
    device = boxes[0].device if len(boxes) else torch.device("cpu")
    if total == 0:
        return torch.zeros((0, m, m), dtype=torch.float32, device=device)
    windows = [w for mk in masks for w in instance_windows(mk)] + [_empty_window()]
    h = max(win.shape[0] for win, _, _ in windows)
    w = max(win.shape[1] for win, _, _ in windows)
    stack = np.zeros((len(windows), 1, h, w), np.float32)
    for slot, (win, _, _) in enumerate(windows):
        stack[slot, 0] = np.pad(win, ((0, h - win.shape[0]), (0, w - win.shape[1])), mode="edge")
    rows = torch.cat([b.detach() for b in boxes])
    dtype = rows.dtype if rows.dtype == torch.float64 else torch.float32
    rows = rows.to(dtype)
    origins = torch.tensor([[x0, y0, x0, y0] for _, x0, y0 in windows], dtype=dtype)
    stack = torch.from_numpy(stack).to(device, non_blocking=True).to(dtype)
    origins = origins.to(device, non_blocking=True)
    offsets = np.cumsum([0] + [len(mk) for mk in masks])
    inst = torch.cat([idx.to(device).long() + int(o) for idx, o in zip(indices, offsets[:-1])])
    rois = torch.cat([inst[:, None].to(dtype), rows - origins[inst]], 1)
    return roi_align(stack, rois, (m, m), 1.0, sampling_ratio=-1, aligned=False)[:, 0]
