"""The ROI box head: pool, a feature extractor, class scores and per-class deltas.

Two feature extractors, with maskrcnn-benchmark's names (``MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR``):
``FPN2MLPFeatureExtractor`` (:class:`MLPFeatureExtractor`, two fc layers: the standard R-50-FPN
head) and ``FPNXconv1fcFeatureExtractor`` (:class:`XConvFCFeatureExtractor`, stacked 3x3 convs
then one fc: the "4conv1fc" head of the GroupNorm recipes, detectron2's ``FastRCNNConvFCHead``).

``forward`` gives the raw predictions; ``sample`` picks the proposals of the loss,
``losses`` scores them, ``inference`` turns predictions into detections.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ....structures.bounding_box import BoxList
from ...poolers import Pooler
from .inference import BoxPostProcessor
from .loss import box_head_losses
from .proposal_sampler import ProposalSampler


def _fc(in_features: int, out_features: int, norm: Optional[Callable[[int], nn.Module]]) -> nn.Module:
    """A fully connected layer; with a norm it has no bias and is ``Sequential(Linear, norm)``
    (maskrcnn-benchmark's ``make_fc``). Initialise it with :func:`_init_fc`."""
    fc = nn.Linear(in_features, out_features, bias=norm is None)
    return fc if norm is None else nn.Sequential(fc, norm(out_features))


def _init_fc(layer: nn.Module) -> None:
    """Caffe2's XavierFill on the Linear of ``layer`` (from :func:`_fc`), zero bias."""
    fc = layer if isinstance(layer, nn.Linear) else layer[0]
    nn.init.kaiming_uniform_(fc.weight, a=1)
    if fc.bias is not None:
        nn.init.zeros_(fc.bias)


class MLPFeatureExtractor(nn.Module):
    """flatten -> fc6 -> ReLU -> fc7 -> ReLU.

    Args:
        in_features: C * R * R of the pooled features.
        hidden_dim: width of fc6 and fc7.
        norm: a norm layer factory (GroupNorm, ``MODEL.ROI_BOX_HEAD.USE_GN``) put after each fc,
            which then has no bias, as in maskrcnn-benchmark (names ``fc6.0``, ``fc6.1``); None: none.
    """

    def __init__(self, *, in_features: int, hidden_dim: int,
                 norm: Optional[Callable[[int], nn.Module]] = None) -> None:
        super().__init__()
        self.fc6 = _fc(in_features, hidden_dim, norm)
        self.fc7 = _fc(hidden_dim, hidden_dim, norm)
        for fc in (self.fc6, self.fc7):
            _init_fc(fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class XConvFCFeatureExtractor(nn.Module):
    """``num_convs`` x (3x3 conv -> [norm] -> ReLU), then flatten -> fc6 -> ReLU.

    maskrcnn-benchmark's ``FPNXconv1fcFeatureExtractor``, with its names (``xconvs`` is one
    Sequential: conv, norm, ReLU per layer, so ``xconvs.0`` / ``xconvs.1`` are the first conv and
    its GroupNorm; ``fc6`` has no norm), so its GN checkpoints load as they are. detectron2's
    ``FastRCNNConvFCHead`` with ``NUM_FC 1`` is the same function (its ``conv1..N`` / ``fc1``
    are renamed on conversion).

    Convolutions are initialised as Caffe2's MSRAFill (He normal, fan-out), detectron2's choice;
    maskrcnn-benchmark draws them from N(0, 0.01), which without a norm shrinks the signal
    through 4 layers. With a norm they have no bias.

    Args:
        in_channels: channels of the pooled features.
        resolution: R, side of the pooled features.
        num_convs: stacked convs (``NUM_STACKED_CONVS``), at least 1.
        conv_dim: their channels (``CONV_HEAD_DIM``).
        dilation: of the convs.
        hidden_dim: width of fc6 (``MLP_HEAD_DIM``).
        norm: norm layer factory after each conv (``USE_GN`` / ``NORM``: GroupNorm, frozen BN or BN;
            torchvision's ``*_v2`` head is the BN one); None: none.
    """

    def __init__(self, *, in_channels: int, resolution: int, num_convs: int, conv_dim: int, dilation: int,
                 hidden_dim: int, norm: Optional[Callable[[int], nn.Module]] = None) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs = {num_convs}: the conv-fc head needs at least one conv")
        layers: List[nn.Module] = []
        for _ in range(num_convs):
            conv = nn.Conv2d(in_channels, conv_dim, 3, padding=dilation, dilation=dilation, bias=norm is None)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            layers += [conv] + ([norm(conv_dim)] if norm is not None else []) + [nn.ReLU(inplace=True)]
            in_channels = conv_dim
        self.xconvs = nn.Sequential(*layers)
        self.fc6 = _fc(conv_dim * resolution * resolution, hidden_dim, None)
        _init_fc(self.fc6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc6(self.xconvs(x).flatten(1)))


BoxFeatureExtractor = Union[MLPFeatureExtractor, XConvFCFeatureExtractor]


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
        feature_extractor: fc6/fc7, or convs and fc6.
        predictor: class scores and deltas.
        proposal_sampler: picks the proposals of the loss.
        post_processor: test-time detections.
        smooth_l1_beta, loss_weight: of the losses.
    """

    def __init__(self, *, pooler: Pooler, feature_extractor: BoxFeatureExtractor, predictor: BoxPredictor,
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
