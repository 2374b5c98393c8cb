"""The ROI box head: pool, MLP, predict; sampled losses in training, detections otherwise."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ....structures.bounding_box import BoxList
from ...poolers import Pooler
from .head import BoxPredictor, MLPFeatureExtractor
from .inference import BoxPostProcessor
from .loss import ProposalSampler, box_head_losses


class ROIBoxHead(nn.Module):
    """Box head.

    Args:
        pooler: multi-level ROIAlign.
        feature_extractor: fc6/fc7.
        predictor: class scores and deltas.
        proposal_sampler: training-time sampling.
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

    def predict_raw(self, features: List[torch.Tensor], proposals: List[BoxList]) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.pooler(features, [p.bbox for p in proposals])
        return self.predictor(self.feature_extractor(x))

    def forward(self, features: List[torch.Tensor], proposals: List[BoxList],
                targets: Optional[List[BoxList]] = None) -> Tuple[List[BoxList], Dict[str, torch.Tensor]]:
        """With targets: (sampled proposals, losses). Without: (detections, {})."""
        if targets is None:
            logits, deltas = self.predict_raw(features, proposals)
            return self.post_processor(logits, deltas, proposals), {}
        sampled = self.proposal_sampler(proposals, targets)
        logits, deltas = self.predict_raw(features, sampled)
        return sampled, box_head_losses(logits, deltas, sampled, self.beta, self.loss_weight)
