"""TensorBoard event writing."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

__all__ = ["TensorboardWriter"]


class TensorboardWriter:
    """Thin wrapper around :class:`torch.utils.tensorboard.SummaryWriter`.

    TensorBoard is imported lazily, so importing :mod:`maskrcnn.utils` does
    not require it.

    Args:
        log_dir: Directory for the event files (created if needed).
        **kwargs: Passed on to ``SummaryWriter``.
    """

    def __init__(self, log_dir: str | os.PathLike, **kwargs: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = str(log_dir)
        self._writer = SummaryWriter(log_dir=self.log_dir, **kwargs)

    def add_scalars(self, d: Mapping[str, float], step: int, prefix: str = "") -> None:
        """Writes each entry of ``d`` as a separate scalar.

        Args:
            d: Tag to value; one-element tensors are accepted.
            step: Global step.
            prefix: Prepended to every tag (e.g. ``"train/"``).
        """
        for k, v in d.items():
            if hasattr(v, "item"):
                v = v.item()
            self._writer.add_scalar(f"{prefix}{k}", float(v), global_step=int(step))

    def add_image(self, tag: str, image: Any, step: int) -> None:
        """Writes an RGB image (stored as PNG).

        Args:
            tag: Image tag.
            image: ``(3, H, W)`` uint8 tensor (e.g. from :mod:`maskrcnn.utils.visualizer`).
            step: Global step.
        """
        if tuple(image.shape[:1]) != (3,) or image.ndim != 3 or str(image.dtype) != "torch.uint8":
            raise ValueError(f"add_image({tag!r}) expects a (3, H, W) uint8 tensor, got "
                             f"{tuple(image.shape)} {image.dtype}")
        self._writer.add_image(tag, image, global_step=int(step), dataformats="CHW")

    def add_pr_curve(self, tag: str, recall: Sequence[float], precision: Sequence[float], step: int) -> None:
        """Writes a precision-recall curve given by its points (TensorBoard's PR curves dashboard).

        The curve comes already computed (e.g. pycocotools' interpolated precision at fixed
        recall levels), not as raw scores and labels, so it is written with
        ``add_pr_curve_raw``; the true / false positive / negative counts, which the dashboard
        only shows in its tooltip, are not known and are written as zeros.

        Args:
            tag: Curve tag.
            recall: ``(R,)`` recall of each point, 2 <= R <= 127.
            precision: ``(R,)`` precision of each point.
            step: Global step.
        """
        import numpy as np

        recall = np.asarray(recall, dtype=np.float64).reshape(-1)
        precision = np.asarray(precision, dtype=np.float64).reshape(-1)
        if recall.shape != precision.shape or not 2 <= recall.size <= 127:
            raise ValueError(f"add_pr_curve({tag!r}): recall and precision need the same 2..127 points, got "
                             f"{recall.size} and {precision.size}")
        zeros = np.zeros_like(recall)
        self._writer.add_pr_curve_raw(tag, zeros, zeros, zeros, zeros, precision, recall,
                                      global_step=int(step), num_thresholds=int(recall.size))

    def flush(self) -> None:
        """Flushes pending events to disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._writer.close()

    def __enter__(self) -> "TensorboardWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
