"""Smoothed training metrics, in the style of maskrcnn-benchmark."""

from __future__ import annotations

import datetime
from collections import defaultdict, deque
from typing import Any

import torch

__all__ = ["SmoothedValue", "MetricLogger", "eta_string"]


class SmoothedValue:
    """Tracks a series of values with windowed and global statistics.

    Args:
        window_size: Number of recent values used by :attr:`median` and
            :attr:`avg`.
    """

    def __init__(self, window_size: int = 20) -> None:
        self.deque: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self._latest = float("nan")

    def update(self, value: float, n: int = 1) -> None:
        """Adds a value.

        Args:
            value: The new value (for a mean over a batch of ``n`` items).
            n: Weight of the value in :attr:`global_avg`.
        """
        value = float(value)
        self.deque.append(value)
        self.total += value * n
        self.count += n
        self._latest = value

    @property
    def median(self) -> float:
        """Median of the window (NaN when empty)."""
        if not self.deque:
            return float("nan")
        return torch.tensor(list(self.deque), dtype=torch.float64, device="cpu").median().item()

    @property
    def avg(self) -> float:
        """Mean of the window (NaN when empty)."""
        if not self.deque:
            return float("nan")
        return sum(self.deque) / len(self.deque)

    @property
    def global_avg(self) -> float:
        """Weighted mean of every value seen (NaN when empty)."""
        return self.total / self.count if self.count else float("nan")

    @property
    def max(self) -> float:
        """Maximum of the window (NaN when empty)."""
        return max(self.deque) if self.deque else float("nan")

    @property
    def latest(self) -> float:
        """The most recent value."""
        return self._latest

    @property
    def value(self) -> float:
        """Alias of :attr:`latest`."""
        return self._latest


class MetricLogger:
    """A collection of :class:`SmoothedValue` meters keyed by name.

    Args:
        delimiter: Separator between meters in :meth:`__str__`.
        window_size: Window size of newly created meters.
    """

    def __init__(self, delimiter: str = "  ", window_size: int = 20) -> None:
        self.meters: defaultdict[str, SmoothedValue] = defaultdict(
            lambda: SmoothedValue(window_size)
        )
        self.delimiter = delimiter

    def update(self, **kwargs: Any) -> None:
        """Updates meters from keyword arguments.

        Args:
            **kwargs: Name to value; values are Python numbers or one-element
                tensors (converted with ``.item()``).
        """
        for k, v in kwargs.items():
            if isinstance(v, torch.Tensor):
                v = v.detach().item()
            if not isinstance(v, (float, int)):
                raise TypeError(f"metric {k!r} must be a number or scalar tensor, got {type(v)}")
            self.meters[k].update(float(v))

    def __getattr__(self, attr: str) -> SmoothedValue:
        if attr in ("meters", "delimiter") or attr.startswith("__"):
            raise AttributeError(attr)
        meters = self.__dict__.get("meters", {})
        if attr in meters:
            return meters[attr]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    def __str__(self) -> str:
        return self.delimiter.join(
            f"{name}: {m.median:.4f} ({m.global_avg:.4f})" for name, m in self.meters.items()
        )

    def latest_dict(self) -> dict[str, float]:
        """Returns the latest value of every meter.

        Returns:
            Mapping from meter name to its latest value.
        """
        return {k: m.latest for k, m in self.meters.items()}

    def median_dict(self) -> dict[str, float]:
        """Returns the windowed median of every meter.

        Returns:
            Mapping from meter name to its median.
        """
        return {k: m.median for k, m in self.meters.items()}


def eta_string(seconds: float) -> str:
    """Formats a duration like ``"1 day, 2:03:04"``.

    Args:
        seconds: Duration in seconds (fractions are dropped).

    Returns:
        The :class:`datetime.timedelta` string form.
    """
    return str(datetime.timedelta(seconds=int(max(0.0, seconds))))
