"""The ROI box head: pool, two fully connected layers, class scores and per-class deltas.

``forward`` gives the raw predictions; ``sample`` picks the proposals of the loss,
``losses`` scores them, ``inference`` turns predictions into detections.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ....structures.bounding_box import BoxList
from ...poolers import Pooler
from .inference import BoxPostProcessor
from .loss import box_head_losses
from .proposal_sampler import ProposalSampler


class MLPFeatureExtractor(nn.Module):
    """flatten -> fc6 -> ReLU -> fc7 -> ReLU.

    Args:
        in_features: C * R * R of the pooled features.
        hidden_dim: width of fc6 and fc7.
    """

    def __init__(self, *, in_features: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, hidden_dim)
        self.fc7 = nn.Linear(hidden_dim, hidden_dim)
        for fc in (self.fc6, self.fc7):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class BoxPredictor(nn.Module):
    """Class logits ``(K, num_classes)`` and class-specific deltas ``(K, num_classes * 4)``, float32
    also under autocast (losses, box decoding and NMS run in float32).

    Args:
        in_features: width of the features.
        num_classes: classes including background.
    """

    def __init__(self, *, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        scores, deltas = self.cls_score(x), self.bbox_pred(x)
        wide = torch.promote_types(scores.dtype, torch.float32)  # float32 under autocast
        return scores.to(wide), deltas.to(wide)


class ROIBoxHead(nn.Module):
    """Box head.

    Args:
        pooler: multi-level ROIAlign.
        feature_extractor: fc6/fc7.
        predictor: class scores and deltas.
        proposal_sampler: picks the proposals of the loss.
        post_processor: test-time detections.
        smooth_l1_beta, loss_weight: of the losses.
    """

    def __init__(self, *, pooler: Pooler, feature_extractor: MLPFeatureExtractor, predictor: BoxPredictor,
                 proposal_sampler: ProposalSampler, post_processor: BoxPostProcessor,
                 smooth_l1_beta: float, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.pooler = pooler
        self.feature_extractor = feature_extractor
        self.predictor = predictor
        self.proposal_sampler = proposal_sampler
        self.post_processor = post_processor
        self.beta = smooth_l1_beta
        self.loss_weight = loss_weight

    def forward(self, features: List[torch.Tensor], proposals: List[BoxList]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``(K, C)`` and deltas ``(K, C * 4)`` of the K proposals of the batch, in order."""
        x = self.pooler(features, [p.bbox for p in proposals])
        return self.predictor(self.feature_extractor(x))

    def sample(self, proposals: List[BoxList], targets: List[BoxList]) -> Tuple[List[BoxList], List[int]]:
        """The proposals of the loss per image, positives first, and the number of positives
        (see :class:`ProposalSampler`)."""
        return self.proposal_sampler(proposals, targets)

    def losses(self, preds: Tuple[torch.Tensor, torch.Tensor], sampled: List[BoxList]) -> Dict[str, torch.Tensor]:
        """``loss_classifier`` and ``loss_box_reg`` (weighted) of ``forward(features, sampled)``."""
        return box_head_losses(preds[0], preds[1], sampled, self.beta, self.loss_weight)

    def inference(self, preds: Tuple[torch.Tensor, torch.Tensor], proposals: List[BoxList]) -> List[BoxList]:
        """Detections per image (fields ``scores``, ``labels``) of ``forward(features, proposals)``."""
        return self.post_processor(preds[0], preds[1], proposals)
