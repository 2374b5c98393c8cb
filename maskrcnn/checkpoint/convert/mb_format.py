"""maskrcnn-benchmark checkpoints (``.pth``) and Detectron / Caffe2 ``.pkl`` blobs.

Both were trained on BGR 0..255 images minus ``[102.9801, 115.9465, 122.7717]`` (std 1) with
MSRA ResNets (stride in the 1x1 conv) and unaligned ROIAlign; the first conv is NOT flipped to
RGB, the report recommends that input config instead. Both share our class layout (background
first, class-specific boxes and masks including background).

Their frozen norm has no epsilon: maskrcnn-benchmark's FrozenBatchNorm2d computes
``weight * rsqrt(running_var)`` and Caffe2's AffineChannel ``s * x + b``. Ours adds 1e-5 inside
the rsqrt, so ``running_var`` is stored minus that eps (``running_var`` 1 - eps where the
source has none), which keeps the affine exact; see ``common.adjust_no_eps_bn``.

Caffe2 names follow maskrcnn-benchmark's ``c2_model_loading.py`` (``conv1_w``,
``res_conv1_bn_s``, ``res2_0_branch2a_w``, ``fpn_inner_res5_2_sum_w``,
``fpn_inner_res4_5_sum_lateral_w``, ``fpn_res5_2_sum_w``, ``conv_rpn_fpn2_w``, ``fc6_w``,
``cls_score_w``, ``_[mask]_fcn1_w``, ``conv5_mask_w``, ``mask_fcn_logits_w``, ...).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from .common import (ANCHORS, BGR_255, BN_COUNTER, CLASSIFIER, adjust_no_eps_bn, apply_rules,
                     compile_rules, infer_architecture)
from .report import ConversionReport

__all__ = ["convert_maskrcnn_benchmark", "convert_caffe2"]

_LEAF = {"w": "weight", "b": "bias", "s": "weight"}
_CONV = {"a": 1, "b": 2, "c": 3}

_MB_RULES = compile_rules([
    (r"backbone\.body\.stem\.conv1\.weight", "backbone.body.conv1.weight"),
    (r"backbone\.body\.stem\.bn1\.(\w+)", r"backbone.body.bn1.\1"),
    (r"backbone\.body\.(layer\d\..+)", r"backbone.body.\1"),
    (r"backbone\.fpn\.fpn_inner(\d)\.(weight|bias)", lambda m: f"backbone.fpn.inner_blocks.{int(m[1]) - 1}.0.{m[2]}"),
    (r"backbone\.fpn\.fpn_layer(\d)\.(weight|bias)", lambda m: f"backbone.fpn.layer_blocks.{int(m[1]) - 1}.0.{m[2]}"),
    # GroupNorm variants: Sequential(conv, GN)
    (r"backbone\.fpn\.fpn_inner(\d)\.([01])\.(weight|bias)",
     lambda m: f"backbone.fpn.inner_blocks.{int(m[1]) - 1}.{m[2]}.{m[3]}"),
    (r"backbone\.fpn\.fpn_layer(\d)\.([01])\.(weight|bias)",
     lambda m: f"backbone.fpn.layer_blocks.{int(m[1]) - 1}.{m[2]}.{m[3]}"),
    (r"rpn\.head\.(conv|cls_logits|bbox_pred)\.(weight|bias)", r"rpn.head.\1.\2"),
    (r"roi_heads\.(box|mask)\.(.+)", r"roi_heads.\1.\2"),
])
_MB_SKIPS = [(r"num_batches_tracked$", BN_COUNTER), (r"anchor_generator\.", ANCHORS)]


def _c2_block(m) -> str:
    return f"backbone.body.layer{int(m[1]) - 1}.{m[2]}."


_C2_RULES = compile_rules([
    (r"conv1_w", "backbone.body.conv1.weight"),
    (r"(?:res_)?conv1_(?:bn|gn)_([sb])", lambda m: f"backbone.body.bn1.{_LEAF[m[1]]}"),
    (r"res(\d)_(\d+)_branch2([abc])_w", lambda m: _c2_block(m) + f"conv{_CONV[m[3]]}.weight"),
    (r"res(\d)_(\d+)_branch2([abc])_(?:bn|gn)_([sb])", lambda m: _c2_block(m) + f"bn{_CONV[m[3]]}.{_LEAF[m[4]]}"),
    (r"res(\d)_(\d+)_branch1_w", lambda m: _c2_block(m) + "downsample.0.weight"),
    (r"res(\d)_(\d+)_branch1_(?:bn|gn)_([sb])", lambda m: _c2_block(m) + f"downsample.1.{_LEAF[m[3]]}"),
    (r"fpn_inner_res(\d)_\d+_sum(?:_lateral)?_([wb])",
     lambda m: f"backbone.fpn.inner_blocks.{int(m[1]) - 2}.0.{_LEAF[m[2]]}"),
    (r"fpn_res(\d)_\d+_sum_([wb])", lambda m: f"backbone.fpn.layer_blocks.{int(m[1]) - 2}.0.{_LEAF[m[2]]}"),
    (r"conv_rpn(?:_fpn2)?_([wb])", lambda m: f"rpn.head.conv.{_LEAF[m[1]]}"),
    (r"rpn_cls_logits(?:_fpn2)?_([wb])", lambda m: f"rpn.head.cls_logits.{_LEAF[m[1]]}"),
    (r"rpn_bbox_pred(?:_fpn2)?_([wb])", lambda m: f"rpn.head.bbox_pred.{_LEAF[m[1]]}"),
    (r"fc([67])_([wb])", lambda m: f"roi_heads.box.feature_extractor.fc{m[1]}.{_LEAF[m[2]]}"),
    (r"(cls_score|bbox_pred)_([wb])", lambda m: f"roi_heads.box.predictor.{m[1]}.{_LEAF[m[2]]}"),
    (r"_\[mask\]_fcn(\d+)_([wb])", lambda m: f"roi_heads.mask.feature_extractor.mask_fcn{m[1]}.{_LEAF[m[2]]}"),
    (r"conv5_mask_([wb])", lambda m: f"roi_heads.mask.predictor.conv5_mask.{_LEAF[m[1]]}"),
    (r"mask_fcn_logits_([wb])", lambda m: f"roi_heads.mask.predictor.mask_fcn_logits.{_LEAF[m[1]]}"),
])
_C2_SKIPS = [
    (r"_momentum$", "optimizer state (momentum)"),
    (r"^(fc1000|pred)_[wb]$", CLASSIFIER),
    (r"^(conv_rpn|rpn_cls_logits|rpn_bbox_pred)_fpn[3-6]_", "shared with FPN level 2 in Detectron"),
]
_RESNEXT_STD = [57.375, 57.120, 58.395]  # maskrcnn-benchmark's X-101-32x8d configs
_PLUS_ONE_NOTE = ("maskrcnn-benchmark / Detectron boxes use the legacy '+1' pixel convention and "
                  "their own anchors; this project does not, so boxes can differ by about a pixel")


def _recommended(out: Mapping[str, torch.Tensor], resnext_std: bool) -> Dict[str, Any]:
    arch = infer_architecture(out)
    cfg = dict(BGR_255)
    if arch.get("MODEL.RESNETS.NUM_GROUPS", 1) > 1:  # ResNeXt: stride in the 3x3 conv
        cfg["MODEL.RESNETS.STRIDE_IN_1X1"] = False
        if resnext_std:
            cfg["INPUT.PIXEL_STD"] = list(_RESNEXT_STD)
    return {**cfg, **arch}


def convert_maskrcnn_benchmark(state: Mapping[str, Any], model_state: Optional[Mapping[str, Any]] = None
                               ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """maskrcnn-benchmark R-*-FPN weights -> our names, with frozen-BN eps compensation.

    Args:
        state: maskrcnn-benchmark names -> tensors (``module.`` already stripped).
        model_state: the target model's state dict; running stats are written only for norm
            layers that have them there (GroupNorm models keep weight / bias only).

    Returns:
        ``(our state dict, report)``.
    """
    report = ConversionReport(source="maskrcnn-benchmark")
    out = apply_rules(state, _MB_RULES, _MB_SKIPS, report)
    adjust_no_eps_bn(out, report, model_state)
    report.recommended_config = _recommended(out, resnext_std=True)
    report.notes.append(_PLUS_ONE_NOTE)
    return out, report


def convert_caffe2(state: Mapping[str, Any], model_state: Optional[Mapping[str, Any]] = None
                   ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """Detectron (Caffe2) blobs -> our names; AffineChannel ``_bn_s`` / ``_bn_b`` become frozen BN
    with running_mean 0 and running_var ``1 - eps`` (exact affine).

    Args:
        state: blob names -> tensors (the ``blobs`` dict of a detection .pkl, or an ImageNet .pkl).
        model_state: the target model's state dict (see ``convert_maskrcnn_benchmark``).

    Returns:
        ``(our state dict, report)``.
    """
    report = ConversionReport(source="caffe2")
    out = apply_rules(state, _C2_RULES, _C2_SKIPS, report)
    adjust_no_eps_bn(out, report, model_state)
    report.recommended_config = _recommended(out, resnext_std=False)
    report.notes.append(_PLUS_ONE_NOTE)
    return out, report
