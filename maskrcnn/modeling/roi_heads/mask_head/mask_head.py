"""The ROI mask head: 4 convs + deconv + class-specific 28x28 logits."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ....structures.bounding_box import BoxList
from ...poolers import Pooler


class MaskFeatureExtractor(nn.Module):
    """Stacked 3x3 conv + ReLU layers named ``mask_fcn1..n``.

    Args:
        in_channels: channels of the pooled features.
        layers: output channels of each conv.
        dilation: of the convs.
    """

    def __init__(self, *, in_channels: int, layers: Sequence[int], dilation: int = 1) -> None:
        super().__init__()
        self.names = []
        for i, c in enumerate(layers, 1):
            conv = nn.Conv2d(in_channels, c, 3, padding=dilation, dilation=dilation)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            self.add_module(f"mask_fcn{i}", conv)
            self.names.append(f"mask_fcn{i}")
            in_channels = c
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = F.relu(getattr(self, name)(x))
        return x


class MaskPredictor(nn.Module):
    """2x upsampling deconv + ReLU, then 1x1 conv to one logit map per class."""

    def __init__(self, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, in_channels, 2, 2)
        self.mask_fcn_logits = nn.Conv2d(in_channels, num_classes, 1)
        for layer in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x)))


class ROIMaskHead(nn.Module):
    """Mask head.

    Training uses the positive sampled proposals of the box head; targets are the
    ground-truth masks rasterised at ``resolution`` inside each proposal box.
    Prediction adds a ``mask`` field ``(N, 1, M, M)`` of probabilities of the
    detected class to each detection BoxList.

    Args:
        pooler: multi-level ROIAlign.
        feature_extractor: the convs.
        predictor: deconv + logits.
        resolution: M, side of the predicted masks.
        loss_weight: multiplies the mask loss.
    """

    def __init__(self, *, pooler: Pooler, feature_extractor: MaskFeatureExtractor, predictor: MaskPredictor,
                 resolution: int, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.pooler = pooler
        self.feature_extractor = feature_extractor
        self.predictor = predictor
        self.resolution = resolution
        self.loss_weight = loss_weight

    def logits(self, features: List[torch.Tensor], boxes: List[torch.Tensor]) -> torch.Tensor:
        return self.predictor(self.feature_extractor(self.pooler(features, boxes)))

    def forward(self, features: List[torch.Tensor], proposals: List[BoxList],
                targets: Optional[List[BoxList]] = None) -> Tuple[List[BoxList], Dict[str, torch.Tensor]]:
        """With targets, ``proposals`` are the box head's sampled ones: returns (proposals, losses).
        Without, they are detections: returns (detections with ``mask``, {})."""
        if targets is None:
            return self._predict(features, proposals), {}
        positives = [p[torch.nonzero(p.get_field("labels") > 0, as_tuple=True)[0]] for p in proposals]
        logits = self.logits(features, [p.bbox for p in positives])
        return proposals, {"loss_mask": self.loss_weight * self._loss(logits, positives, targets)}

    def _loss(self, logits: torch.Tensor, positives: List[BoxList], targets: List[BoxList]) -> torch.Tensor:
        if logits.shape[0] == 0:
            return logits.sum() * 0
        mask_targets = torch.cat([
            gt.get_field("masks").crop_and_resize(p.bbox, p.get_field("matched_idxs"), self.resolution)
            for p, gt in zip(positives, targets)]).to(logits.device)
        labels = torch.cat([p.get_field("labels") for p in positives])
        picked = logits[torch.arange(labels.numel(), device=labels.device), labels]
        return F.binary_cross_entropy_with_logits(picked, mask_targets)

    def _predict(self, features: List[torch.Tensor], detections: List[BoxList]) -> List[BoxList]:
        logits = self.logits(features, [d.bbox for d in detections])
        labels = torch.cat([d.get_field("labels") for d in detections])
        probs = logits[torch.arange(labels.numel(), device=labels.device), labels][:, None].sigmoid()
        for d, p in zip(detections, probs.split([len(d) for d in detections])):
            d.add_field("mask", p)
        return detections
