"""Pasting ``M x M`` mask predictions into the image: one rule, bounded memory.

The pasting rule (the one place it is written down):

* A predicted mask is an ``M x M`` grid of probabilities covering the box
  ``(x1, y1, x2, y2)`` (``bw = x2 - x1``, ``bh = y2 - y1``). The centre of grid
  cell ``(i, j)`` is at ``(x1 + (j + 0.5) * bw / M, y1 + (i + 0.5) * bh / M)``.
* Image pixel ``(x, y)`` has its centre at ``(x + 0.5, y + 0.5)``. Its value is
  the bilinear interpolation of the grid at that centre, the grid being
  extended by zeros outside. This is exactly
  ``torch.nn.functional.grid_sample(mask, grid, mode="bilinear",
  align_corners=False, padding_mode="zeros")`` with the normalised grid
  coordinate ``2 * (x + 0.5 - x1) / bw - 1`` (and likewise for ``y``), i.e. the
  continuous grid index ``s = (x + 0.5 - x1) * M / bw - 0.5``.
* The pasted mask is ``value >= threshold`` (strictly ``>=``; default 0.5).
* With probabilities in ``[0, 1]`` and ``threshold >= 0.5``, only pixels in the
  box-local window ``floor(x1) - 1 <= x < ceil(x2) + 1`` (clipped to the image,
  same for ``y``) can be true: a pixel whose centre lies outside the box gets
  a single tap of weight ``< 0.5``. Only that window is computed.
* Boxes with zero/negative width or height, or non-finite coordinates, give an
  all-false mask.

Note: for an all-ones mask and a box with integer coordinates, every pixel of
the box rectangle gets ``value >= 0.5`` along each axis, but near the corners
of boxes much larger than ``M`` (more than about ``2.4 * M`` in both
directions) the product of the two edge weights drops below 0.5, so a small
triangle at each corner is false. Nothing outside the rectangle is ever true.

Implementation: the bilinear resampling is separable,
``window = Wy @ mask @ Wx^T`` with ``Wy`` ``(h_win, M)`` and ``Wx`` ``(w_win, M)``
interpolation-weight matrices (at most two non-zero taps per row; taps outside
the grid are dropped, which is the zero padding). The window is evaluated in
row tiles so the float temporary stays below :data:`TILE_BYTES` whatever the
box size. :func:`masks_to_rle` encodes COCO RLE directly from the window, never
building the full ``H x W`` mask.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from pycocotools import mask as mask_util

__all__ = ["TILE_BYTES", "paste_masks_in_image", "masks_to_rle"]

#: Upper bound, in bytes, of the float32 tile evaluated at once per box.
TILE_BYTES = 16 * 2 ** 20

Window = Tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)


def _box_window(box: Sequence[float], height: int, width: int) -> Optional[Window]:
    """Box-local window ``(y0, y1, x0, x1)`` clipped to the image; ``None`` if empty."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box) or x2 <= x1 or y2 <= y1:
        return None
    x0, xe = max(math.floor(x1) - 1, 0), min(math.ceil(x2) + 1, width)
    y0, ye = max(math.floor(y1) - 1, 0), min(math.ceil(y2) + 1, height)
    if xe <= x0 or ye <= y0:
        return None
    return y0, ye, x0, xe


def _interp_matrix(start: int, end: int, lo: float, hi: float, m: int,
                   device: torch.device) -> torch.Tensor:
    """Bilinear weights of pixels ``start..end-1`` on an ``m``-cell grid over ``[lo, hi]``.

    Returns:
        ``(end - start, m)`` float32 matrix; row ``p`` holds the (at most two)
        weights of pixel ``start + p``, out-of-grid taps dropped (zero padding).
    """
    pix = torch.arange(start, end, dtype=torch.float64, device=device)
    s = (pix + 0.5 - lo) * (m / (hi - lo)) - 0.5
    j0 = torch.floor(s)
    frac = s - j0
    j0 = j0.long()
    rows = torch.arange(end - start, device=device)
    weights = torch.zeros((end - start, m), dtype=torch.float64, device=device)
    for j, w in ((j0, 1.0 - frac), (j0 + 1, frac)):
        ok = (j >= 0) & (j < m)
        weights[rows[ok], j[ok]] = w[ok]
    return weights.float()


def _paste_window(mask: torch.Tensor, box: Sequence[float], win: Window,
                  threshold: float) -> torch.Tensor:
    """Threshold the pasted ``mask`` over the window ``win``.

    Args:
        mask: ``(M, M)`` float32 probabilities.
        box: ``(x1, y1, x2, y2)`` floats.
        win: ``(y0, y1, x0, x1)`` from :func:`_box_window`.
        threshold: pixels with ``value >= threshold`` are true.

    Returns:
        ``(y1 - y0, x1 - x0)`` bool tensor on ``mask.device``.
    """
    m = mask.shape[-1]
    y0, ye, x0, xe = win
    wy = _interp_matrix(y0, ye, box[1], box[3], m, mask.device)
    wx = _interp_matrix(x0, xe, box[0], box[2], m, mask.device)
    right = mask @ wx.t()  # (M, w_win)
    out = torch.empty((ye - y0, xe - x0), dtype=torch.bool, device=mask.device)
    rows = max(1, TILE_BYTES // (4 * (xe - x0)))
    for r in range(0, ye - y0, rows):
        out[r:r + rows] = (wy[r:r + rows] @ right) >= threshold
    return out


def _prepare(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Sequence[int],
             threshold: float) -> Tuple[torch.Tensor, List[List[float]], int, int]:
    """Validate inputs; return float32 ``(N, M, M)`` masks, boxes as float lists, H, W."""
    if threshold < 0.5:
        raise ValueError(f"threshold must be >= 0.5 for the box-local window rule, got {threshold}")
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks must be (N, 1, M, M), got {tuple(masks.shape)}")
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks must be (N, M, M) or (N, 1, M, M), got {tuple(masks.shape)}")
    boxes = torch.as_tensor(boxes).reshape(-1, 4)
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {boxes.shape[0]} boxes")
    height, width = int(image_shape[0]), int(image_shape[1])
    return masks.float(), boxes.double().cpu().tolist(), height, width


def paste_masks_in_image(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Sequence[int],
                         threshold: float = 0.5) -> torch.Tensor:
    """Paste ``M x M`` mask probabilities into full-image binary masks.

    Args:
        masks: ``(N, 1, M, M)`` or ``(N, M, M)`` float16/float32 probabilities in ``[0, 1]``.
        boxes: ``(N, 4)`` xyxy boxes in image pixels.
        image_shape: ``(H, W)`` of the image.
        threshold: pixels with interpolated value ``>= threshold`` are true (must be ``>= 0.5``).

    Returns:
        ``(N, H, W)`` bool tensor on ``masks.device``. Temporaries beyond it are
        bounded by :data:`TILE_BYTES` plus ``O(M * (H + W))`` per box.
    """
    masks, box_list, height, width = _prepare(masks, boxes, image_shape, threshold)
    out = torch.zeros((len(box_list), height, width), dtype=torch.bool, device=masks.device)
    for i, box in enumerate(box_list):
        win = _box_window(box, height, width)
        if win is not None:
            y0, ye, x0, xe = win
            out[i, y0:ye, x0:xe] = _paste_window(masks[i], box, win, threshold)
    return out


def _window_rle_counts(win_mask: np.ndarray, win: Window, height: int, width: int) -> List[int]:
    """Uncompressed COCO RLE counts (column-major) of an image that is zero outside ``win``.

    Args:
        win_mask: ``(h_win, w_win)`` bool array, the image restricted to ``win``.
        win: ``(y0, y1, x0, x1)`` position of the window in the image.
        height, width: image size.

    Returns:
        Run lengths alternating zeros/ones, starting with zeros, summing to ``H * W``.
    """
    y0, _, x0, _ = win
    h_win = win_mask.shape[0]
    flat = np.ascontiguousarray(win_mask.T).reshape(-1)  # window in column-major order
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # flat[k] != flat[k - 1]
    cuts = np.arange(h_win, flat.size, h_win)
    cuts = cuts[flat[cuts] & flat[cuts - 1]]  # runs crossing a window column boundary
    rising = flat[change]
    starts = np.sort(np.concatenate([[0] if flat[0] else [], change[rising], cuts]).astype(np.int64))
    ends = np.sort(np.concatenate([change[~rising], cuts,
                                   [flat.size] if flat[-1] else []]).astype(np.int64))
    if starts.size == 0:
        return [height * width]
    # window position k -> image linear index (x0 + k // h_win) * H + y0 + k % h_win
    starts = (starts // h_win + x0) * height + y0 + starts % h_win
    ends = ((ends - 1) // h_win + x0) * height + y0 + (ends - 1) % h_win + 1  # exclusive
    join = ends[:-1] == starts[1:]  # run continues into the next image column
    starts = np.concatenate([starts[:1], starts[1:][~join]])
    ends = np.concatenate([ends[:-1][~join], ends[-1:]])
    bounds = np.empty(2 * starts.size + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, height * width
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    counts = np.diff(bounds).tolist()
    return counts[:-1] if counts[-1] == 0 else counts  # no trailing empty run of zeros


def masks_to_rle(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Sequence[int],
                 threshold: float = 0.5) -> List[Dict[str, object]]:
    """COCO compressed RLE of each pasted mask, encoded from its box-local window only.

    Identical, byte for byte, to ``pycocotools.mask.encode`` of the
    corresponding :func:`paste_masks_in_image` mask; the full ``H x W`` mask is
    never built.

    Args:
        masks: ``(N, 1, M, M)`` or ``(N, M, M)`` float16/float32 probabilities in ``[0, 1]``.
        boxes: ``(N, 4)`` xyxy boxes in image pixels.
        image_shape: ``(H, W)`` of the image.
        threshold: as in :func:`paste_masks_in_image`.

    Returns:
        ``N`` dicts ``{"size": [H, W], "counts": str}`` (utf-8 decoded, JSON-serialisable).
    """
    masks, box_list, height, width = _prepare(masks, boxes, image_shape, threshold)
    rles = []
    for i, box in enumerate(box_list):
        win = _box_window(box, height, width)
        if win is None:
            counts = [height * width]
        else:
            win_mask = _paste_window(masks[i], box, win, threshold).cpu().numpy()
            counts = _window_rle_counts(win_mask, win, height, width)
        rle = mask_util.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
        rles.append({"size": [height, width], "counts": rle["counts"].decode("utf-8")})
    return rles
