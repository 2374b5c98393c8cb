"""Balanced positive/negative sampling of matched predictions, per image."""
from __future__ import annotations

from typing import List, Tuple

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

    def __call__(self, labels: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Sample.

        Args:
            labels: per image, ``(N_i,)`` with 1 (or any value >= 1) positive, 0 negative, -1 ignore.

        Returns:
            Two lists of ``(N_i,)`` bool masks: positives and negatives that were picked.
        """
        pos_out, neg_out = [], []
        for lab in labels:
            positive = torch.nonzero(lab >= 1, as_tuple=True)[0]
            negative = torch.nonzero(lab == 0, as_tuple=True)[0]
            num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
            perm_pos = torch.randperm(positive.numel(), device=lab.device)[:num_pos]
            perm_neg = torch.randperm(negative.numel(), device=lab.device)[:num_neg]
            pos_mask = torch.zeros_like(lab, dtype=torch.bool)
            neg_mask = torch.zeros_like(lab, dtype=torch.bool)
            pos_mask[positive[perm_pos]] = True
            neg_mask[negative[perm_neg]] = True
            pos_out.append(pos_mask)
            neg_out.append(neg_mask)
        return pos_out, neg_out
