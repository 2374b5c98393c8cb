"""BoxList: a set of boxes for one image, plus named per-box fields.

Conventions (the one place they are written down):

* Boxes are float ``xyxy`` in continuous pixel coordinates: a box covering the
  whole ``(H, W)`` image is ``(0, 0, W, H)``. There is no legacy "+1": width is
  ``x2 - x1``.
* Image sizes are ``(height, width)``, like tensor shapes, everywhere in the
  code base.
* Class labels stored in a BoxList are contiguous indices where ``0`` is
  background and ``1..K`` are the dataset's categories in sorted-id order.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Sequence, Tuple, Union

import torch

Size = Tuple[int, int]


class BoxList:
    """Boxes of one image with extra per-box fields (labels, scores, masks...).

    Args:
        boxes: ``(N, 4)`` float tensor, xyxy.
        image_size: ``(height, width)`` of the image the boxes live in.
    """

    def __init__(self, boxes: torch.Tensor, image_size: Size) -> None:
        if not isinstance(boxes, torch.Tensor):
            boxes = torch.as_tensor(boxes, dtype=torch.float32)
        if boxes.numel() == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
        if not boxes.is_floating_point():
            boxes = boxes.float()
        self.bbox = boxes
        self.size: Size = (int(image_size[0]), int(image_size[1]))
        self.extra_fields: Dict[str, Any] = {}

    # ------------------------------------------------------------------ fields
    def add_field(self, name: str, value: Any) -> None:
        self.extra_fields[name] = value

    def get_field(self, name: str) -> Any:
        return self.extra_fields[name]

    def has_field(self, name: str) -> bool:
        return name in self.extra_fields

    def fields(self) -> List[str]:
        return list(self.extra_fields.keys())

    def _copy_with(self, boxes: torch.Tensor, size: Size, fields: Dict[str, Any]) -> "BoxList":
        out = BoxList(boxes, size)
        out.extra_fields = fields
        return out

    # -------------------------------------------------------------- geometry
    def resize(self, new_size: Size) -> "BoxList":
        """Scale boxes (and fields that know how) to an image of ``new_size`` (h, w)."""
        sy = float(new_size[0]) / self.size[0]
        sx = float(new_size[1]) / self.size[1]
        scale = self.bbox.new_tensor([sx, sy, sx, sy])
        fields = {k: (v.resize(new_size) if _geometric(v, "resize") else v)
                  for k, v in self.extra_fields.items()}
        return self._copy_with(self.bbox * scale, new_size, fields)

    def flip_horizontal(self) -> "BoxList":
        w = self.size[1]
        x1, y1, x2, y2 = self.bbox.unbind(1)
        boxes = torch.stack([w - x2, y1, w - x1, y2], dim=1)
        fields = {k: (v.flip_horizontal() if _geometric(v, "flip_horizontal") else v)
                  for k, v in self.extra_fields.items()}
        return self._copy_with(boxes, self.size, fields)

    def flip_vertical(self) -> "BoxList":
        h = self.size[0]
        x1, y1, x2, y2 = self.bbox.unbind(1)
        boxes = torch.stack([x1, h - y2, x2, h - y1], dim=1)
        fields = {k: (v.flip_vertical() if _geometric(v, "flip_vertical") else v)
                  for k, v in self.extra_fields.items()}
        return self._copy_with(boxes, self.size, fields)

    def crop(self, box: Sequence[float]) -> "BoxList":
        """Crop to ``box`` (x1, y1, x2, y2); boxes are shifted and clipped to it."""
        x0, y0, x1, y1 = [float(v) for v in box]
        h, w = int(round(y1 - y0)), int(round(x1 - x0))
        shifted = self.bbox - self.bbox.new_tensor([x0, y0, x0, y0])
        shifted[:, 0::2] = shifted[:, 0::2].clamp(0, w)
        shifted[:, 1::2] = shifted[:, 1::2].clamp(0, h)
        fields = {k: (v.crop(box) if _geometric(v, "crop") else v)
                  for k, v in self.extra_fields.items()}
        return self._copy_with(shifted, (h, w), fields)

    def clip_to_image(self, remove_empty: bool = True) -> "BoxList":
        """Clip boxes to the image; optionally drop boxes left with no area."""
        boxes = clip_boxes(self.bbox, self.size)
        out = self._copy_with(boxes, self.size, dict(self.extra_fields))
        if remove_empty:
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            out = out[keep]
        return out

    def area(self) -> torch.Tensor:
        """``(N,)`` box areas in pixels squared."""
        b = self.bbox
        return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)

    def nonempty(self, min_size: float = 0.0) -> torch.Tensor:
        """``(N,)`` bool: boxes whose width and height exceed ``min_size``."""
        b = self.bbox
        return ((b[:, 2] - b[:, 0]) > min_size) & ((b[:, 3] - b[:, 1]) > min_size)

    # ------------------------------------------------------------- container
    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "BoxList":
        """Boxes and every field that has ``to(device, non_blocking=...)`` on ``device``."""
        fields = {k: (v.to(device, non_blocking=non_blocking) if hasattr(v, "to") else v)
                  for k, v in self.extra_fields.items()}
        return self._copy_with(self.bbox.to(device, non_blocking=non_blocking), self.size, fields)

    def pin_memory(self) -> "BoxList":
        """A copy in page-locked host memory: the boxes and every field that has
        ``pin_memory()`` (tensors, :class:`InstanceMasks`); other fields are shared.

        A DataLoader with ``pin_memory=True`` calls it on each target, so that the
        ``to(cuda, non_blocking=True)`` of :class:`maskrcnn.data.prefetch.DevicePrefetcher`
        is asynchronous for the targets too. Pinning needs a CUDA driver (torch raises without).
        """
        fields = {k: (v.pin_memory() if _pinnable(v) else v) for k, v in self.extra_fields.items()}
        return self._copy_with(self.bbox.pin_memory(), self.size, fields)

    def __getitem__(self, item: Any) -> "BoxList":
        if isinstance(item, int):
            item = torch.tensor([item])  # keep the dimension; negative ints count from the end
        fields = {k: v[item] for k, v in self.extra_fields.items()}
        return self._copy_with(self.bbox[item], self.size, fields)

    def __len__(self) -> int:
        return self.bbox.shape[0]

    def __repr__(self) -> str:
        return (f"BoxList(num_boxes={len(self)}, image_size(h,w)={self.size}, "
                f"fields={self.fields()})")


def clip_boxes(boxes: torch.Tensor, size: Size) -> torch.Tensor:
    """Clip ``(..., 4)`` xyxy boxes to an image of ``size`` (h, w)."""
    h, w = size
    return torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                        boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], dim=-1)


def _geometric(value: Any, method: str) -> bool:
    """Fields that follow the image geometry (masks); plain tensors (scores, labels,
    predicted M x M masks) are carried unchanged."""
    return hasattr(value, method) and not isinstance(value, torch.Tensor)


def _pinnable(value: Any) -> bool:
    return callable(getattr(value, "pin_memory", None)) and not isinstance(value, type)


def boxlist_iou(a: BoxList, b: BoxList) -> torch.Tensor:
    """``(len(a), len(b))`` IoU matrix. Both lists must describe the same image size."""
    if a.size != b.size:
        raise ValueError(f"boxlists of different image sizes: {a.size} vs {b.size}")
    return box_iou(a.bbox, b.bbox)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU between ``(N, 4)`` and ``(M, 4)`` xyxy tensors, ``(N, M)``; empty boxes give 0."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def cat_boxlist(lists: Iterable[BoxList]) -> BoxList:
    """Concatenate BoxLists of one image that carry the same fields."""
    lists = list(lists)
    if not lists:
        raise ValueError("cat_boxlist needs at least one BoxList")
    size = lists[0].size
    names = set(lists[0].fields())
    for bl in lists:
        if bl.size != size or set(bl.fields()) != names:
            raise ValueError("cat_boxlist: all BoxLists need the same image size and fields")
    out = BoxList(torch.cat([bl.bbox for bl in lists], 0), size)
    for name in names:
        values = [bl.get_field(name) for bl in lists]
        if isinstance(values[0], torch.Tensor):
            out.add_field(name, torch.cat(values, 0))
        elif hasattr(type(values[0]), "cat"):
            out.add_field(name, type(values[0]).cat(values))
        else:
            raise TypeError(f"cannot concatenate field '{name}' of type {type(values[0])}")
    return out
