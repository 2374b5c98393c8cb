"""Matcher: assigns each prediction (column) to a ground-truth box (row) by IoU.

Whole-tensor selects only (three-argument ``torch.where``): nothing waits for the device.
"""
from __future__ import annotations

import torch


class Matcher:
    """Assign each of N predictions the ground truth of highest IoU.

    Predictions below ``low`` are background (``BELOW_LOW_THRESHOLD``), those in
    ``[low, high)`` are ignored (``BETWEEN_THRESHOLDS``). With
    ``allow_low_quality_matches`` every ground truth also keeps the predictions
    that are its best match (ties included), whatever their IoU.

    Args:
        high_threshold: IoU at or above which a prediction is foreground.
        low_threshold: IoU below which a prediction is background.
        allow_low_quality_matches: see above (the RPN uses it).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float,
                 allow_low_quality_matches: bool = False) -> None:
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} > high_threshold {high_threshold}")
        self.high = high_threshold
        self.low = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: torch.Tensor) -> torch.Tensor:
        """Match.

        Args:
            iou: ``(G, N)`` IoU between G ground-truth boxes and N predictions.

        Returns:
            ``(N,)`` int64: index of the matched ground truth, or a negative code.
        """
        n = iou.shape[1]
        if iou.shape[0] == 0:
            return torch.full((n,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=iou.device)
        best, matches = iou.max(dim=0)
        out = torch.where(best < self.low, torch.full_like(matches, self.BELOW_LOW_THRESHOLD), matches)
        out = torch.where((best >= self.low) & (best < self.high),
                          torch.full_like(matches, self.BETWEEN_THRESHOLDS), out)
        if self.allow_low_quality_matches:
            # torchvision keeps ties, including a best IoU of 0 for a GT with no overlap.
            best_per_gt = iou.max(dim=1, keepdim=True).values
            out = torch.where((iou == best_per_gt).any(0), matches, out)
        return out
