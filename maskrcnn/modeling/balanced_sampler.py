"""Balanced positive / negative sampling of labelled candidates (anchors or proposals), per image.

The rule is maskrcnn-benchmark's and torchvision's: per image, up to
``int(batch_size_per_image * positive_fraction)`` positives drawn uniformly among the
positives, then negatives drawn uniformly among the negatives to fill the rest of
``batch_size_per_image``. The draw is made without asking the device how many candidates
there are: every candidate gets a uniform random key, and the candidates of smallest key
(fixed-size ``topk``) are taken, as many as the counts computed on the device allow.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch


class BalancedPositiveNegativeSampler:
    """Pick up to ``batch_size_per_image`` elements per image, a ``positive_fraction`` of them positive.

    Args:
        batch_size_per_image: elements sampled per image.
        positive_fraction: largest fraction of positives; negatives fill the rest.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def sample(self, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sample every row of a batch.

        Args:
            labels: ``(N, R)``: 1 (or any value >= 1) positive, 0 negative, -1 (or less) ignored.

        Returns:
            Two ``(N, R)`` bool masks: the positives and the negatives picked in each row.
        """
        n, r = labels.shape
        positive, negative = labels >= 1, labels == 0
        keys = torch.rand((n, r), device=labels.device)
        max_pos = int(self.batch_size_per_image * self.positive_fraction)
        pos = self._smallest(keys, positive, min(max_pos, r))
        num_neg = torch.minimum(negative.sum(1), self.batch_size_per_image - pos.sum(1))
        neg = self._smallest(keys, negative, min(self.batch_size_per_image, r), num_neg)
        return pos, neg

    @staticmethod
    def _smallest(keys: torch.Tensor, eligible: torch.Tensor, k: int,
                  count: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mask of the ``count`` (default: up to ``k``) eligible elements of smallest key per row."""
        out = torch.zeros_like(eligible)
        if k == 0:
            return out
        # Ineligible elements get key 2 (> any uniform key), so they come last.
        order = torch.where(eligible, keys, torch.full_like(keys, 2.0)).topk(k, 1, largest=False).indices
        take = eligible.gather(1, order)
        if count is not None:
            take &= torch.arange(k, device=keys.device)[None, :] < count[:, None]
        return out.scatter_(1, order, take)

    def __call__(self, labels: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Sample images whose candidate counts may differ.

        Args:
            labels: per image, ``(N_i,)`` with 1 (or any value >= 1) positive, 0 negative, -1 ignore.

        Returns:
            Two lists of ``(N_i,)`` bool masks: positives and negatives that were picked.
        """
        if not labels:
            return [], []
        sizes = [int(lab.shape[0]) for lab in labels]
        pos, neg = self.sample(pad_labels(labels))
        return ([p[:s] for p, s in zip(pos, sizes)], [q[:s] for q, s in zip(neg, sizes)])


def pad_labels(labels: List[torch.Tensor]) -> torch.Tensor:
    """``(N, max N_i)`` rows of per-image ``(N_i,)`` labels, padded with -1 (ignored)."""
    if len({int(lab.shape[0]) for lab in labels}) == 1:
        return torch.stack(labels)
    padded = labels[0].new_full((len(labels), max(int(lab.shape[0]) for lab in labels)), -1)
    for row, lab in zip(padded, labels):
        row[: lab.shape[0]] = lab
    return padded
