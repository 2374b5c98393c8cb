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

Arithmetic (the same in every implementation, so that all give identical masks, ties
included): per axis, in float64, ``s = ((p + 0.5) - lo) * (M / (hi - lo)) - 0.5``
(``NaN`` -> ``-2``, clamped to ``[-2, M]``), ``j0 = floor(s)``, ``f = s - j0``, weights
``float32(1 - f)`` and ``float32(f)`` for taps ``j0`` and ``j0 + 1``. Then in float32,
each product and each sum rounded on its own (no fused multiply-add, no matrix product):
first along ``y`` for each grid column, ``c = m[i0, j] * wy0 + m[i0 + 1, j] * wy1``, then
along ``x``, ``v = c[j0] * wx0 + c[j0 + 1] * wx1``; taps off the grid read 0. The mask is
``v >= float32(threshold)``. float16/bfloat16 masks are converted to float32 first (exact).

Implementations:

* pure PyTorch (:mod:`maskrcnn.layers.mask_window`), on any device: per box, whole-tensor
  ops over the window in tiles, float temporaries bounded by ``TILE_BYTES``;
* the CUDA kernel of ``csrc/paste_masks`` (``maskrcnn._C``, optional, loaded lazily by
  :mod:`maskrcnn.layers._ext`): one fused launch for all boxes, no float temporary.

``impl="auto"`` uses the kernel for CUDA tensors when the extension is built, else PyTorch.
:func:`masks_to_rle` encodes COCO RLE directly from each window (:mod:`maskrcnn.layers.rle`),
never building the full ``H x W`` mask.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import _ext
from .mask_window import TILE_BYTES, TileScratch, Window, window_value_tiles
from .paste_rules import PASTE_RULES, rule_geometry
from .rle import WindowRunEncoder, compress_counts

__all__ = ["TILE_BYTES", "PACK_BYTES", "paste_masks_in_image", "masks_to_rle"]

#: Upper bound, in bytes, of the windows the CUDA kernel packs per launch for :func:`masks_to_rle`
#: (a single window larger than this is still done whole).
PACK_BYTES = 64 * 2 ** 20

_IMPLS = ("auto", "torch", "cuda")


def _prepare(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Sequence[int],
             threshold: float) -> Tuple[torch.Tensor, torch.Tensor, int, int, float]:
    """Validate inputs.

    Returns:
        ``(N, M, M)`` masks (dtype kept), ``(N, 4)`` boxes, ``H``, ``W``, and the threshold
        rounded to float32 (the value every implementation compares with).
    """
    if threshold < 0.5:
        raise ValueError(f"threshold must be >= 0.5 for the box-local window rule, got {threshold}")
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks must be (N, 1, M, M), got {tuple(masks.shape)}")
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks must be (N, M, M) or (N, 1, M, M), got {tuple(masks.shape)}")
    if not masks.is_floating_point():
        raise ValueError(f"masks must be floating point, got {masks.dtype}")
    masks = masks.detach()  # the output is boolean: nothing to differentiate
    boxes = torch.as_tensor(boxes).detach().reshape(-1, 4)
    if boxes.shape[0] != masks.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {boxes.shape[0]} boxes")
    height, width = int(image_shape[0]), int(image_shape[1])
    return masks, boxes, height, width, float(np.float32(threshold))


def _rule_threshold(thr: float, rule: str) -> float:
    """The float32 value compared with ``>=``: the torchvision rule is strict (``v > thr``, as
    torchvision's ``masks > 0.5``), i.e. ``>=`` the next float32 above ``thr``."""
    if rule == "torchvision":
        return float(np.nextafter(np.float32(thr), np.float32(np.inf)))
    return thr


def _use_kernel(masks: torch.Tensor, impl: str, rule: str = "center") -> bool:
    """Whether the compiled op serves this call (see ``impl`` in :func:`paste_masks_in_image`).

    The kernel implements the ``"center"`` rule; other rules take the PyTorch path.
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if rule not in PASTE_RULES:
        raise ValueError(f"paste rule must be one of {PASTE_RULES}, got {rule!r}")
    if rule != "center":
        if impl == "cuda":
            raise ValueError(f"impl='cuda' implements the 'center' rule only, not {rule!r}")
        return False
    if impl == "torch" or (impl == "auto" and not masks.is_cuda):
        return False
    if impl == "cuda" and not masks.is_cuda:
        raise ValueError("impl='cuda' needs masks on a CUDA device")
    loaded, reason = _ext.load_status()
    if impl == "cuda" and not loaded:
        raise RuntimeError(f"impl='cuda' but maskrcnn._C is not available: {reason}")
    return loaded


def paste_masks_in_image(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Sequence[int],
                         threshold: float = 0.5, *, impl: str = "auto",
                         rule: str = "center") -> torch.Tensor:
    """Paste ``M x M`` mask probabilities into full-image binary masks.

    Args:
        masks: ``(N, 1, M, M)`` or ``(N, M, M)`` float16/float32 probabilities in ``[0, 1]``.
        boxes: ``(N, 4)`` xyxy boxes in image pixels.
        image_shape: ``(H, W)`` of the image.
        threshold: pixels with interpolated value ``>= threshold`` are true (must be ``>= 0.5``).
        impl: ``"auto"`` (the CUDA kernel for CUDA masks when ``maskrcnn._C`` is built, else
            PyTorch), ``"torch"`` (always PyTorch) or ``"cuda"`` (the kernel; an error if the
            masks are not on a CUDA device or the extension is not built).
        rule: ``"center"`` (the rule above) or ``"torchvision"`` (torchvision's placement of
            the grid, for its weights; see :mod:`maskrcnn.layers.paste_rules`; PyTorch path).

    Returns:
        ``(N, H, W)`` bool tensor on ``masks.device``. Temporaries beyond it: none with the
        kernel; with PyTorch, ``TILE_BYTES`` plus ``O(M * (H + W))`` per box.
    """
    masks, boxes, height, width, thr = _prepare(masks, boxes, image_shape, threshold)
    thr = _rule_threshold(thr, rule)
    if _use_kernel(masks, impl, rule):
        return _ext.paste_ops().paste_masks(masks, boxes.to(masks.device, torch.float64),
                                            height, width, thr)
    masks = masks.float()
    out = torch.zeros((masks.shape[0], height, width), dtype=torch.bool, device=masks.device)
    scratch = TileScratch(masks.device)
    m = masks.shape[-1]
    for i, box in enumerate(boxes.double().cpu().tolist()):
        geometry = rule_geometry(box, m, rule, height, width)
        if geometry is None:
            continue
        grid_box, win = geometry
        y0, _, x0, xe = win
        for first, val in window_value_tiles(masks[i], grid_box, win, scratch=scratch):
            _threshold(val, thr, out[i, y0 + first:y0 + first + val.shape[0], x0:xe])
    return out


def _threshold(values: torch.Tensor, thr: float, out: torch.Tensor) -> None:
    """``out[...] = values >= thr``; NumPy on the CPU (several times faster than ``torch.ge``
    into bool there, same exact comparison)."""
    if values.device == out.device and values.is_cuda:
        torch.ge(values, thr, out=out)
    elif values.is_cuda or out.is_cuda:
        out.copy_(values >= thr)
    else:
        np.greater_equal(values.numpy(), np.float32(thr), out=out.numpy())


def _torch_counts(mask: torch.Tensor, box: List[float], win: Optional[Window], height: int,
                  width: int, thr: float, scratch: TileScratch) -> List[int]:
    """Uncompressed RLE counts of one pasted mask, PyTorch path, tile by tile."""
    if win is None:
        return [height * width]
    enc = WindowRunEncoder(win, height, width)
    for first, val in window_value_tiles(mask, box, win, x_major=True, scratch=scratch):
        _threshold(val, thr, enc.buffer(val.shape[0]))
        enc.add(first, val.shape[0])
    return enc.counts()


def _kernel_counts(masks: torch.Tensor, boxes: torch.Tensor, wins: List[Optional[Window]],
                   height: int, width: int, thr: float) -> List[List[int]]:
    """Uncompressed RLE counts of every mask: packed windows from the kernel, encoded here."""
    ops = _ext.paste_ops()
    boxes = boxes.to(masks.device, torch.float64)
    rect = [w if w is not None else (0, 0, 0, 0) for w in wins]
    sizes = [(ye - y0) * (xe - x0) for y0, ye, x0, xe in rect]
    counts: List[List[int]] = []
    start = 0
    while start < len(rect):
        stop, total = start + 1, sizes[start]
        while stop < len(rect) and total + sizes[stop] <= PACK_BYTES:
            total += sizes[stop]
            stop += 1
        windows = torch.tensor(rect[start:stop], dtype=torch.int64).reshape(-1, 4)
        flat = ops.paste_masks_packed(masks[start:stop], boxes[start:stop], windows, thr).cpu()
        offset = 0
        for k in range(start, stop):
            if wins[k] is None:
                counts.append([height * width])
                continue
            y0, ye, x0, xe = wins[k]
            enc = WindowRunEncoder(wins[k], height, width)
            enc.buffer(xe - x0).copy_(flat[offset:offset + sizes[k]].view(xe - x0, ye - y0))
            enc.add(0, xe - x0)
            counts.append(enc.counts())
            offset += sizes[k]
        start = stop
    return counts


def masks_to_rle(masks: torch.Tensor, boxes: torch.Tensor, image_shape: Sequence[int],
                 threshold: float = 0.5, *, impl: str = "auto",
                 rule: str = "center") -> List[Dict[str, object]]:
    """COCO compressed RLE of each pasted mask, encoded from its box-local window only.

    Identical, byte for byte, to ``pycocotools.mask.encode`` of the
    corresponding :func:`paste_masks_in_image` mask; the full ``H x W`` mask is
    never built.

    Args:
        masks: ``(N, 1, M, M)`` or ``(N, M, M)`` float16/float32 probabilities in ``[0, 1]``.
        boxes: ``(N, 4)`` xyxy boxes in image pixels.
        image_shape: ``(H, W)`` of the image.
        threshold: as in :func:`paste_masks_in_image`.
        impl: as in :func:`paste_masks_in_image`; the kernel writes the windows of up to
            ``PACK_BYTES`` per launch, copied once to the host for encoding.
        rule: as in :func:`paste_masks_in_image`.

    Returns:
        ``N`` dicts ``{"size": [H, W], "counts": str}`` (utf-8 decoded, JSON-serialisable).
    """
    masks, boxes, height, width, thr = _prepare(masks, boxes, image_shape, threshold)
    thr = _rule_threshold(thr, rule)
    box_list = boxes.double().cpu().tolist()
    geometry = [rule_geometry(box, masks.shape[-1], rule, height, width) for box in box_list]
    wins = [None if g is None else g[1] for g in geometry]
    if _use_kernel(masks, impl, rule):
        counts = _kernel_counts(masks, boxes, wins, height, width, thr)
    else:
        masks = masks.float()
        scratch = TileScratch(masks.device)
        # compressed one mask at a time: uncompressed counts are Python ints, ~10x larger
        return [compress_counts(_torch_counts(masks[i], g[0] if g else None, g[1] if g else None,
                                              height, width, thr, scratch), height, width)
                for i, g in enumerate(geometry)]
    return [compress_counts(c, height, width) for c in counts]
