"""The ROI mask head: convs + deconv + class-specific ``M x M`` logits.

``forward`` gives the raw logits; ``losses`` scores them against targets rasterised inside
the positive proposals (:mod:`.loss`); ``inference`` adds the detected class's mask to each
detection (:mod:`.inference`).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ....structures.bounding_box import BoxList
from ...poolers import Pooler
from .inference import mask_head_inference
from .loss import mask_head_losses


class MaskFeatureExtractor(nn.Module):
    """Stacked 3x3 conv [-> norm] -> ReLU layers named ``mask_fcn1..n``.

    With a norm (``MODEL.ROI_MASK_HEAD.USE_GN`` / ``NORM``: GroupNorm, frozen BN or BN) each ``mask_fcnI`` is
    ``Sequential(conv without bias, norm)``, maskrcnn-benchmark's layout (``mask_fcn1.0.weight``,
    ``mask_fcn1.1.weight``), so its GN checkpoints load as they are.

    Args:
        in_channels: channels of the pooled features.
        layers: output channels of each conv.
        dilation: of the convs.
        norm: norm layer factory after each conv; None: none.
    """

    def __init__(self, *, in_channels: int, layers: Sequence[int], dilation: int = 1,
                 norm: Optional[Callable[[int], nn.Module]] = None) -> None:
        super().__init__()
        self.names = []
        for i, c in enumerate(layers, 1):
            conv = nn.Conv2d(in_channels, c, 3, padding=dilation, dilation=dilation, bias=norm is None)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            self.add_module(f"mask_fcn{i}", conv if norm is None else nn.Sequential(conv, norm(c)))
            self.names.append(f"mask_fcn{i}")
            in_channels = c
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = F.relu(getattr(self, name)(x))
        return x


class MaskPredictor(nn.Module):
    """2x upsampling deconv + ReLU, then 1x1 conv to one logit map per class (float32 also under
    autocast: the loss and the pasted probabilities are float32)."""

    def __init__(self, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv5_mask = nn.ConvTranspose2d(in_channels, in_channels, 2, 2)
        self.mask_fcn_logits = nn.Conv2d(in_channels, num_classes, 1)
        for layer in (self.conv5_mask, self.mask_fcn_logits):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mask_fcn_logits(F.relu(self.conv5_mask(x)))
        return logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 under autocast


class ROIMaskHead(nn.Module):
    """Mask head.

    Args:
        pooler: multi-level ROIAlign.
        feature_extractor: the convs.
        predictor: deconv + logits.
        resolution: M, side of the predicted masks and of the training targets.
        loss_weight: multiplies the mask loss.
        target_rule: how training targets are made (see :data:`.loss.TARGET_RULES`).
        max_train_per_image: in training, the loss is computed on at most this many positives
            per image, a uniform random subset of the sampled ones (0: all of them).
    """

    def __init__(self, *, pooler: Pooler, feature_extractor: MaskFeatureExtractor, predictor: MaskPredictor,
                 resolution: int, loss_weight: float = 1.0, target_rule: str = "center",
                 max_train_per_image: int = 0) -> None:
        super().__init__()
        self.pooler = pooler
        self.feature_extractor = feature_extractor
        self.predictor = predictor
        self.resolution = resolution
        self.loss_weight = loss_weight
        self.target_rule = target_rule
        if max_train_per_image < 0:
            raise ValueError(f"max_train_per_image is {max_train_per_image}: 0 (all positives) or more")
        self.max_train_per_image = max_train_per_image

    def select_positives(self, sampled: BoxList, num_positives: int) -> BoxList:
        """The training boxes of one image: its ``num_positives`` leading (positive) boxes, or a
        uniform random subset of ``max_train_per_image`` of them, in their order."""
        cap = self.max_train_per_image
        if cap == 0 or num_positives <= cap:
            return sampled[:num_positives]
        return sampled[torch.randperm(num_positives, device=sampled.bbox.device)[:cap].sort().values]

    def forward(self, features: List[torch.Tensor], boxes: List[BoxList]) -> torch.Tensor:
        """Logits ``(K, C, M, M)`` of the K boxes of the batch, in order."""
        return self.predictor(self.feature_extractor(self.pooler(features, [b.bbox for b in boxes])))

    def losses(self, logits: torch.Tensor, positives: List[BoxList],
               targets: List[BoxList]) -> Dict[str, torch.Tensor]:
        """``loss_mask`` (weighted) of ``forward(features, positives)``; ``positives`` carry
        ``labels`` and ``matched_idxs``, ``targets`` their ground truth with ``masks``."""
        return mask_head_losses(logits, positives, targets, self.resolution, self.loss_weight, self.target_rule)

    def inference(self, logits: torch.Tensor, detections: List[BoxList]) -> List[BoxList]:
        """New BoxLists: ``detections`` plus a ``mask`` field ``(N, 1, M, M)`` of probabilities."""
        return mask_head_inference(logits, detections)
