"""Box head followed by the optional mask head."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ...structures.bounding_box import BoxList
from .box_head.box_head import ROIBoxHead
from .mask_head.mask_head import ROIMaskHead


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

    def forward(self, features: List[torch.Tensor], proposals: List[BoxList],
                targets: Optional[List[BoxList]] = None) -> Tuple[List[BoxList], Dict[str, torch.Tensor]]:
        out, losses = self.box(features, proposals, targets)
        if self.mask is not None:
            out, mask_losses = self.mask(features, out, targets)
            losses.update(mask_losses)
        return out, losses
