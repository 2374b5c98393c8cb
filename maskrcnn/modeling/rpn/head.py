"""RPN head: shared 3x3 conv(s), then objectness and box deltas for A anchors per cell."""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class RPNHead(nn.Module):
    """RPN head applied to every level: ``num_convs`` x (3x3 conv -> ReLU), then the predictions.

    One conv is the head of maskrcnn-benchmark, detectron2 and torchvision's v1 models; their
    names stay (``conv``); the convs after it are ``extra_convs.0``, ... (torchvision's ``*_v2``
    models have 2, ``rpn.head.conv.0.0`` and ``rpn.head.conv.1.0``).

    Args:
        in_channels: channels of the feature maps.
        num_anchors: anchors per location (A).
        num_convs: 3x3 conv layers (``MODEL.RPN.NUM_CONVS``), at least 1.
    """

    def __init__(self, *, in_channels: int, num_anchors: int, num_convs: int = 1) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs = {num_convs}: the RPN head needs at least one conv")
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.extra_convs = nn.ModuleList(nn.Conv2d(in_channels, in_channels, 3, padding=1)
                                         for _ in range(num_convs - 1))
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for layer in (self.conv, *self.extra_convs, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Predict for all levels.

        Returns:
            objectness ``(N, R)`` logits and deltas ``(N, R, 4)``, R = sum_l H_l W_l A, in the
            anchor generator's order (location-major, anchor-minor); float32 also under autocast
            (the loss and the box decoding run in float32).
        """
        logits, deltas = [], []
        for f in features:
            t = F.relu(self.conv(f))
            for conv in self.extra_convs:
                t = F.relu(conv(t))
            n, _, h, w = f.shape
            logits.append(self.cls_logits(t).permute(0, 2, 3, 1).reshape(n, -1))
            d = self.bbox_pred(t).view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2)
            deltas.append(d.reshape(n, -1, 4))
        logits, deltas = torch.cat(logits, 1), torch.cat(deltas, 1)
        wide = torch.promote_types(logits.dtype, torch.float32)  # float32 under autocast
        return logits.to(wide), deltas.to(wide)
