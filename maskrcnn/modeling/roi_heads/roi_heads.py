"""Box head followed by the optional mask head: losses for training, detections for inference."""
from __future__ import annotations

from typing import Dict, List, Optional, Union

import torch
from torch import nn

from ...structures.bounding_box import BoxList
from .box_head.head import ROIBoxHead
from .mask_head.head import ROIMaskHead


class ROIHeads(nn.Module):
    """Runs the box head, then the mask head on its output.

    Args:
        box: the box head.
        mask: the mask head, or None (Faster R-CNN).
    """

    def __init__(self, *, box: ROIBoxHead, mask: Optional[ROIMaskHead] = None) -> None:
        super().__init__()
        self.box = box
        self.mask = mask

    def loss(self, features: List[torch.Tensor], proposals: List[BoxList],
             targets: List[BoxList]) -> Dict[str, torch.Tensor]:
        """``loss_classifier``, ``loss_box_reg`` (and ``loss_mask``) on sampled proposals."""
        sampled, num_positives = self.box.sample(proposals, targets)
        losses = self.box.losses(self.box(features, sampled), sampled)
        if self.mask is not None:
            positives = [self.mask.select_positives(s, k) for s, k in zip(sampled, num_positives)]
            losses.update(self.mask.losses(self.mask(features, positives), positives, targets))
        return losses

    @torch.no_grad()
    def predict(self, features: List[torch.Tensor], proposals: List[BoxList]) -> List[BoxList]:
        """Detections per image: ``scores``, ``labels`` (and ``mask`` (N, 1, M, M))."""
        detections = self.box.inference(self.box(features, proposals), proposals)
        if self.mask is not None:
            detections = self.mask.inference(self.mask(features, detections), detections)
        return detections

    def forward(self, features: List[torch.Tensor], proposals: List[BoxList],
                targets: Optional[List[BoxList]] = None) -> Union[Dict[str, torch.Tensor], List[BoxList]]:
        """``loss`` when targets are given, else ``predict``."""
        if targets is not None:
            return self.loss(features, proposals, targets)
        return self.predict(features, proposals)
