"""Mask head loss: per-pixel BCE of the ground-truth class's logits against box-local targets."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from ....structures.bounding_box import BoxList
from ....structures.mask_targets import mask_targets
from .roi_align_targets import roi_align_mask_targets

__all__ = ["TARGET_RULES", "mask_head_losses"]

#: Mask target rules (``MODEL.ROI_MASK_HEAD.TARGET_RULE``): ``"center"``, binary, the instance
#: at each cell centre (maskrcnn-benchmark, detectron2); ``"torchvision"``, soft, ``roi_align``
#: of the instance's bitmap (torchvision's ``project_masks_on_boxes``).
TARGET_RULES = ("center", "torchvision")


def mask_head_losses(logits: torch.Tensor, positives: List[BoxList], targets: List[BoxList],
                     resolution: int, loss_weight: float = 1.0, target_rule: str = "center") -> Dict[str, torch.Tensor]:
    """``loss_mask``: mean binary cross-entropy over the ``M x M`` cells of every positive.

    Targets are made for the whole batch at once on the logits' device, inside each positive
    box, never from a full-image mask:

    * ``"center"``: 1 where the cell centre is inside the instance
      (:func:`maskrcnn.structures.mask_targets.mask_targets`);
    * ``"torchvision"``: the mean of ``roi_align``'s bilinear samples of the instance's bitmap
      (``aligned=False``, adaptive sampling ratio), in ``[0, 1]``
      (:func:`.roi_align_targets.roi_align_mask_targets`).

    Args:
        logits: ``(K, C, M, M)`` for the positives of all images, in order.
        positives: per image, positive proposals with fields ``labels`` and ``matched_idxs``.
        targets: per image, ground truth with field ``masks`` (an ``InstanceMasks``).
        resolution: M.
        loss_weight: multiplies the loss.
        target_rule: one of :data:`TARGET_RULES`.

    Returns:
        ``{"loss_mask": scalar}``; 0 (connected to ``logits``) without positives.
    """
    if target_rule not in TARGET_RULES:
        raise ValueError(f"mask target rule must be one of {TARGET_RULES}, got {target_rule!r}")
    if logits.shape[0] == 0:
        return {"loss_mask": loss_weight * (logits.sum() * 0)}
    make = roi_align_mask_targets if target_rule == "torchvision" else mask_targets
    gt = make([t.get_field("masks") for t in targets], [p.bbox for p in positives],
              [p.get_field("matched_idxs") for p in positives], resolution)
    labels = torch.cat([p.get_field("labels") for p in positives])
    picked = logits[torch.arange(labels.numel(), device=labels.device), labels]
    return {"loss_mask": loss_weight * F.binary_cross_entropy_with_logits(picked, gt.to(picked.dtype))}
