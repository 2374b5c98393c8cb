"""maskrcnn-benchmark checkpoints (``.pth``).

maskrcnn-benchmark inherited Detectron's conventions (see ``caffe2.py``): BGR 0..255 input minus
``[102.9801, 115.9465, 122.7717]`` (std 1; the ResNeXt std for X-101 recipes), MSRA ResNets,
unaligned ROIAlign, our class layout, and a frozen BN without epsilon:
``weight * rsqrt(running_var)``. Ours adds 1e-5 inside the rsqrt, so ``running_var`` is stored
minus that eps, which keeps the affine exact.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Optional, Tuple

import torch

from .caffe2 import finish_caffe2_lineage
from .common import ANCHORS, BN_COUNTER, apply_rules, frozen_bn_prefixes, rule_table
from .report import ConversionReport

__all__ = ["convert_maskrcnn_benchmark"]

# Source name (maskrcnn-benchmark)                     this project's name
_RULES = rule_table(r"""
    backbone\.body\.stem\.conv1\.weight                  backbone.body.conv1.weight
    backbone\.body\.stem\.bn1\.(\w+)                     backbone.body.bn1.{1}
    backbone\.body\.(layer\d\..+)                        backbone.body.{1}
    backbone\.fpn\.fpn_inner(\d)\.(weight|bias)          backbone.fpn.inner_blocks.{1-1}.0.{2}
    backbone\.fpn\.fpn_layer(\d)\.(weight|bias)          backbone.fpn.layer_blocks.{1-1}.0.{2}
    # GroupNorm variants: Sequential(conv, GN)
    backbone\.fpn\.fpn_inner(\d)\.([01])\.(weight|bias)  backbone.fpn.inner_blocks.{1-1}.{2}.{3}
    backbone\.fpn\.fpn_layer(\d)\.([01])\.(weight|bias)  backbone.fpn.layer_blocks.{1-1}.{2}.{3}
    rpn\.head\.(conv|cls_logits|bbox_pred)\.(weight|bias)  rpn.head.{1}.{2}
    roi_heads\.(box|mask)\.(.+)                          roi_heads.{1}.{2}
""")
_SKIPS = [(r"num_batches_tracked$", BN_COUNTER), (r"anchor_generator\.", ANCHORS)]


def convert_maskrcnn_benchmark(state: Mapping[str, Any], model_state: Optional[Mapping[str, Any]] = None
                               ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """maskrcnn-benchmark R-*-FPN weights -> our names, with frozen-BN eps compensation.

    Args:
        state: maskrcnn-benchmark names -> tensors (``module.`` already stripped).
        model_state: the target model's state dict (see ``caffe2.finish_caffe2_lineage``).

    Returns:
        ``(our state dict, report)``.
    """
    report = ConversionReport(source="maskrcnn-benchmark")
    out = apply_rules(state, _RULES, _SKIPS, report)
    # Its FrozenBatchNorm2d always saves running statistics; its GroupNorm layers (same names)
    # have none.
    norms = frozen_bn_prefixes(out)
    group_norm = bool(norms) and not any(f"{p}running_var" in out for p in norms)
    return finish_caffe2_lineage(out, report, model_state, resnext_std=True, group_norm=group_norm)
