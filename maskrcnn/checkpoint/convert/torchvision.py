"""torchvision weights: ``maskrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` state dicts (current
and legacy names) and ImageNet ResNets.

torchvision's detection models and ours share the ResNet names, the FrozenBN epsilon (1e-5),
RGB input in 0..1 normalised with the ImageNet mean / std, the stride in the 3x3 conv, and
ROIAlign without half-pixel alignment; only module paths differ. The published COCO file
(``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``) predates torchvision's version-2 names and uses
``rpn.head.conv.weight``, ``backbone.fpn.inner_blocks.0.weight`` and
``roi_heads.mask_head.mask_fcn1.weight`` (see the ``_load_from_state_dict`` upgrades in
torchvision's ``rpn.py``, ``feature_pyramid_network.py`` and ``mask_rcnn.py``).

The ``*_v2`` models (``maskrcnn_resnet50_fpn_v2``, ``fasterrcnn_resnet50_fpn_v2``) add BatchNorm
after every FPN conv, a second RPN conv, a box head of 4 convs with BatchNorm and one fc of 1024
(``FastRCNNConvFCHead``), and BatchNorm in the mask head; their ResNet has plain BatchNorm. They
map onto ``MODEL.FPN.NORM``, ``MODEL.RPN.NUM_CONVS 2``, the ``FPNXconv1fcFeatureExtractor`` box head
with ``ROI_BOX_HEAD.NORM`` and ``ROI_MASK_HEAD.NORM``, all "FrozenBN" (the BatchNorm statistics,
frozen, as for fine-tuning): ``configs/torchvision/maskrcnn_resnet50_fpn_v2.yaml``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Optional, Tuple

import torch

from .common import BN_COUNTER, CLASSIFIER, RGB_01, apply_rules, infer_architecture, rule_table
from .report import ConversionReport

__all__ = ["convert_torchvision", "convert_torchvision_resnet", "is_torchvision_v2"]

# Source name (current or legacy torchvision)                          this project's name
_DETECTION_RULES = rule_table(r"""
    backbone\.body\.(.+)                                                backbone.body.{1}
    backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(?:0\.)?(weight|bias)   backbone.fpn.{1}_blocks.{2}.0.{3}
    rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)                           rpn.head.conv.{1}
    rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)                    rpn.head.{1}.{2}
    roi_heads\.box_head\.(fc6|fc7)\.(weight|bias)                       roi_heads.box.feature_extractor.{1}.{2}
    roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)      roi_heads.box.predictor.{1}.{2}
    roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)                       roi_heads.mask.feature_extractor.mask_fcn{1+1}.{2}
    roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)                  roi_heads.mask.feature_extractor.mask_fcn{1}.{2}
    roi_heads\.mask_predictor\.(conv5_mask|mask_fcn_logits)\.(weight|bias)  roi_heads.mask.predictor.{1}.{2}
""")
# The *_v2 models. Box head: Sequential(4 x Conv2dNormActivation(conv, BN, ReLU), Flatten, Linear,
# ReLU); ours is xconvs = Sequential(conv, norm, ReLU, ...), so conv i is xconvs.{3i}, its norm
# xconvs.{3i+1}; the one tensor name of depth 1 (box_head.5.weight) is the Linear.
_XCONV = {str(i): str(3 * i) for i in range(32)}
_XNORM = {str(i): str(3 * i + 1) for i in range(32)}
_V2_RULES = rule_table(r"""
    backbone\.body\.(.+)                                                       backbone.body.{1}
    backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.0\.weight                      backbone.fpn.{1}_blocks.{2}.0.weight
    backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.1\.(weight|bias|running_mean|running_var)  backbone.fpn.{1}_blocks.{2}.1.{3}
    rpn\.head\.conv\.0\.0\.(weight|bias)                                       rpn.head.conv.{1}
    rpn\.head\.conv\.(\d+)\.0\.(weight|bias)                                  rpn.head.extra_convs.{1-1}.{2}
    rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)                           rpn.head.{1}.{2}
    roi_heads\.box_head\.(\d+)\.0\.weight                                     roi_heads.box.feature_extractor.xconvs.{1:xconv}.weight
    roi_heads\.box_head\.(\d+)\.1\.(weight|bias|running_mean|running_var)      roi_heads.box.feature_extractor.xconvs.{1:xnorm}.{2}
    roi_heads\.box_head\.\d+\.(weight|bias)                                    roi_heads.box.feature_extractor.fc6.{1}
    roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)             roi_heads.box.predictor.{1}.{2}
    roi_heads\.mask_head\.(\d+)\.0\.weight                                    roi_heads.mask.feature_extractor.mask_fcn{1+1}.0.weight
    roi_heads\.mask_head\.(\d+)\.1\.(weight|bias|running_mean|running_var)     roi_heads.mask.feature_extractor.mask_fcn{1+1}.1.{2}
    roi_heads\.mask_predictor\.(conv5_mask|mask_fcn_logits)\.(weight|bias)     roi_heads.mask.predictor.{1}.{2}
""", {"xconv": _XCONV, "xnorm": _XNORM})
_DETECTION_SKIPS = [(r"num_batches_tracked$", BN_COUNTER)]

_RESNET_RULES = rule_table(r"(conv1\..+|bn1\..+|layer\d\..+)  backbone.body.{1}")
_RESNET_SKIPS = [(r"num_batches_tracked$", BN_COUNTER), (r"^fc\.", CLASSIFIER)]


def is_torchvision_v2(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is a ``maskrcnn_resnet50_fpn_v2`` / ``fasterrcnn_resnet50_fpn_v2`` state
    dict (BN inside the FPN, a 4-conv-1-fc box head).

    Args:
        state: torchvision names -> tensors.

    Returns:
        True for the v2 models.
    """
    return "backbone.fpn.inner_blocks.0.1.weight" in state or "roi_heads.box_head.0.0.weight" in state


def convert_torchvision(state: Mapping[str, Any], model_state: Optional[Mapping[str, Any]] = None
                        ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """torchvision ``maskrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` -> our names.

    Tensors are copied unchanged (same class layout: background at index 0, class-specific
    boxes and masks including background). The ``*_v2`` models are recognised and converted
    with their own names (module docstring).

    Args:
        state: torchvision's state dict (current or legacy names, ``module.`` already stripped).
        model_state: unused here (the caller compares against it).

    Returns:
        ``(our state dict, report)``.
    """
    report = ConversionReport(source="torchvision")
    v2 = is_torchvision_v2(state)
    out = apply_rules(state, _V2_RULES if v2 else _DETECTION_RULES, _DETECTION_SKIPS, report)
    if v2:
        report.notes.append("a *_v2 model: BatchNorm in the FPN and the heads, 2 RPN convs, a 4conv1fc box head "
                            "(configs/torchvision/maskrcnn_resnet50_fpn_v2.yaml)")
    report.recommended_config = {**RGB_01, **infer_architecture(out)}
    cls = out.get("roi_heads.box.predictor.cls_score.weight")
    if cls is not None and cls.shape[0] == 91:
        report.notes.append(
            "91 class outputs: torchvision's COCO weights index classes by COCO category id "
            "(1..90, unused ids included), not by a contiguous 1..80 mapping")
    return out, report


def convert_torchvision_resnet(state: Mapping[str, Any], model_state: Optional[Mapping[str, Any]] = None
                               ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """torchvision ImageNet ResNet / ResNeXt (``conv1``, ``bn1``, ``layer1..4``, ``fc``) ->
    ``backbone.body.*``; the classifier is dropped.

    Args:
        state: e.g. ``torchvision.models.resnet50().state_dict()``.
        model_state: unused here (the caller compares against it).

    Returns:
        ``(our state dict, report)``.
    """
    report = ConversionReport(source="torchvision-resnet")
    out = apply_rules(state, _RESNET_RULES, _RESNET_SKIPS, report)
    report.recommended_config = {**RGB_01, **infer_architecture(out)}
    return out, report
