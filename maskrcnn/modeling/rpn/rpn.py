"""Region Proposal Network: head + anchors (``forward``), losses, proposal selection (``inference``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
from torch import nn

from ...structures.bounding_box import BoxList
from .anchor_generator import AnchorGenerator
from .head import RPNHead
from .inference import ProposalSelector
from .loss import RPNLoss


@dataclass
class RPNOutputs:
    """Raw RPN predictions of a batch.

    Attributes:
        objectness: ``(N, R)`` logits, R = sum over levels of H_l W_l A.
        deltas: ``(N, R, 4)`` box deltas.
        anchors: ``(R, 4)`` anchors shared by the images.
        counts: anchors per level (sum R).
    """

    objectness: torch.Tensor
    deltas: torch.Tensor
    anchors: torch.Tensor
    counts: List[int]


class RPN(nn.Module):
    """Region proposal network.

    Args:
        head: the RPN head.
        anchor_generator: anchors per level.
        train_selector / test_selector: proposal selection for the loss / for predictions.
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

    def forward(self, features: List[torch.Tensor]) -> RPNOutputs:
        """Objectness and deltas of every anchor of the feature pyramid."""
        objectness, deltas = self.head(features)
        anchors, counts = self.anchor_generator(features)
        return RPNOutputs(objectness, deltas, anchors, counts)

    def losses(self, preds: RPNOutputs, targets: List[BoxList]) -> Dict[str, torch.Tensor]:
        """``loss_objectness`` and ``loss_rpn_box_reg`` (weighted) against the ground truth."""
        return self.loss_fn(preds.anchors, preds.objectness, preds.deltas, targets)

    def inference(self, preds: RPNOutputs, image_sizes: List[Tuple[int, int]],
                  training: bool = False) -> List[BoxList]:
        """Proposals per image (field ``objectness``), best first.

        Args:
            preds: output of ``forward``.
            image_sizes: ``(h, w)`` of each image before padding.
            training: select with the training top-N (the proposals the box head's loss samples
                from) instead of the test top-N.
        """
        selector = self.train_selector if training else self.test_selector
        return selector(preds.anchors, preds.counts, preds.objectness.detach(), preds.deltas.detach(),
                        image_sizes)
