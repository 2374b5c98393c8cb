"""TensorBoard event writing."""

from __future__ import annotations

import os
from typing import Any, Mapping

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
