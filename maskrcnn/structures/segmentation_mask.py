"""Compact instance masks: polygons and COCO RLE, rasterised only inside a box.

An :class:`InstanceMasks` holds the masks of one image. Polygons are stored
flat (all points of all parts in one ``(P, 2)`` tensor) so that resize, flip and
crop are single tensor operations. RLE masks stay as their original COCO RLE
plus one per-image axis-aligned transform ``current = a * original + b``; they
are decoded only when a training target is made for them.

No dense full-image mask per instance is built in training: mask targets are
sampled directly at the ``M x M`` cell centres of each proposal box
(:meth:`InstanceMasks.crop_and_resize`), by a batched point-in-polygon test.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

Size = Tuple[int, int]

# Upper bound of (parts x edges x M*M) elements evaluated at once by the
# point-in-polygon test: keeps temporaries near 100 MB for huge polygons.
_MAX_ELEMS = 8_000_000


class InstanceMasks:
    """Masks of the instances of one image.

    Args:
        polygons: per instance, a list of parts; each part a flat
            ``[x0, y0, x1, y1, ...]`` sequence (COCO polygon format), or ``None``
            for instances given by ``rles``.
        size: ``(height, width)`` of the image.
        rles: optional per-instance COCO RLE dicts (``{"size": [h, w], "counts": ...}``)
            for instances whose ``polygons`` entry is ``None``.
    """

    def __init__(self, polygons: Sequence[Optional[Sequence[Sequence[float]]]], size: Size,
                 rles: Optional[Sequence[Optional[dict]]] = None) -> None:
        n = len(polygons)
        rles = list(rles) if rles is not None else [None] * n
        if len(rles) != n:
            raise ValueError("polygons and rles must have one entry per instance")
        pts: List[np.ndarray] = []
        lengths: List[int] = []
        owners: List[int] = []
        for i, parts in enumerate(polygons):
            if parts is None:
                if rles[i] is None:
                    raise ValueError(f"instance {i} has neither polygons nor RLE")
                continue
            for part in parts:
                arr = np.asarray(part, dtype=np.float32).reshape(-1, 2)
                pts.append(arr)
                lengths.append(arr.shape[0])
                owners.append(i)
        points = torch.from_numpy(np.concatenate(pts, 0)) if pts else torch.zeros((0, 2))
        ptr = torch.zeros(len(lengths) + 1, dtype=torch.long)
        if lengths:
            ptr[1:] = torch.cumsum(torch.tensor(lengths), 0)
        self._init(points, ptr, torch.tensor(owners, dtype=torch.long), rles, size,
                   torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64))

    def _init(self, points, part_ptr, part_owner, rles, size, affine) -> None:
        self.points = points          # (P, 2) x, y in current image pixels
        self.part_ptr = part_ptr      # (n_parts + 1,) offsets into points
        self.part_owner = part_owner  # (n_parts,) instance index of each part
        self.rles: List[Optional[dict]] = list(rles)
        self.size: Size = (int(size[0]), int(size[1]))
        self.affine = affine          # (ax, bx, ay, by): current = a * original + b (RLE only)

    def _new(self, points, size, affine) -> "InstanceMasks":
        out = InstanceMasks.__new__(InstanceMasks)
        out._init(points, self.part_ptr, self.part_owner, self.rles, size, affine)
        return out

    def __len__(self) -> int:
        return len(self.rles)

    def __repr__(self) -> str:
        return f"InstanceMasks(num_instances={len(self)}, image_size(h,w)={self.size})"

    # ------------------------------------------------------------ transforms
    def resize(self, new_size: Size) -> "InstanceMasks":
        sy = float(new_size[0]) / self.size[0]
        sx = float(new_size[1]) / self.size[1]
        pts = self.points * self.points.new_tensor([sx, sy])
        a = self.affine * self.affine.new_tensor([sx, sx, sy, sy])
        return self._new(pts, new_size, a)

    def flip_horizontal(self) -> "InstanceMasks":
        w = self.size[1]
        pts = self.points.clone()
        pts[:, 0] = w - pts[:, 0]
        ax, bx, ay, by = self.affine.tolist()
        return self._new(pts, self.size, self.affine.new_tensor([-ax, w - bx, ay, by]))

    def crop(self, box: Sequence[float]) -> "InstanceMasks":
        """Shift to a crop window; polygons are not clipped (targets sample inside boxes)."""
        x0, y0, x1, y1 = [float(v) for v in box]
        pts = self.points - self.points.new_tensor([x0, y0])
        ax, bx, ay, by = self.affine.tolist()
        size = (int(round(y1 - y0)), int(round(x1 - x0)))
        return self._new(pts, size, self.affine.new_tensor([ax, bx - x0, ay, by - y0]))

    def to(self, device: Any) -> "InstanceMasks":
        return self  # masks stay on the CPU; targets are moved when made

    def __getitem__(self, item: Any) -> "InstanceMasks":
        n = len(self)
        idx = torch.arange(n)[item] if not isinstance(item, torch.Tensor) else None
        if idx is None:
            idx = torch.nonzero(item, as_tuple=False).flatten() if item.dtype == torch.bool else item.long()
        idx = idx.reshape(-1).cpu()
        new_index = torch.full((n,), -1, dtype=torch.long)
        new_index[idx] = torch.arange(idx.numel())
        if idx.numel() != torch.unique(idx).numel():
            raise ValueError("InstanceMasks cannot be indexed with repeated instances")
        keep_parts = new_index[self.part_owner] >= 0 if self.part_owner.numel() else self.part_owner.bool()
        lengths = self.part_ptr[1:] - self.part_ptr[:-1]
        point_part = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
        keep_points = keep_parts[point_part] if point_part.numel() else keep_parts.new_zeros(0)
        kept_lengths = lengths[keep_parts]
        owners = new_index[self.part_owner[keep_parts]]
        # Parts must stay grouped per part; their order inside the flat array does not matter.
        out = InstanceMasks.__new__(InstanceMasks)
        ptr = torch.zeros(kept_lengths.numel() + 1, dtype=torch.long)
        ptr[1:] = torch.cumsum(kept_lengths, 0)
        out._init(self.points[keep_points], ptr, owners, [self.rles[i] for i in idx.tolist()],
                  self.size, self.affine)
        return out

    # -------------------------------------------------------------- targets
    def crop_and_resize(self, boxes: torch.Tensor, indices: torch.Tensor, m: int) -> torch.Tensor:
        """Binary mask targets of instances ``indices`` inside ``boxes``.

        Cell ``(i, j)`` of the ``m x m`` target is 1 when the point at the cell's
        centre, ``(x1 + (j + 0.5) * w / m, y1 + (i + 0.5) * h / m)``, is inside
        the instance (union of its polygon parts, even-odd rule within a part).

        Args:
            boxes: ``(K, 4)`` xyxy boxes in current image pixels.
            indices: ``(K,)`` instance index for each box.
            m: output resolution.

        Returns:
            ``(K, m, m)`` float tensor of 0/1 on ``boxes.device``.
        """
        device = boxes.device
        k = boxes.shape[0]
        out = torch.zeros((k, m, m), dtype=torch.float32)
        if k == 0:
            return out.to(device)
        boxes_c = boxes.detach().float().cpu()
        indices = indices.cpu().long()
        is_rle = torch.tensor([r is not None for r in self.rles], dtype=torch.bool)
        poly_rows = torch.nonzero(~is_rle[indices], as_tuple=False).flatten()
        if poly_rows.numel():
            out[poly_rows] = self._polygon_targets(boxes_c[poly_rows], indices[poly_rows], m)
        for row in torch.nonzero(is_rle[indices], as_tuple=False).flatten().tolist():
            out[row] = self._rle_target(boxes_c[row], int(indices[row]), m)
        return out.to(device)

    def _cell_centres(self, boxes: torch.Tensor, m: int) -> Tuple[torch.Tensor, torch.Tensor]:
        t = (torch.arange(m, dtype=torch.float32) + 0.5) / m
        xs = boxes[:, 0:1] + t[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # (K, m)
        ys = boxes[:, 1:2] + t[None] * (boxes[:, 3:4] - boxes[:, 1:2])
        return xs, ys

    def _polygon_targets(self, boxes: torch.Tensor, inst: torch.Tensor, m: int) -> torch.Tensor:
        k = boxes.shape[0]
        xs, ys = self._cell_centres(boxes, m)
        # Pairs (row of the output, polygon part) for every part of every requested instance.
        part_match = inst[:, None] == self.part_owner[None, :]  # (K, n_parts)
        rows, parts = torch.nonzero(part_match, as_tuple=True)
        result = torch.zeros((k, m * m), dtype=torch.int32)
        if parts.numel() == 0:
            return result.view(k, m, m).float()
        starts = self.part_ptr[parts]
        lengths = self.part_ptr[parts + 1] - starts
        e_max = int(lengths.max())
        step = max(1, _MAX_ELEMS // max(1, e_max * m * m))
        for c in range(0, parts.numel(), step):
            r, s, ln = rows[c:c + step], starts[c:c + step], lengths[c:c + step]
            j = torch.arange(e_max)
            valid = j[None, :] < ln[:, None]  # (p, E)
            i0 = s[:, None] + torch.minimum(j[None, :], (ln[:, None] - 1).clamp(min=0))
            i1 = s[:, None] + torch.remainder(j[None, :] + 1, ln[:, None].clamp(min=1))
            p0, p1 = self.points[i0], self.points[i1]  # (p, E, 2)
            px = xs[r][:, None, :].expand(-1, m, -1).reshape(-1, 1, m * m)  # (p, 1, m*m)
            py = ys[r][:, :, None].expand(-1, -1, m).reshape(-1, 1, m * m)
            x0, y0 = p0[..., 0:1], p0[..., 1:2]
            x1, y1 = p1[..., 0:1], p1[..., 1:2]
            crosses = (y0 > py) != (y1 > py)
            x_at = x0 + (py - y0) * (x1 - x0) / torch.where(y1 == y0, torch.ones_like(y1), y1 - y0)
            hit = crosses & (px < x_at) & valid[..., None]
            inside = (hit.sum(1) % 2) == 1  # (p, m*m)
            result.index_add_(0, r, inside.int())
        return (result > 0).view(k, m, m).float()

    def _rle_target(self, box: torch.Tensor, inst: int, m: int) -> torch.Tensor:
        from pycocotools import mask as mask_utils
        from torchvision.ops import roi_align

        rle = self.rles[inst]
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, *rle["size"])
        full = torch.from_numpy(mask_utils.decode(rle).astype(np.float32))  # original pixels
        ax, bx, ay, by = self.affine.tolist()
        xa, xb = (float(box[0]) - bx) / ax, (float(box[2]) - bx) / ax
        ya, yb = (float(box[1]) - by) / ay, (float(box[3]) - by) / ay
        obox = torch.tensor([[0.0, min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)]])
        # aligned=True samples the same cell centres as the polygon path.
        t = roi_align(full[None, None], obox, (m, m), 1.0, sampling_ratio=1, aligned=True)[0, 0]
        if ax < 0:
            t = t.flip(1)
        if ay < 0:
            t = t.flip(0)
        return (t >= 0.5).float()
