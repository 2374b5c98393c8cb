"""What a config may hold beyond the types of its defaults: the values of each key.

Three tables, checked by :func:`check_supported` (``load_cfg`` calls it; every error is a
:class:`ConfigError` naming the key, the value, what is allowed and what to do):

- ``UNSUPPORTED_VALUES`` (in ``defaults.py``): keys kept so that maskrcnn-benchmark files
  load, for features this project does not have; only the listed values are accepted.
- ``CHOICES``: keys that select one of several implementations.
- ``RANGES``: numeric keys and the interval they must lie in.

The choices repeat constants of the modules that use them (``PASTE_RULES``, ``RESIZE_MODES``, ``SIZE_SAMPLINGS``,
``CHECK_LEVELS``), because this package imports nothing heavy; tests/config keeps them equal.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, Tuple

from .cfgnode import CfgNode, ConfigError
from .defaults import _C, UNSUPPORTED_VALUES

__all__ = ["CHOICES", "HEAD_NORMS", "RANGES", "check_supported", "get_key", "norm_of"]

RESNET_DEPTHS = (18, 26, 34, 50, 101, 152)
HEAD_NORMS = ("", "GN", "FrozenBN", "BN")

# key -> (allowed values, what they mean)
CHOICES: Dict[str, Tuple[Tuple[Any, ...], str]] = {
    "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR": (("FPN2MLPFeatureExtractor", "FPNXconv1fcFeatureExtractor"),
                                             "two fc layers of MLP_HEAD_DIM, or NUM_STACKED_CONVS 3x3 convs of "
                                             "CONV_HEAD_DIM and one fc (the GroupNorm recipes' 4conv1fc head)"),
    "MODEL.RESNETS.NORM": (("FrozenBN", "BN", "GN"), "FrozenBN for pretrained weights, BN or GN to train from scratch"),
    **{f"MODEL.{part}.NORM": (HEAD_NORMS, "no norm, GroupNorm (MODEL.GROUP_NORM), frozen BN (to fine-tune BN "
                                          "weights) or BatchNorm after each conv")
       for part in ("FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD")},
    "INPUT.RESIZE_MODE": (("antialias", "torchvision", "pil"), "see the comment in maskrcnn/config/defaults.py"),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": (("choice", "range"), "one of MIN_SIZE_TRAIN per image, or uniform between its "
                                      "two values (detectron2's key)"),
    "DATASETS.CHECK": (("annotations", "header", "full"), "how much of each dataset is checked when it is built"),
    "MODEL.ROI_MASK_HEAD.PASTE_RULE": (("center", "torchvision"), "see maskrcnn/layers/mask_ops.py"),
    "MODEL.ROI_MASK_HEAD.TARGET_RULE": (("center", "torchvision"), "see maskrcnn/modeling/roi_heads/mask_head/loss.py"),
    "MODEL.RPN.LOSS_NORMALIZATION": (("sampled", "batch_size"), "see maskrcnn/modeling/rpn/loss.py"),
    "SOLVER.OPTIMIZER": (("SGD", "AdamW"), "SGD with SOLVER.MOMENTUM, or AdamW with SOLVER.BETAS"),
    "SOLVER.LR_SCHEDULER": (("WarmupMultiStepLR", "WarmupCosineLR"), "multi-step decay at SOLVER.STEPS, or cosine to MAX_ITER"),
    "SOLVER.WARMUP_METHOD": (("linear", "constant"), "how the LR rises during SOLVER.WARMUP_ITERS"),
    "SOLVER.AMP.DTYPE": (("float16", "bfloat16"), "float16 with a gradient scaler (CUDA only), or bfloat16"),
}


def _interval(low: float, high: float = math.inf, low_open: bool = False,
              high_open: bool = False) -> Tuple[Callable[[float], bool], str]:
    def ok(v: float) -> bool:
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    left, right = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
    return ok, f"{left}{low:g}, {'inf' if high == math.inf else format(high, 'g')}{right}"


_POSITIVE = _interval(0, low_open=True)
_NON_NEGATIVE = _interval(0)
_AT_LEAST_1 = _interval(1)
_FRACTION = _interval(0, 1)
_IOU = _interval(0, 1)

# key -> (predicate, interval as text); tuples are checked element by element.
RANGES: Dict[str, Tuple[Callable[[float], bool], str]] = {
    "SOLVER.MAX_ITER": _NON_NEGATIVE,
    "SOLVER.BASE_LR": _POSITIVE,
    "SOLVER.BIAS_LR_FACTOR": _NON_NEGATIVE,
    "SOLVER.MOMENTUM": _interval(0, 1, high_open=True),
    "SOLVER.BETAS": _interval(0, 1, high_open=True),
    "SOLVER.WEIGHT_DECAY": _NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY_BIAS": _NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY_NORM": _NON_NEGATIVE,
    "SOLVER.GAMMA": _POSITIVE,
    "SOLVER.STEPS": _NON_NEGATIVE,
    "SOLVER.WARMUP_FACTOR": _interval(0, 1, low_open=True),
    "SOLVER.WARMUP_ITERS": _NON_NEGATIVE,
    "SOLVER.COSINE_END_FACTOR": _FRACTION,
    "SOLVER.CLIP_GRADIENTS.MAX_NORM": _POSITIVE,
    "SOLVER.CHECKPOINT_PERIOD": _AT_LEAST_1,
    "SOLVER.IMS_PER_BATCH": _AT_LEAST_1,
    "SOLVER.LOG_PERIOD": _AT_LEAST_1,
    "SOLVER.MAX_NONFINITE_SKIPS": _NON_NEGATIVE,
    "SOLVER.DIVERGENCE.FACTOR": _interval(1, low_open=True),
    "SOLVER.DIVERGENCE.REFERENCE_ITERS": _AT_LEAST_1,
    "TEST.IMS_PER_BATCH": _AT_LEAST_1,
    "TEST.EVAL_PERIOD": _NON_NEGATIVE,
    "TEST.VIS_IMAGES": _NON_NEGATIVE,
    "TEST.VIS_SCORE_THRESHOLD": _FRACTION,
    "VIS_PERIOD": _NON_NEGATIVE,
    "DATALOADER.NUM_WORKERS": _NON_NEGATIVE,
    "DATALOADER.SIZE_DIVISIBILITY": _NON_NEGATIVE,
    "INPUT.MIN_SIZE_TRAIN": _AT_LEAST_1,
    "INPUT.MAX_SIZE_TRAIN": _AT_LEAST_1,
    "INPUT.MIN_SIZE_TEST": _AT_LEAST_1,
    "INPUT.MAX_SIZE_TEST": _AT_LEAST_1,
    "INPUT.HORIZONTAL_FLIP_PROB_TRAIN": _FRACTION,
    "INPUT.VERTICAL_FLIP_PROB_TRAIN": _FRACTION,
    "INPUT.BRIGHTNESS": _NON_NEGATIVE,
    "INPUT.CONTRAST": _NON_NEGATIVE,
    "INPUT.SATURATION": _NON_NEGATIVE,
    "INPUT.HUE": _interval(0, 0.5),
    "MODEL.BACKBONE.FREEZE_CONV_BODY_AT": _interval(0, 5),
    "MODEL.BACKBONE.OUT_CHANNELS": _AT_LEAST_1,
    "MODEL.RPN.FG_IOU_THRESHOLD": _IOU,
    "MODEL.RPN.BG_IOU_THRESHOLD": _IOU,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": _AT_LEAST_1,
    "MODEL.RPN.POSITIVE_FRACTION": _FRACTION,
    "MODEL.RPN.PRE_NMS_TOP_N_TRAIN": _AT_LEAST_1,
    "MODEL.RPN.PRE_NMS_TOP_N_TEST": _AT_LEAST_1,
    "MODEL.RPN.POST_NMS_TOP_N_TRAIN": _AT_LEAST_1,
    "MODEL.RPN.POST_NMS_TOP_N_TEST": _AT_LEAST_1,
    "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN": _AT_LEAST_1,
    "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST": _AT_LEAST_1,
    "MODEL.RPN.NMS_THRESH": _IOU,
    "MODEL.RPN.MIN_SIZE": _NON_NEGATIVE,
    "MODEL.RPN.STRADDLE_THRESH": _interval(-1),
    "MODEL.ROI_HEADS.FG_IOU_THRESHOLD": _IOU,
    "MODEL.ROI_HEADS.BG_IOU_THRESHOLD": _IOU,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": _AT_LEAST_1,
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": _FRACTION,
    "MODEL.ROI_HEADS.SCORE_THRESH": _FRACTION,
    "MODEL.ROI_HEADS.NMS": _IOU,
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMG": _AT_LEAST_1,
    "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD": _interval(0.5, 1),
    "MODEL.ROI_MASK_HEAD.CONV_LAYERS": _AT_LEAST_1,
    "MODEL.ROI_MASK_HEAD.DILATION": _AT_LEAST_1,
    "MODEL.ROI_MASK_HEAD.MAX_TRAIN_PER_IMAGE": _NON_NEGATIVE,
    "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM": _AT_LEAST_1,
    "MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS": _AT_LEAST_1,
    "MODEL.RPN.NUM_CONVS": _AT_LEAST_1,
    "MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM": _AT_LEAST_1,
    "MODEL.ROI_BOX_HEAD.DILATION": _AT_LEAST_1,
    "DIST_TIMEOUT_S": _POSITIVE,
}


def get_key(cfg: CfgNode, key: str) -> Any:
    """The value of a dotted ``key`` of ``cfg``."""
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _same(a: Any, b: Any) -> bool:
    """Equality where a list equals the tuple of its items and True never equals 1."""
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _check_unsupported(cfg: CfgNode) -> None:
    for key, (allowed, advice) in UNSUPPORTED_VALUES.items():
        value = get_key(cfg, key)
        if not any(_same(value, a) for a in allowed):
            only = " or ".join(repr(a) for a in allowed)
            raise ConfigError(f"{key} = {value!r} is not supported by this project (only {only}): "
                              f"{advice}")


def _check_choices(cfg: CfgNode) -> None:
    for key, (allowed, meaning) in CHOICES.items():
        value = get_key(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key} = {value!r} is not one of {', '.join(map(repr, allowed))} ({meaning})")
    body = cfg.MODEL.BACKBONE.CONV_BODY
    m = re.fullmatch(r"R-(\d+)-FPN", body)
    if m is None or int(m.group(1)) not in RESNET_DEPTHS:
        raise ConfigError(f"MODEL.BACKBONE.CONV_BODY = {body!r} is not supported: use R-<depth>-FPN with "
                          f"depth {', '.join(map(str, RESNET_DEPTHS))} (e.g. R-50-FPN)")


def _check_ranges(cfg: CfgNode) -> None:
    for key, (ok, interval) in RANGES.items():
        value = get_key(cfg, key)
        values = value if isinstance(value, (list, tuple)) else (value,)
        for v in values:
            if not (isinstance(v, (int, float)) and math.isfinite(v) and ok(v)):
                raise ConfigError(f"{key} = {value!r} is out of range: set it to a value in {interval}")


def _check_optimizer_keys(s: CfgNode) -> None:
    """SOLVER.MOMENTUM is SGD's and SOLVER.BETAS AdamW's: the other optimizer's key, changed from
    its default, would be ignored, so it is refused."""
    if len(s.BETAS) != 2:
        raise ConfigError(f"SOLVER.BETAS = {tuple(s.BETAS)!r} must be two numbers (beta1, beta2), e.g. (0.9, 0.999)")
    unused = {"SGD": ("BETAS", "MOMENTUM"), "AdamW": ("MOMENTUM", "BETAS")}[s.OPTIMIZER]
    if not _same(s[unused[0]], _C.SOLVER[unused[0]]):
        raise ConfigError(f"SOLVER.{unused[0]} = {s[unused[0]]!r} is not used by SOLVER.OPTIMIZER "
                          f"{s.OPTIMIZER!r} (its counterpart is SOLVER.{unused[1]}): remove SOLVER.{unused[0]}, "
                          f"or set SOLVER.OPTIMIZER to the optimizer it is for")


def _check_scheduler_keys(s: CfgNode) -> None:
    """SOLVER.STEPS and GAMMA are WarmupMultiStepLR's, COSINE_END_FACTOR is WarmupCosineLR's: the
    other scheduler's keys, changed from their defaults, would be ignored, so they are refused."""
    if s.LR_SCHEDULER == "WarmupCosineLR":
        unused = [k for k in ("STEPS", "GAMMA") if not _same(s[k], _C.SOLVER[k])]
        what = "the cosine schedule decays the LR from the warmup's end to COSINE_END_FACTOR at MAX_ITER"
    else:
        unused = [k for k in ("COSINE_END_FACTOR",) if not _same(s[k], _C.SOLVER[k])]
        what = "the multi-step schedule multiplies the LR by GAMMA at each of STEPS"
    if unused:
        keys = " and ".join(f"SOLVER.{k} = {s[k]!r}" for k in unused)
        raise ConfigError(f"{keys}: not used by SOLVER.LR_SCHEDULER {s.LR_SCHEDULER!r} ({what}): remove "
                          f"{' and '.join('SOLVER.' + k for k in unused)}, or set SOLVER.LR_SCHEDULER to the "
                          f"schedule {'they are' if len(unused) > 1 else 'it is'} for")


_CONV_HEAD_KEYS = ("NUM_STACKED_CONVS", "CONV_HEAD_DIM", "DILATION")


def _check_box_head_keys(b: CfgNode) -> None:
    """The conv keys of the box head belong to FPNXconv1fcFeatureExtractor: changed from their
    defaults with the two-fc head they would be ignored, so they are refused."""
    if b.FEATURE_EXTRACTOR == "FPNXconv1fcFeatureExtractor":
        return
    for key in _CONV_HEAD_KEYS:
        if not _same(b[key], _C.MODEL.ROI_BOX_HEAD[key]):
            raise ConfigError(f"MODEL.ROI_BOX_HEAD.{key} = {b[key]!r} is only used by the conv-fc box head, but "
                              f"MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR is {b.FEATURE_EXTRACTOR!r} (two fc layers): "
                              f"remove {key}, or set FEATURE_EXTRACTOR FPNXconv1fcFeatureExtractor")


def _check_norm_keys(cfg: CfgNode) -> None:
    """``USE_GN`` (maskrcnn-benchmark's key) and ``NORM`` (all norms) of the FPN and the heads
    must not disagree, and the two-fc box head takes GroupNorm only (a BatchNorm after an fc
    layer is not a layout any framework's weights have)."""
    for part in ("FPN", "ROI_BOX_HEAD", "ROI_MASK_HEAD"):
        node = cfg.MODEL[part]
        if node.USE_GN and node.NORM not in ("", "GN"):
            raise ConfigError(f"MODEL.{part}.USE_GN = True and MODEL.{part}.NORM = {node.NORM!r} ask for two "
                              f"norms: remove USE_GN (NORM {node.NORM!r} alone), or set NORM \"GN\"")
    b = cfg.MODEL.ROI_BOX_HEAD
    if b.FEATURE_EXTRACTOR != "FPNXconv1fcFeatureExtractor" and b.NORM not in ("", "GN"):
        raise ConfigError(f"MODEL.ROI_BOX_HEAD.NORM = {b.NORM!r} is for the conv-fc box head, but "
                          f"MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR is {b.FEATURE_EXTRACTOR!r} (two fc layers, "
                          f"which take GroupNorm only): set NORM \"\" or \"GN\", or FEATURE_EXTRACTOR "
                          f"FPNXconv1fcFeatureExtractor")


def norm_of(node: CfgNode) -> str:
    """The norm a part of the model (``MODEL.FPN``, ``ROI_BOX_HEAD``, ``ROI_MASK_HEAD``) is built
    with: ``"GN"`` when ``USE_GN`` is on, else its ``NORM`` (``""``: none)."""
    return "GN" if node.USE_GN else node.NORM


def _check_consistency(cfg: CfgNode) -> None:
    s = cfg.SOLVER
    if list(s.STEPS) != sorted(s.STEPS):
        raise ConfigError(f"SOLVER.STEPS must be increasing, got {tuple(s.STEPS)}")
    _check_optimizer_keys(s)
    _check_scheduler_keys(s)
    _check_box_head_keys(cfg.MODEL.ROI_BOX_HEAD)
    _check_norm_keys(cfg)
    sizes = tuple(cfg.INPUT.MIN_SIZE_TRAIN)
    if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range" and (len(sizes) != 2 or sizes[0] > sizes[1]):
        raise ConfigError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING 'range' draws the short side between two sizes, but "
                          f"INPUT.MIN_SIZE_TRAIN is {sizes}: give (low, high), e.g. (640, 800), or use 'choice'")
    for kind in ("RPN", "ROI_HEADS"):
        node = cfg.MODEL[kind]
        if node.BG_IOU_THRESHOLD > node.FG_IOU_THRESHOLD:
            raise ConfigError(f"MODEL.{kind}.BG_IOU_THRESHOLD ({node.BG_IOU_THRESHOLD}) is above "
                              f"MODEL.{kind}.FG_IOU_THRESHOLD ({node.FG_IOU_THRESHOLD}): it must not be")
    gn = cfg.MODEL.GROUP_NORM
    if (gn.NUM_GROUPS == -1) == (gn.DIM_PER_GP == -1) or min(gn.NUM_GROUPS, gn.DIM_PER_GP) < -1 \
            or 0 in (gn.NUM_GROUPS, gn.DIM_PER_GP):
        raise ConfigError(f"MODEL.GROUP_NORM: NUM_GROUPS = {gn.NUM_GROUPS} and DIM_PER_GP = {gn.DIM_PER_GP}; "
                          "set exactly one of them (a positive number) and the other to -1, e.g. "
                          "NUM_GROUPS 32 (the default) or NUM_GROUPS -1 DIM_PER_GP 16")
    r = cfg.MODEL.RESNETS
    for key, value in (("TRANS_FUNC", r.TRANS_FUNC), ("STEM_FUNC", r.STEM_FUNC)):
        if value.endswith("WithGN") and r.NORM != "GN":
            raise ConfigError(f"MODEL.RESNETS.{key} = {value!r} asks for GroupNorm but MODEL.RESNETS.NORM is "
                              f"{r.NORM!r}: the norm is built from NORM, so set MODEL.RESNETS.NORM GN (or "
                              f"remove {key})")
    if not gn.EPSILON > 0:
        raise ConfigError(f"MODEL.GROUP_NORM.EPSILON = {gn.EPSILON!r} must be > 0")
    div, first = cfg.DATALOADER.SIZE_DIVISIBILITY, cfg.MODEL.RPN.ANCHOR_STRIDE[0]
    if cfg.MODEL.RPN.ANCHOR_STRIDES_FROM_IMAGE and (div <= 0 or div % first):
        raise ConfigError(f"MODEL.RPN.ANCHOR_STRIDES_FROM_IMAGE True derives the strides from the padded image, "
                          f"which needs DATALOADER.SIZE_DIVISIBILITY ({div}) to be a positive multiple of "
                          f"MODEL.RPN.ANCHOR_STRIDE[0] ({first}): set DATALOADER.SIZE_DIVISIBILITY 32 (torchvision's)")


def check_supported(cfg: CfgNode) -> None:
    """Raises a ConfigError for the first key whose value this project does not support.

    Args:
        cfg: a full config (e.g. from ``get_cfg()`` plus merges).

    Raises:
        ConfigError: names the key, its value, what is allowed and what to do.
    """
    _check_unsupported(cfg)
    _check_choices(cfg)
    _check_ranges(cfg)
    _check_consistency(cfg)
