"""Shape records passed between stages instead of re-reading config keys."""
from dataclasses import dataclass


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride (input pixels per feature cell) of one feature map."""

    channels: int
    stride: int
