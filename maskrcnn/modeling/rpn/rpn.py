"""Region Proposal Network: head + anchors + proposal selection + loss."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ...structures.bounding_box import BoxList
from .anchor_generator import AnchorGenerator
from .head import RPNHead
from .inference import ProposalSelector
from .loss import RPNLoss


class RPN(nn.Module):
    """Proposals for every image, and the RPN losses when targets are given.

    Args:
        head: the RPN head.
        anchor_generator: anchors per level.
        train_selector / test_selector: proposal selection in loss / predict mode.
        loss: RPN loss.
    """

    def __init__(self, *, head: RPNHead, anchor_generator: AnchorGenerator,
                 train_selector: ProposalSelector, test_selector: ProposalSelector, loss: RPNLoss) -> None:
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.train_selector = train_selector
        self.test_selector = test_selector
        self.loss_fn = loss

    def forward(self, features: List[torch.Tensor], image_sizes: List[Tuple[int, int]],
                targets: Optional[List[BoxList]] = None) -> Tuple[List[BoxList], Dict[str, torch.Tensor]]:
        """Proposals (and losses when ``targets`` is given, else an empty dict)."""
        objectness, deltas = self.head(features)
        anchors, counts = self.anchor_generator(features)
        selector = self.test_selector if targets is None else self.train_selector
        proposals = selector(anchors, counts, objectness.detach(), deltas.detach(), image_sizes)
        losses = {} if targets is None else self.loss_fn(anchors, objectness, deltas, targets)
        return proposals, losses
