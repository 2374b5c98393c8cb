"""Compact instance masks: polygons and COCO RLE, rasterised only inside a box.

An :class:`InstanceMasks` holds the masks of one image. Polygons are stored
flat (all points of all parts in one ``(P, 2)`` tensor) so that resize, flip and
crop are single tensor operations. RLE masks stay as their original COCO RLE
plus one per-image axis-aligned transform ``current = a * original + b``; they
are decoded only when a training target is made for them.

No dense full-image mask per instance is built in training: mask targets are
sampled directly at the ``M x M`` cell centres of each proposal box, for the
whole batch at once on the device of the boxes
(:func:`maskrcnn.structures.mask_targets.mask_targets`;
:meth:`InstanceMasks.crop_and_resize` for one image). ``to(device)`` moves the
polygon points; the part tables and the RLEs stay on the host. ``pin_memory()`` (called by a
pinning DataLoader) pins every tensor, so that ``to(cuda, non_blocking=True)`` is asynchronous.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .mask_targets import mask_targets

Size = Tuple[int, int]
Affine = Tuple[float, float, float, float]


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
        self._init(points, ptr, torch.tensor(owners, dtype=torch.long), rles, size, (1.0, 0.0, 1.0, 0.0))

    def _init(self, points, part_ptr, part_owner, rles, size, affine: Affine) -> None:
        self.points = points          # (P, 2) x, y in current image pixels, on any device
        self.part_ptr = part_ptr      # (n_parts + 1,) offsets into points, on the host
        self.part_owner = part_owner  # (n_parts,) instance index of each part, on the host
        self.rles: List[Optional[dict]] = list(rles)
        self.size: Size = (int(size[0]), int(size[1]))
        self.affine: Affine = tuple(float(v) for v in affine)  # (ax, bx, ay, by): current = a * original + b

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
        ax, bx, ay, by = self.affine
        return self._new(pts, new_size, (ax * sx, bx * sx, ay * sy, by * sy))

    def flip_horizontal(self) -> "InstanceMasks":
        w = self.size[1]
        pts = self.points.clone()
        pts[:, 0] = w - pts[:, 0]
        ax, bx, ay, by = self.affine
        return self._new(pts, self.size, (-ax, w - bx, ay, by))

    def flip_vertical(self) -> "InstanceMasks":
        h = self.size[0]
        pts = self.points.clone()
        pts[:, 1] = h - pts[:, 1]
        ax, bx, ay, by = self.affine
        return self._new(pts, self.size, (ax, bx, -ay, h - by))

    def crop(self, box: Sequence[float]) -> "InstanceMasks":
        """Shift to a crop window; polygons are not clipped (targets sample inside boxes)."""
        x0, y0, x1, y1 = [float(v) for v in box]
        pts = self.points - self.points.new_tensor([x0, y0])
        ax, bx, ay, by = self.affine
        size = (int(round(y1 - y0)), int(round(x1 - x0)))
        return self._new(pts, size, (ax, bx - x0, ay, by - y0))

    def to(self, device: Any, non_blocking: bool = False) -> "InstanceMasks":
        """The polygon points on ``device`` (the part tables and RLEs stay on the host)."""
        return self._new(self.points.to(device, non_blocking=non_blocking), self.size, self.affine)

    def pin_memory(self) -> "InstanceMasks":
        """A copy whose tensors (the polygon points ``(P, 2)`` and the part tables) are in
        page-locked host memory; the COCO RLE dicts, Python data decoded on the host, are shared.
        Pinning needs a CUDA driver (torch raises without)."""
        out = InstanceMasks.__new__(InstanceMasks)
        out._init(self.points.pin_memory(), self.part_ptr.pin_memory(), self.part_owner.pin_memory(),
                  self.rles, self.size, self.affine)
        return out

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
        keep_points = torch.nonzero(keep_points, as_tuple=True)[0].to(self.points.device)
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
        the instance (union of its polygon parts, even-odd rule within a part; an RLE
        instance is sampled bilinearly there and thresholded at 0.5). See
        :func:`maskrcnn.structures.mask_targets.mask_targets`, which does a whole batch.

        Args:
            boxes: ``(K, 4)`` xyxy boxes in current image pixels.
            indices: ``(K,)`` instance index for each box.
            m: output resolution.

        Returns:
            ``(K, m, m)`` float tensor of 0/1 on ``boxes.device``.
        """
        return mask_targets([self], [boxes], [indices], m)
