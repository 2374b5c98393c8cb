"""Recognise which framework a weights file comes from, by its structure and tensor names."""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Dict, Mapping, Tuple

__all__ = ["FORMATS", "detect_format", "unwrap"]

# Names returned by detect_format (and accepted by convert_state_dict).
NATIVE = "native"  # this project's own names
TORCHVISION = "torchvision"  # maskrcnn_resnet50_fpn / fasterrcnn_resnet50_fpn
TORCHVISION_RESNET = "torchvision-resnet"  # ImageNet resnet*/resnext* classifiers
DETECTRON2 = "detectron2"  # detectron2 .pth checkpoints and model-zoo .pkl files
MASKRCNN_BENCHMARK = "maskrcnn-benchmark"  # maskrcnn-benchmark .pth checkpoints
CAFFE2 = "caffe2"  # Detectron (Caffe2) .pkl: ImageNet R-50.pkl and detection models
UNKNOWN = "unknown"
FORMATS = (NATIVE, TORCHVISION, TORCHVISION_RESNET, DETECTRON2, MASKRCNN_BENCHMARK, CAFFE2)

_C2_BLOB = re.compile(r"(conv1_w|res_conv1_bn_[sb]|res\d_\d+_branch\w+|fpn_(inner_)?res\d_\d+_sum\w*|"
                      r"conv_rpn\w*|rpn_(cls_logits|bbox_pred)\w*|fc[67]_[wb]|_\[mask\]_fcn\d_[wb])")
_D2_RESNET = re.compile(r"(stem\.conv1\.|res[2-5]\.\d+\.(conv\d|shortcut)\.)")
_TV_DET_PREFIXES = ("roi_heads.box_head.", "roi_heads.box_predictor.", "roi_heads.mask_head.",
                    "roi_heads.mask_predictor.", "rpn.head.conv.0.")
_TV_LEGACY_FPN = re.compile(r"backbone\.fpn\.(inner|layer)_blocks\.\d+\.(weight|bias)")
_NATIVE_PREFIXES = ("backbone.body.", "backbone.fpn.", "rpn.head.", "roi_heads.box.", "roi_heads.mask.")


def unwrap(obj: Any) -> Tuple["OrderedDict[str, Any]", Dict[str, Any]]:
    """Splits a loaded weights file into its tensors and everything else.

    Handles ``{"model": sd, "optimizer": ..., ...}`` (maskrcnn-benchmark, detectron2, ours),
    ``{"blobs": sd, ...}`` (Detectron detection .pkl), ``{"state_dict": sd}`` and raw state
    dicts; a leading ``module.`` is removed from every name.

    Returns:
        ``(state, extras)``: the name -> value mapping, and the other top-level entries.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a dict of weights, got {type(obj).__name__}")
    extras: Dict[str, Any] = {}
    state: Mapping[str, Any] = obj
    for key in ("model", "blobs", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            extras = {k: v for k, v in obj.items() if k != key}
            break
    names = [k for k in state if isinstance(k, str)]
    if names and all(k.startswith("module.") for k in names):
        state = OrderedDict((k[len("module."):], v) for k, v in state.items())
    return OrderedDict(state), extras


def detect_format(state_dict_or_obj: Any) -> str:
    """The framework a state dict (or a whole loaded weights file) comes from.

    Args:
        state_dict_or_obj: a state dict, or a loaded file (``{"model": ...}``, a Detectron
            ``{"blobs": ...}`` pickle, a detectron2 model-zoo pickle, ...).

    Returns:
        One of ``FORMATS`` (``"native"``, ``"torchvision"``, ``"torchvision-resnet"``,
        ``"detectron2"``, ``"maskrcnn-benchmark"``, ``"caffe2"``), or ``"unknown"``.
    """
    try:
        state, extras = unwrap(state_dict_or_obj)
    except TypeError:
        return UNKNOWN
    keys = [k for k in state if isinstance(k, str)]
    if "converted_from" in extras:
        return NATIVE
    if any(k.startswith(("backbone.bottom_up.", "proposal_generator.", "roi_heads.box_head.fc1.",
                         "roi_heads.mask_head.deconv.", "backbone.fpn_lateral")) for k in keys):
        return DETECTRON2
    if "__author__" in extras and any(_D2_RESNET.match(k) for k in keys):
        return DETECTRON2  # e.g. torchvision ResNets converted for detectron2
    if any(_C2_BLOB.fullmatch(k) for k in keys):
        return CAFFE2
    if any(k.startswith(("backbone.body.stem.", "backbone.fpn.fpn_inner", "rpn.anchor_generator."))
           for k in keys):
        return MASKRCNN_BENCHMARK
    if any(k.startswith(_TV_DET_PREFIXES) or _TV_LEGACY_FPN.fullmatch(k) for k in keys):
        return TORCHVISION
    if any(k.startswith(_NATIVE_PREFIXES) for k in keys):
        return NATIVE
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return TORCHVISION_RESNET
    return UNKNOWN
