"""Box coder: boxes <-> regression deltas (dx, dy, dw, dh), no "+1" anywhere."""
from __future__ import annotations

import math
from typing import Sequence

import torch

# Largest dw/dh fed to exp(): boxes at most 1000/16 times the reference size.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes boxes as deltas relative to reference boxes and decodes them back.

    Args:
        weights: multipliers of (dx, dy, dw, dh), e.g. ``(10, 10, 5, 5)`` for ROI heads.
        scale_clamp: upper bound of dw and dh before ``exp``.
    """

    def __init__(self, weights: Sequence[float], scale_clamp: float = DEFAULT_SCALE_CLAMP) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, targets: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Deltas that turn ``references`` (N, 4) into ``targets`` (N, 4); returns (N, 4)."""
        wx, wy, ww, wh = self.weights
        rw = references[:, 2] - references[:, 0]
        rh = references[:, 3] - references[:, 1]
        rx = references[:, 0] + 0.5 * rw
        ry = references[:, 1] + 0.5 * rh
        tw = targets[:, 2] - targets[:, 0]
        th = targets[:, 3] - targets[:, 1]
        tx = targets[:, 0] + 0.5 * tw
        ty = targets[:, 1] + 0.5 * th
        return torch.stack([wx * (tx - rx) / rw, wy * (ty - ry) / rh,
                            ww * torch.log(tw / rw), wh * torch.log(th / rh)], dim=1)

    def decode(self, deltas: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Apply ``deltas`` (N, 4k) to ``references`` (N, 4); returns boxes (N, 4k)."""
        references = references.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        rw = references[:, 2] - references[:, 0]
        rh = references[:, 3] - references[:, 1]
        rx = references[:, 0] + 0.5 * rw
        ry = references[:, 1] + 0.5 * rh
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)
        cx = dx * rw[:, None] + rx[:, None]
        cy = dy * rh[:, None] + ry[:, None]
        w = torch.exp(dw) * rw[:, None]
        h = torch.exp(dh) * rh[:, None]
        out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=2)
        return out.reshape(deltas.shape[0], -1)
