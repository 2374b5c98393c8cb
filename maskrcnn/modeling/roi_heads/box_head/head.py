"""Box head layers: two fully connected layers, then class scores and per-class deltas."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


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
    """Class logits ``(K, num_classes)`` and class-specific deltas ``(K, num_classes * 4)``.

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
        return self.cls_score(x), self.bbox_pred(x)
