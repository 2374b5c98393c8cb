"""COCO RLE of an image that is zero outside a box-local window, from the window alone.

COCO RLE runs over the image in column-major order (image index ``x * H + y``) and starts
with a run of zeros. The window arrives as tiles of window columns ``(t, h_win)`` in that
same order, each written into a ``(t, h_win + 1)`` buffer whose last element in every window
column stays ``False``. With that separator no run crosses a window column, so one flat scan
of the buffer finds every run's start and end. Runs that meet across an image column
boundary (possible only when the window spans the full image height) are joined at the end.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch

__all__ = ["WindowRunEncoder", "compress_counts"]


class WindowRunEncoder:
    """Collects the runs of ones of one image that is zero outside ``(y0, y1, x0, x1)``.

    Usage: for each tile of window columns, write it into :meth:`buffer` then call
    :meth:`add`; finally :meth:`counts`.

    Args:
        win: ``(y0, y1, x0, x1)`` window, end exclusive.
        height, width: image size.
    """

    def __init__(self, win: Tuple[int, int, int, int], height: int, width: int) -> None:
        self.y0, y1, self.x0, _ = win
        self.h = y1 - self.y0
        self.height, self.width = height, width
        self._buf = np.zeros((0, self.h + 1), dtype=np.bool_)
        self._starts: List[np.ndarray] = []
        self._ends: List[np.ndarray] = []

    def buffer(self, cols: int) -> torch.Tensor:
        """A writable ``(cols, h_win)`` bool CPU view that receives the next tile."""
        if cols > self._buf.shape[0]:
            self._buf = np.zeros((cols, self.h + 1), dtype=np.bool_)
        return torch.from_numpy(self._buf)[:cols, :self.h]

    def add(self, first: int, cols: int) -> None:
        """Record the runs of window columns ``first..first+cols-1`` written to :meth:`buffer`."""
        flat = self._buf[:cols].reshape(-1)
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        if flat[0]:
            change = np.concatenate([np.zeros(1, dtype=change.dtype), change])
        if change.size == 0:
            return
        # every window column ends with a False separator: changes alternate rise, fall
        col, row = np.divmod(change, self.h + 1)
        pos = (col + (self.x0 + first)) * self.height + (row + self.y0)
        self._starts.append(pos[0::2])
        self._ends.append(pos[1::2])

    def counts(self) -> List[int]:
        """Uncompressed COCO counts: run lengths alternating zeros/ones, starting with zeros."""
        total = self.height * self.width
        if not self._starts:
            return [total]
        starts = np.concatenate(self._starts)
        ends = np.concatenate(self._ends)
        join = ends[:-1] == starts[1:]  # run continues into the next image column
        if join.any():
            starts = np.concatenate([starts[:1], starts[1:][~join]])
            ends = np.concatenate([ends[:-1][~join], ends[-1:]])
        bounds = np.empty(2 * starts.size + 2, dtype=np.int64)
        bounds[0], bounds[-1] = 0, total
        bounds[1:-1:2], bounds[2:-1:2] = starts, ends
        counts = np.diff(bounds).tolist()
        return counts[:-1] if counts[-1] == 0 else counts  # no trailing empty run of zeros


def compress_counts(counts: List[int], height: int, width: int) -> Dict[str, object]:
    """COCO compressed RLE ``{"size": [H, W], "counts": str}`` of uncompressed ``counts``."""
    from pycocotools import mask as mask_util  # here: importing the package never needs pycocotools

    rle = mask_util.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("utf-8")}
