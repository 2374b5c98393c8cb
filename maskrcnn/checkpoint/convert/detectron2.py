"""detectron2 weights: training checkpoints (``.pth``, ``{"model": ...}``) and model-zoo ``.pkl``
files (``{"model": {name: numpy array}, "__author__": ...}``).

Differences handled here:

* names: ``backbone.bottom_up.{stem,res2..res5}``, ``backbone.fpn_lateral{2..5}`` /
  ``fpn_output{2..5}``, ``proposal_generator.rpn_head.{conv,objectness_logits,anchor_deltas}``,
  ``roi_heads.box_head.{fc1,fc2}`` (or ``conv1..N`` + ``fc1``, the GN "4conv1fc" head),
  ``roi_heads.mask_head.{mask_fcn*,deconv,predictor}``, head GroupNorms ``.norm``;
* class layout: detectron2 puts background LAST in ``cls_score`` and has no background entry in
  ``bbox_pred`` (K * 4 rows) or the mask predictor (K channels); ours has background first and
  class-specific entries for it. Scores are rotated, and zero rows are added for the background
  (never read at inference). Class-agnostic box / mask predictors are tiled per class;
* frozen BN: detectron2's FrozenBatchNorm2d (version 3) adds the same eps as ours, so BN
  tensors are copied; layers with only weight / bias get running stats 0 / 1, as detectron2 does.

The input convention is BGR 0..255 with detectron2's mean (unless the file stores
``pixel_mean`` / ``pixel_std``), stride in the 1x1 conv for MSRA ResNets, and ROIAlign with
half-pixel alignment (``POOLER_ALIGNED True``). The whole recipe, training included, is
``configs/detectron2/mask_rcnn_R_50_FPN_1x.yaml`` (:data:`RECOMMENDED_CONFIG_FILE`); the
recommended config holds its keys that change what the weights compute: the input, ROIAlign
(aligned, adaptive sampling), the unrounded anchors and PIL's resize.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from .common import (ANCHORS, BN_COUNTER, CLASSIFIER, RESNEXT_STD, RGB_01, add_background_rows,
                     apply_rules, background_last_to_first, fill_default_bn_stats, infer_architecture,
                     input_config, rule_table)
from .report import ConversionReport

__all__ = ["RECOMMENDED_CONFIG", "RECOMMENDED_CONFIG_FILE", "convert_detectron2"]

#: detectron2's R-50-FPN Mask R-CNN recipe as this project's config (relative to the repository).
RECOMMENDED_CONFIG_FILE = "configs/detectron2/mask_rcnn_R_50_FPN_1x.yaml"

# What detectron2's models compute with besides the input (its configs/defaults.py and
# Base-RCNN-FPN.yaml), as this project's keys: ROIAlignV2 with adaptive sampling, anchors
# without rounding, PIL's bilinear resize.
_MODEL_CONFIG = {
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.RPN.ANCHOR_ROUNDING": False,
    "MODEL.RPN.ANCHOR_STRIDES_FROM_IMAGE": False,
    "INPUT.RESIZE_MODE": "pil",
}

# What detectron2's MSRA ResNet recipes train with, as this project's config keys: BGR 0..255
# minus detectron2's mean, stride in the 1x1 conv, aligned ROIAlign, and _MODEL_CONFIG.
RECOMMENDED_CONFIG = {**input_config(bgr255=True, mean=[103.530, 116.280, 123.675], std=[1.0, 1.0, 1.0],
                                     stride_in_1x1=True, aligned=True), **_MODEL_CONFIG}

# The backbone's names start with "backbone.bottom_up." in detection models; ResNets converted
# for detectron2 (convert-torchvision-to-d2.py) have none.
# Source name (detectron2)                                                 this project's name
_RULES = rule_table(r"""
    (?:backbone\.bottom_up\.)?stem\.conv1\.weight                          backbone.body.conv1.weight
    (?:backbone\.bottom_up\.)?stem\.conv1\.norm\.(\w+)                     backbone.body.bn1.{1}
    (?:backbone\.bottom_up\.)?res([2-5])\.(\d+)\.conv(\d)\.weight          backbone.body.layer{1-1}.{2}.conv{3}.weight
    (?:backbone\.bottom_up\.)?res([2-5])\.(\d+)\.conv(\d)\.norm\.(\w+)     backbone.body.layer{1-1}.{2}.bn{3}.{4}
    (?:backbone\.bottom_up\.)?res([2-5])\.(\d+)\.shortcut\.weight          backbone.body.layer{1-1}.{2}.downsample.0.weight
    (?:backbone\.bottom_up\.)?res([2-5])\.(\d+)\.shortcut\.norm\.(\w+)     backbone.body.layer{1-1}.{2}.downsample.1.{3}
    backbone\.fpn_lateral([2-5])\.(weight|bias)                           backbone.fpn.inner_blocks.{1-2}.0.{2}
    backbone\.fpn_lateral([2-5])\.norm\.(weight|bias)                     backbone.fpn.inner_blocks.{1-2}.1.{2}
    backbone\.fpn_output([2-5])\.(weight|bias)                            backbone.fpn.layer_blocks.{1-2}.0.{2}
    backbone\.fpn_output([2-5])\.norm\.(weight|bias)                      backbone.fpn.layer_blocks.{1-2}.1.{2}
    proposal_generator\.rpn_head\.conv\.(weight|bias)                     rpn.head.conv.{1}
    proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)        rpn.head.cls_logits.{1}
    proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)            rpn.head.bbox_pred.{1}
    # FastRCNNConvFCHead's convs (NORM "GN": conv without bias + .norm); indexed by _conv_head_layout
    roi_heads\.box_head\.conv(\d+)\.(weight|bias)                         roi_heads.box.feature_extractor.conv{1}.{2}
    roi_heads\.box_head\.conv(\d+)\.norm\.(\w+)                          roi_heads.box.feature_extractor.conv{1}.norm.{2}
    roi_heads\.box_head\.fc1\.(weight|bias)                               roi_heads.box.feature_extractor.fc6.{1}
    roi_heads\.box_head\.fc2\.(weight|bias)                               roi_heads.box.feature_extractor.fc7.{1}
    roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)         roi_heads.box.predictor.{1}.{2}
    roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)                    roi_heads.mask.feature_extractor.mask_fcn{1}.{2}
    roi_heads\.mask_head\.mask_fcn(\d+)\.norm\.(\w+)                     roi_heads.mask.feature_extractor.mask_fcn{1}.norm.{2}
    roi_heads\.mask_head\.deconv\.(weight|bias)                            roi_heads.mask.predictor.conv5_mask.{1}
    roi_heads\.mask_head\.predictor\.(weight|bias)                         roi_heads.mask.predictor.mask_fcn_logits.{1}
""")
_SKIPS = [
    (r"num_batches_tracked$", BN_COUNTER),
    (r"anchor_generator\.", ANCHORS),
    (r"^pixel_(mean|std)$", "input normalisation (see the recommended config)"),
    (r"^(linear|fc|fc1000)\.", CLASSIFIER),
]


def _fix_class_layout(out: "OrderedDict[str, torch.Tensor]", report: ConversionReport) -> None:
    cls_w = out.get("roi_heads.box.predictor.cls_score.weight")
    if cls_w is None:
        return
    num_classes = int(cls_w.shape[0])  # K + 1, background last
    for leaf in ("weight", "bias"):
        name = f"roi_heads.box.predictor.cls_score.{leaf}"
        if name in out:
            out[name] = background_last_to_first(out[name])
            report.annotate(name, "background moved from last to first")
        for head, rows in (("box.predictor.bbox_pred", 4), ("mask.predictor.mask_fcn_logits", 1)):
            name = f"roi_heads.{head}.{leaf}"
            if name in out:
                agnostic = out[name].shape[0] == rows
                out[name] = add_background_rows(out[name], rows, num_classes)
                report.annotate(name, "class-agnostic, tiled per class" if agnostic and num_classes > 2
                                else "zero entry added for background")


_BOX_CONV = re.compile(r"roi_heads\.box\.feature_extractor\.conv(\d+)\.(norm\.)?(\w+)")
_MASK_CONV = re.compile(r"roi_heads\.mask\.feature_extractor\.mask_fcn(\d+)\.(norm\.)?(\w+)")


def _conv_head_layout(out: "OrderedDict[str, torch.Tensor]", report: ConversionReport) -> "OrderedDict[str, torch.Tensor]":
    """detectron2's head convs with ``.norm`` -> our Sequential layouts (maskrcnn-benchmark's):
    box ``conv{i}`` -> ``xconvs.{k*(i-1)}`` and its norm ``xconvs.{k*(i-1)+1}`` (k = 3 with a norm:
    conv, GN, ReLU; 2 without), mask ``mask_fcn{i}`` -> ``mask_fcn{i}.0`` and its norm
    ``mask_fcn{i}.1`` when the head has norms. Only GroupNorm heads exist here: a head norm with
    running statistics (NORM "BN" / "SyncBN") is refused."""
    box = {k: m for k in out if (m := _BOX_CONV.fullmatch(k))}
    mask = {k: m for k in out if (m := _MASK_CONV.fullmatch(k))}
    bn = [k for k in (*box, *mask) if k.endswith("running_var")]
    if bn:
        raise ValueError(f"detectron2 head with BatchNorm ('{bn[0]}'): this project's ROI heads have GroupNorm "
                         "(MODEL.ROI_BOX_HEAD.USE_GN / ROI_MASK_HEAD.USE_GN) or no norm, not BN")
    step = 3 if any(m[2] for m in box.values()) else 2  # conv, GN, ReLU / conv, ReLU
    mask_norm = any(m[2] for m in mask.values())
    renamed: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in out.items():
        new = key
        if (m := box.get(key)) is not None:
            new = f"roi_heads.box.feature_extractor.xconvs.{step * (int(m[1]) - 1) + (1 if m[2] else 0)}.{m[3]}"
        elif mask_norm and (m := mask.get(key)) is not None:
            new = f"roi_heads.mask.feature_extractor.mask_fcn{m[1]}.{1 if m[2] else 0}.{m[3]}"
        if new != key:
            report.retarget(key, new)
        renamed[new] = value
    return renamed


def _input_config(state: Mapping[str, Any], arch: Dict[str, Any]) -> Dict[str, Any]:
    if "stem.conv1.weight" in state:  # a torchvision ResNet converted by convert-torchvision-to-d2.py
        cfg = dict(RGB_01)
    else:
        cfg = dict(RECOMMENDED_CONFIG)
        if arch.get("MODEL.RESNETS.NUM_GROUPS", 1) > 1:  # ResNeXt: its std, stride in the 3x3 conv
            cfg["INPUT.PIXEL_STD"] = list(RESNEXT_STD)
            cfg["MODEL.RESNETS.STRIDE_IN_1X1"] = False
    mean, std = state.get("pixel_mean"), state.get("pixel_std")
    if isinstance(mean, torch.Tensor) and mean.numel() == 3:
        mean = [float(v) for v in mean.flatten()]
        std = [float(v) for v in std.flatten()] if isinstance(std, torch.Tensor) else [1.0] * 3
        if mean[0] > mean[2]:  # RGB order (R's mean is the largest): torchvision-style input
            cfg.update({"INPUT.TO_BGR255": False, "INPUT.PIXEL_MEAN": [m / 255 for m in mean],
                        "INPUT.PIXEL_STD": [s / 255 for s in std]})
        else:
            cfg.update({"INPUT.TO_BGR255": True, "INPUT.PIXEL_MEAN": mean, "INPUT.PIXEL_STD": std})
    cfg["MODEL.ROI_BOX_HEAD.POOLER_ALIGNED"] = True
    cfg["MODEL.ROI_MASK_HEAD.POOLER_ALIGNED"] = True
    cfg.update(_MODEL_CONFIG)
    return cfg


def convert_detectron2(state: Mapping[str, Any], model_state: Optional[Mapping[str, Any]] = None
                       ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """detectron2 R-*-FPN Faster / Mask R-CNN (or backbone) weights -> our names and class layout.

    Args:
        state: detectron2 names -> tensors (``module.`` already stripped).
        model_state: the target model's state dict; frozen BN layers get default running
            stats only where it has them.

    Returns:
        ``(our state dict, report)``.
    """
    report = ConversionReport(source="detectron2")
    out = _conv_head_layout(apply_rules(state, _RULES, _SKIPS, report), report)
    _fix_class_layout(out, report)
    fill_default_bn_stats(out, report, model_state)
    arch = infer_architecture(out)
    report.recommended_config = {**_input_config(state, arch), **arch}
    if "roi_heads.box.predictor.cls_score.weight" in out:
        report.notes.append("detectron2 scores have background last; reordered to background first")
    report.notes.append(f"detectron2's whole recipe (training included): --config-file {RECOMMENDED_CONFIG_FILE}")
    return out, report
