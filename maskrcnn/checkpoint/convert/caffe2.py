"""Detectron (Caffe2) ``.pkl`` blobs: ImageNet ``R-50.pkl`` and detection models.

Detectron trained on BGR 0..255 images minus ``[102.9801, 115.9465, 122.7717]`` (std 1) with MSRA
ResNets (stride in the 1x1 conv) and unaligned ROIAlign; the first conv is NOT flipped to RGB,
the report recommends that input config instead. Its class layout is ours (background first,
class-specific boxes and masks including background).

Its frozen norm is an AffineChannel ``y = s * x + b`` without epsilon; ours adds 1e-5 inside the
rsqrt, so the converted ``running_var`` is ``1 - eps`` (running_mean 0), which keeps the affine
exact; see ``common.adjust_no_eps_bn``. maskrcnn-benchmark inherited all of this, so
``maskrcnn_benchmark.py`` finishes its conversion with ``finish_caffe2_lineage`` too.

Blob names follow maskrcnn-benchmark's ``c2_model_loading.py`` (``conv1_w``, ``res_conv1_bn_s``,
``res2_0_branch2a_w``, ``fpn_inner_res5_2_sum_w``, ``fpn_inner_res4_5_sum_lateral_w``,
``fpn_res5_2_sum_w``, ``conv_rpn_fpn2_w``, ``fc6_w``, ``cls_score_w``, ``_[mask]_fcn1_w``,
``conv5_mask_w``, ``mask_fcn_logits_w``, ...).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Mapping, Optional, Tuple

import torch

from .common import BGR_255, CLASSIFIER, RESNEXT_STD, adjust_no_eps_bn, apply_rules, infer_architecture, rule_table
from .report import ConversionReport

__all__ = ["convert_caffe2", "finish_caffe2_lineage"]

# Blob suffixes and ResNet branch letters, as our names.
_LOOKUPS = {"leaf": {"w": "weight", "b": "bias", "s": "weight"}, "conv": {"a": 1, "b": 2, "c": 3}}

# Source name (Detectron blob)                    this project's name
_RULES = rule_table(r"""
    conv1_w                                         backbone.body.conv1.weight
    (?:res_)?conv1_(?:bn|gn)_([sb])                 backbone.body.bn1.{1:leaf}
    res(\d)_(\d+)_branch2([abc])_w                  backbone.body.layer{1-1}.{2}.conv{3:conv}.weight
    res(\d)_(\d+)_branch2([abc])_(?:bn|gn)_([sb])   backbone.body.layer{1-1}.{2}.bn{3:conv}.{4:leaf}
    res(\d)_(\d+)_branch1_w                         backbone.body.layer{1-1}.{2}.downsample.0.weight
    res(\d)_(\d+)_branch1_(?:bn|gn)_([sb])          backbone.body.layer{1-1}.{2}.downsample.1.{3:leaf}
    fpn_inner_res(\d)_\d+_sum(?:_lateral)?_([wb])   backbone.fpn.inner_blocks.{1-2}.0.{2:leaf}
    fpn_res(\d)_\d+_sum_([wb])                      backbone.fpn.layer_blocks.{1-2}.0.{2:leaf}
    conv_rpn(?:_fpn2)?_([wb])                       rpn.head.conv.{1:leaf}
    rpn_cls_logits(?:_fpn2)?_([wb])                 rpn.head.cls_logits.{1:leaf}
    rpn_bbox_pred(?:_fpn2)?_([wb])                  rpn.head.bbox_pred.{1:leaf}
    fc([67])_([wb])                                 roi_heads.box.feature_extractor.fc{1}.{2:leaf}
    (cls_score|bbox_pred)_([wb])                    roi_heads.box.predictor.{1}.{2:leaf}
    _\[mask\]_fcn(\d+)_([wb])                       roi_heads.mask.feature_extractor.mask_fcn{1}.{2:leaf}
    conv5_mask_([wb])                               roi_heads.mask.predictor.conv5_mask.{1:leaf}
    mask_fcn_logits_([wb])                          roi_heads.mask.predictor.mask_fcn_logits.{1:leaf}
""", _LOOKUPS)
_SKIPS = [
    (r"_momentum$", "optimizer state (momentum)"),
    (r"^(fc1000|pred)_[wb]$", CLASSIFIER),
    (r"^(conv_rpn|rpn_cls_logits|rpn_bbox_pred)_fpn[3-6]_", "shared with FPN level 2 in Detectron"),
]
_PLUS_ONE_NOTE = ("maskrcnn-benchmark / Detectron boxes use the legacy '+1' pixel convention and "
                  "their own anchors; this project does not, so boxes can differ by about a pixel")


def finish_caffe2_lineage(out: "OrderedDict[str, torch.Tensor]", report: ConversionReport,
                          model_state: Optional[Mapping[str, Any]], resnext_std: bool, group_norm: bool = False
                          ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """What Detectron and maskrcnn-benchmark weights share after renaming: eps-free frozen BN,
    the BGR 0..255 MSRA input config, and the '+1' box convention note.

    GroupNorm ResNets (Detectron's ``R-50-GN.pkl``, maskrcnn-benchmark's GN recipes) are
    recommended ``MODEL.RESNETS.NORM GN`` and ``STRIDE_IN_1X1 False``, as their recipes set:
    loaded into a frozen-BN config, their norms would load as a plain affine, without a word.

    Args:
        out: renamed tensors (our names), changed in place.
        report: the conversion's report, completed in place.
        model_state: the target model's state dict; running stats are written only for norm
            layers that have them there (GroupNorm models keep weight / bias only).
        resnext_std: whether ResNeXt weights expect the ResNeXt pixel std (maskrcnn-benchmark's
            X-101 recipes) rather than 1.
        group_norm: the ResNet's norm layers are GroupNorm (the caller tells from the source).

    Returns:
        ``(out, report)``.
    """
    adjust_no_eps_bn(out, report, model_state)
    arch = infer_architecture(out)
    cfg = dict(BGR_255)
    if arch.get("MODEL.RESNETS.NUM_GROUPS", 1) > 1:  # ResNeXt: stride in the 3x3 conv
        cfg["MODEL.RESNETS.STRIDE_IN_1X1"] = False
        if resnext_std:
            cfg["INPUT.PIXEL_STD"] = list(RESNEXT_STD)
    if group_norm:
        cfg.update({"MODEL.RESNETS.NORM": "GN", "MODEL.RESNETS.STRIDE_IN_1X1": False})
        report.notes.append("GroupNorm ResNet: set MODEL.RESNETS.NORM GN (its recipes also set "
                            "MODEL.RESNETS.STRIDE_IN_1X1 False)")
    report.recommended_config = {**cfg, **arch}
    report.notes.append(_PLUS_ONE_NOTE)
    return out, report


def convert_caffe2(state: Mapping[str, Any], model_state: Optional[Mapping[str, Any]] = None
                   ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """Detectron (Caffe2) blobs -> our names; AffineChannel ``_bn_s`` / ``_bn_b`` become frozen BN
    with running_mean 0 and running_var ``1 - eps`` (exact affine).

    Args:
        state: blob names -> tensors (the ``blobs`` dict of a detection .pkl, or an ImageNet .pkl).
        model_state: the target model's state dict (see ``finish_caffe2_lineage``).

    Returns:
        ``(our state dict, report)``.
    """
    report = ConversionReport(source="caffe2")
    out = apply_rules(state, _RULES, _SKIPS, report)
    group_norm = any(re.search(r"_gn_[sb]$", str(k)) for k in state)
    return finish_caffe2_lineage(out, report, model_state, resnext_std=False, group_norm=group_norm)
