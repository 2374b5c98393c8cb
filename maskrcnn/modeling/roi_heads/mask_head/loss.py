"""Mask head loss: per-pixel BCE of the ground-truth class's logits against box-local targets."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from ....structures.bounding_box import BoxList
from ....structures.mask_targets import mask_targets


def mask_head_losses(logits: torch.Tensor, positives: List[BoxList], targets: List[BoxList],
                     resolution: int, loss_weight: float = 1.0) -> Dict[str, torch.Tensor]:
    """``loss_mask``: mean binary cross-entropy over the ``M x M`` cells of every positive.

    Targets are the ground-truth masks rasterised at the cell centres of each positive box,
    for the whole batch at once on the logits' device
    (:func:`maskrcnn.structures.mask_targets.mask_targets`).

    Args:
        logits: ``(K, C, M, M)`` for the positives of all images, in order.
        positives: per image, positive proposals with fields ``labels`` and ``matched_idxs``.
        targets: per image, ground truth with field ``masks`` (an ``InstanceMasks``).
        resolution: M.
        loss_weight: multiplies the loss.

    Returns:
        ``{"loss_mask": scalar}``; 0 (connected to ``logits``) without positives.
    """
    if logits.shape[0] == 0:
        return {"loss_mask": loss_weight * (logits.sum() * 0)}
    gt = mask_targets([t.get_field("masks") for t in targets], [p.bbox for p in positives],
                      [p.get_field("matched_idxs") for p in positives], resolution)
    labels = torch.cat([p.get_field("labels") for p in positives])
    picked = logits[torch.arange(labels.numel(), device=labels.device), labels]
    return {"loss_mask": loss_weight * F.binary_cross_entropy_with_logits(picked, gt.to(picked.dtype))}
