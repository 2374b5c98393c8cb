"""Mask targets of a batch, computed on the device of the boxes, without waiting for it.

Cell ``(i, j)`` of the ``m x m`` target of a box ``(x1, y1, x2, y2)`` is the instance's value
at the cell centre ``(x1 + (j + 0.5) * w / m, y1 + (i + 0.5) * h / m)``:

* polygons: 1 when the centre is inside one of the instance's parts (even-odd rule within a
  part, union over parts). All rows are done together on the device: for each row of cells,
  the x-coordinates where the part's edges cross it are sorted, and the number of them to the
  right of each centre comes from one ``searchsorted``; no per-instance loop, no host copy.
* RLE: each instance is decoded once per call (on the host, where the RLE is) into the
  box of its pixels plus a one-pixel margin; those crops, edge-padded to one size, go to
  the device once, and all rows are sampled by ONE ``roi_align`` (``aligned=True``, one
  sample per cell: the bilinear value at the cell centre) through the per-image transform,
  then thresholded at 0.5 (as torchvision's ``project_masks_on_boxes``).

Everything the host contributes (the part tables, the decoded crops) depends on the ground
truth only, never on the boxes, so nothing is read back from the device.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import roi_align

# Upper bound of (rows x parts x m x edges) elements evaluated at once by the polygon test:
# keeps temporaries near 100 MB for huge polygons.
_MAX_ELEMS = 8_000_000


def mask_targets(masks: Sequence, boxes: Sequence[torch.Tensor], indices: Sequence[torch.Tensor],
                 m: int) -> torch.Tensor:
    """Binary ``m x m`` targets of instance ``indices[i][k]`` of image ``i`` inside ``boxes[i][k]``.

    Args:
        masks: per image, an :class:`~maskrcnn.structures.segmentation_mask.InstanceMasks`.
        boxes: per image, ``(K_i, 4)`` xyxy boxes in the current image pixels.
        indices: per image, ``(K_i,)`` int64 instance index of each box.
        m: output resolution.

    Returns:
        ``(sum K_i, m, m)`` float32 tensor of 0/1 on the device of the boxes.
    """
    total = sum(int(b.shape[0]) for b in boxes)
    device = boxes[0].device if len(boxes) else torch.device("cpu")
    if total == 0:
        return torch.zeros((0, m, m), dtype=torch.float32, device=device)
    offsets = np.cumsum([0] + [len(mk) for mk in masks])
    rows = torch.cat([b.detach().float() for b in boxes])
    inst = torch.cat([idx.to(device).long() + int(o) for idx, o in zip(indices, offsets[:-1])])
    is_rle = np.array([r is not None for mk in masks for r in mk.rles], dtype=bool)
    out: Optional[torch.Tensor] = None
    if (~is_rle).any():
        out = _polygon_targets(masks, rows, inst, m)
    if is_rle.any():
        rle = _rle_targets(masks, rows, inst, m)
        if out is None:
            out = rle
        else:
            row_is_rle = torch.from_numpy(is_rle).to(device, non_blocking=True)[inst]
            out = torch.where(row_is_rle[:, None, None], rle, out)
    return out


# ---------------------------------------------------------------- polygons
def _part_tables(masks: Sequence) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Host tables of the parts of every instance of the batch.

    Returns:
        ``parts (n_inst, P)``: part ids of each instance, padded with a dummy part id;
        ``first (n_parts + 1, E)`` and ``second``: point indices of the two ends of each edge;
        ``valid (n_parts + 1, E)``: real edges (the dummy part, last, has none).
    """
    lengths, starts, owners = [], [], []
    point_base, inst_base = 0, 0
    for mk in masks:
        ptr = mk.part_ptr.numpy()
        lengths.append(ptr[1:] - ptr[:-1])
        starts.append(ptr[:-1] + point_base)
        owners.append(mk.part_owner.numpy() + inst_base)
        point_base += int(ptr[-1])
        inst_base += len(mk)
    lengths, starts, owners = (np.concatenate(a).astype(np.int64) for a in (lengths, starts, owners))
    n_parts = lengths.size
    per_inst = np.bincount(owners, minlength=inst_base)
    parts = np.full((inst_base, max(1, int(per_inst.max(initial=0)))), n_parts, dtype=np.int64)
    order = np.argsort(owners, kind="stable")
    slot = np.arange(n_parts) - np.repeat(np.cumsum(per_inst) - per_inst, per_inst)
    parts[owners[order], slot] = order
    e = max(1, int(lengths.max(initial=0)))
    j = np.arange(e)[None, :]
    ln = np.concatenate([lengths, [0]])[:, None]
    st = np.concatenate([starts, [0]])[:, None]
    valid = j < ln
    first = st + np.minimum(j, np.maximum(ln - 1, 0))
    second = st + np.remainder(j + 1, np.maximum(ln, 1))
    return parts, first, second, valid


def _cell_centres(rows: torch.Tensor, m: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(K, m)`` x and y of the cell centres of each box."""
    t = (torch.arange(m, dtype=torch.float32, device=rows.device) + 0.5) / m
    xs = rows[:, 0:1] + t[None] * (rows[:, 2:3] - rows[:, 0:1])
    ys = rows[:, 1:2] + t[None] * (rows[:, 3:4] - rows[:, 1:2])
    return xs, ys


def _polygon_targets(masks: Sequence, rows: torch.Tensor, inst: torch.Tensor, m: int) -> torch.Tensor:
    device = rows.device
    parts, first, second, valid = (torch.from_numpy(a).to(device, non_blocking=True)
                                   for a in _part_tables(masks))
    # One extra point so that the dummy part's (invalid) edges index something.
    points = torch.cat([mk.points.to(device, non_blocking=True).float() for mk in masks]
                       + [rows.new_zeros((1, 2))])
    xs, ys = _cell_centres(rows, m)
    k, p, e = rows.shape[0], parts.shape[1], first.shape[1]
    step = max(1, _MAX_ELEMS // (p * m * max(e, m)))
    out = []
    for c in range(0, k, step):
        part = parts[inst[c:c + step]]                                   # (k, P)
        p0, p1 = points[first[part]], points[second[part]]               # (k, P, E, 2)
        x0, y0 = p0[..., 0][:, :, None, :], p0[..., 1][:, :, None, :]    # (k, P, 1, E)
        x1, y1 = p1[..., 0][:, :, None, :], p1[..., 1][:, :, None, :]
        py = ys[c:c + step][:, None, :, None]                            # (k, 1, m, 1)
        crosses = ((y0 > py) != (y1 > py)) & valid[part][:, :, None, :]  # (k, P, m, E)
        x_at = x0 + (py - y0) * (x1 - x0) / torch.where(y1 == y0, torch.ones_like(y1), y1 - y0)
        x_at = torch.where(crosses, x_at, torch.full_like(x_at, -float("inf"))).sort(-1).values
        px = xs[c:c + step][:, None, None, :].expand(-1, p, m, -1).contiguous()  # (k, P, m, m)
        # Crossings strictly right of the centre: edges with x_at > px.
        right = e - torch.searchsorted(x_at, px, right=True)
        out.append(((right % 2) == 1).any(1))
    return torch.cat(out).float()


# --------------------------------------------------------------------- RLE
def _decode_crops(masks: Sequence) -> Tuple[List[np.ndarray], np.ndarray]:
    """Each RLE instance decoded once, cut to its pixels plus a one-pixel margin.

    Returns:
        the crops, and ``(n_inst, 3)`` per instance: crop slot (the last slot, all zeros, for
        polygon instances), and the crop's origin ``x, y`` in original pixels.
    """
    from pycocotools import mask as mask_utils

    crops: List[np.ndarray] = []
    table = []
    for mk in masks:
        for rle in mk.rles:
            if rle is None:
                table.append((-1, 0, 0))
                continue
            if isinstance(rle.get("counts"), list):
                rle = mask_utils.frPyObjects(rle, *rle["size"])
            full = mask_utils.decode(rle)
            ys, xs = np.nonzero(full.any(1))[0], np.nonzero(full.any(0))[0]
            if xs.size == 0:
                crop, x0, y0 = np.zeros((1, 1), np.uint8), 0, 0
            else:
                x0, y0 = max(0, int(xs[0]) - 1), max(0, int(ys[0]) - 1)
                crop = full[y0:int(ys[-1]) + 2, x0:int(xs[-1]) + 2]
            table.append((len(crops), x0, y0))
            crops.append(crop)
    table = np.array(table, dtype=np.int64).reshape(-1, 3)
    table[table[:, 0] < 0, 0] = len(crops)
    return crops, table


def _rle_targets(masks: Sequence, rows: torch.Tensor, inst: torch.Tensor, m: int) -> torch.Tensor:
    device = rows.device
    crops, table = _decode_crops(masks)
    h = max(c.shape[0] for c in crops)
    w = max(c.shape[1] for c in crops)
    # Edge padding: sampling past a crop's last row / column reads that row / column, as
    # roi_align clamps at the border of an unpadded image.
    stack = np.zeros((len(crops) + 1, 1, h, w), np.float32)
    for i, c in enumerate(crops):
        stack[i, 0] = np.pad(c, ((0, h - c.shape[0]), (0, w - c.shape[1])), mode="edge")
    stack = torch.from_numpy(stack).to(device, non_blocking=True)
    affine = np.repeat(np.array([mk.affine for mk in masks], np.float64), [len(mk) for mk in masks], 0)
    params = np.concatenate([affine.reshape(-1, 4), table[:, 1:].astype(np.float64)], 1)
    params = torch.from_numpy(params).to(device, non_blocking=True)[inst]        # (K, 6)
    slot = torch.from_numpy(table[:, 0]).to(device, non_blocking=True)[inst]
    ax, bx, ay, by, ox, oy = params.unbind(1)
    r = rows.double()
    xa, xb = (r[:, 0] - bx) / ax, (r[:, 2] - bx) / ax
    ya, yb = (r[:, 1] - by) / ay, (r[:, 3] - by) / ay
    rois = torch.stack([slot.double(), torch.minimum(xa, xb) - ox, torch.minimum(ya, yb) - oy,
                        torch.maximum(xa, xb) - ox, torch.maximum(ya, yb) - oy], 1).float()
    # aligned=True samples the same cell centres as the polygon path.
    t = roi_align(stack, rois, (m, m), 1.0, sampling_ratio=1, aligned=True)[:, 0]
    t = torch.where((ax < 0)[:, None, None], t.flip(2), t)
    t = torch.where((ay < 0)[:, None, None], t.flip(1), t)
    return (t >= 0.5).float()
