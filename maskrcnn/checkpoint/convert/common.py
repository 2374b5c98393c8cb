"""Pieces shared by the format converters: input conventions, renaming rules, frozen-BN
arithmetic, class-layout changes and reading the architecture back from converted weights."""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torchvision.ops import FrozenBatchNorm2d

from .report import ConversionReport

# Our frozen BN (torchvision's FrozenBatchNorm2d, which the backbone uses) computes
# scale = weight * rsqrt(running_var + BN_EPS); read the eps from it rather than restating it.
BN_EPS: float = float(FrozenBatchNorm2d(1).eps)


def input_config(*, bgr255: bool, mean: Sequence[float], std: Sequence[float], stride_in_1x1: bool,
                 aligned: bool = False) -> Dict[str, Any]:
    """An input convention as this project's config keys.

    Args:
        bgr255: BGR images in 0..255 (else RGB in 0..1).
        mean: per-channel mean subtracted, in that order and range.
        std: per-channel divisor.
        stride_in_1x1: ResNet stride in the 1x1 conv (MSRA) instead of the 3x3 (torchvision).
        aligned: ROIAlign with the half-pixel offset (detectron2).

    Returns:
        ``{"INPUT.TO_BGR255": ..., ..., "MODEL.ROI_MASK_HEAD.POOLER_ALIGNED": ...}``.
    """
    return {"INPUT.TO_BGR255": bgr255, "INPUT.PIXEL_MEAN": list(mean), "INPUT.PIXEL_STD": list(std),
            "MODEL.RESNETS.STRIDE_IN_1X1": stride_in_1x1,
            "MODEL.ROI_BOX_HEAD.POOLER_ALIGNED": aligned, "MODEL.ROI_MASK_HEAD.POOLER_ALIGNED": aligned}


# Input conventions of the peers: torchvision's, and the MSRA / Caffe2 one of Detectron and
# maskrcnn-benchmark.
RGB_01 = input_config(bgr255=False, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                      stride_in_1x1=False)
BGR_255 = input_config(bgr255=True, mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0],
                       stride_in_1x1=True)
# The per-channel std of the ResNeXt ImageNet models (BGR 0..255), used by both peers' X-101 recipes.
RESNEXT_STD = [57.375, 57.120, 58.395]

Target = Callable[[re.Match], str]
Rule = Tuple[re.Pattern, Target]

NOT_A_TENSOR = "not a tensor"
NO_COUNTERPART = "no counterpart in this project's model"
BN_COUNTER = "BatchNorm step counter (frozen BN has none)"
ANCHORS = "anchor buffers (recomputed from the config)"
CLASSIFIER = "ImageNet classifier"

_FIELD = re.compile(r"\{(\d+)(?:([+-]\d+)|:(\w+))?\}")


def _template(target: str, lookups: Mapping[str, Mapping[str, Any]]) -> Target:
    """The function that fills the ``{N}``, ``{N+K}`` and ``{N:table}`` fields of ``target``."""
    for field in _FIELD.finditer(target):
        if field[3] is not None and field[3] not in lookups:
            raise ValueError(f"rule target '{target}' uses the unknown lookup '{field[3]}'")

    def fill(field: re.Match, m: re.Match) -> str:
        group, shift, table = field[1], field[2], field[3]
        value = m[int(group)]
        if shift is not None:
            return str(int(value) + int(shift))
        return str(lookups[table][value]) if table is not None else value

    return lambda m: _FIELD.sub(lambda field: fill(field, m), target)


def rule_table(text: str, lookups: Optional[Mapping[str, Mapping[str, Any]]] = None) -> List[Rule]:
    """Renaming rules from a two-column table: a regex for a whole source name, then our name.

    In our name, ``{N}`` is group N of the match, ``{N-K}`` / ``{N+K}`` that group as an integer
    shifted by K (detectron2's ``res2`` is our ``layer1``), and ``{N:table}`` that group looked
    up in ``lookups[table]`` (Caffe2's ``_w`` suffix is our ``weight``). Blank lines and lines
    starting with ``#`` are ignored.

    Args:
        text: one rule per line, the two columns separated by spaces.
        lookups: named tables for the ``{N:table}`` fields.

    Returns:
        ``(compiled pattern, target)`` pairs in the table's order, for ``rename``.

    Raises:
        ValueError: a line without exactly two columns, or an unknown lookup.
    """
    rules = []
    for line in text.splitlines():
        columns = line.split()
        if not columns or columns[0].startswith("#"):
            continue
        if len(columns) != 2:
            raise ValueError(f"a renaming rule needs a pattern and a target: '{line.strip()}'")
        rules.append((re.compile(columns[0]), _template(columns[1], lookups or {})))
    return rules


def rename(key: str, rules: Sequence[Rule]) -> Optional[str]:
    """Our name for ``key`` from the first rule whose pattern matches all of it.

    Args:
        key: a source tensor name.
        rules: from ``rule_table``.

    Returns:
        Our name, or None when no rule matches.
    """
    for pattern, target in rules:
        m = pattern.fullmatch(key)
        if m is not None:
            return target(m)
    return None


def apply_rules(state: Mapping[str, Any], rules: Sequence[Rule],
                skips: Sequence[Tuple[str, str]], report: ConversionReport) -> "OrderedDict[str, torch.Tensor]":
    """Renames every tensor of ``state``; records mapped and skipped names in ``report``.

    Args:
        state: source names -> tensors (other values are skipped).
        rules: compiled ``(pattern, target)``; the first full match names the tensor.
        skips: ``(regex, reason)`` checked first; a match skips the entry with that reason.
        report: filled in place.

    Returns:
        Our names -> tensors, in the source's order.
    """
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    skip_patterns = [(re.compile(p), r) for p, r in skips]
    for key, value in state.items():
        reason = next((r for p, r in skip_patterns if p.search(key)), None)
        if reason is None and not isinstance(value, torch.Tensor):
            reason = NOT_A_TENSOR
        dst = None if reason else rename(key, rules)
        if reason is None and dst is None:
            reason = NO_COUNTERPART
        if reason:
            report.skip(key, reason)
            continue
        if dst in out:
            raise ValueError(f"two source tensors map to '{dst}' (the second is '{key}')")
        out[dst] = value
        report.map(key, dst)
    return out


def frozen_bn_prefixes(state: Mapping[str, torch.Tensor]) -> Iterable[str]:
    """The ResNet norm layers of a converted state dict.

    Args:
        state: our names -> tensors.

    Returns:
        Their prefixes, e.g. ``backbone.body.layer1.0.bn1.``.
    """
    pattern = re.compile(r"(backbone\.body\.(?:.*\.)?(?:bn\d|downsample\.1)\.)weight")
    return [m.group(1) for m in map(pattern.fullmatch, list(state)) if m]


def _needs_running_stats(prefix: str, model_state: Optional[Mapping[str, Any]]) -> bool:
    return model_state is None or f"{prefix}running_var" in model_state


def adjust_no_eps_bn(state: "OrderedDict[str, torch.Tensor]", report: ConversionReport,
                     model_state: Optional[Mapping[str, Any]] = None, eps: float = BN_EPS) -> None:
    """Rewrites frozen-BN tensors trained WITHOUT an epsilon so that ours computes the same affine.

    maskrcnn-benchmark's FrozenBatchNorm2d computes ``scale = weight * rsqrt(running_var)`` and
    Caffe2's AffineChannel is ``y = s * x + b`` (running_mean 0, running_var 1 when absent).
    Ours adds ``eps`` inside the rsqrt, so ``running_var - eps`` is stored: ``(rv - eps) + eps =
    rv`` and the affine is unchanged (to float32 rounding). Channels with ``rv <= eps`` cannot
    take that shift; their ``eps`` is folded into ``weight`` instead. GroupNorm layers (the
    model has no running stats there) keep only weight and bias.

    Args:
        state: our names -> tensors, changed in place.
        report: annotated with what changed.
        model_state: when given, running stats are only emitted where the model has them.
        eps: our frozen BN epsilon.
    """
    for prefix in frozen_bn_prefixes(state):
        weight = state[f"{prefix}weight"]
        if not _needs_running_stats(prefix, model_state):
            for name in ("running_mean", "running_var"):
                state.pop(f"{prefix}{name}", None)
            continue
        rv = state.get(f"{prefix}running_var")
        filled = rv is None
        rv64 = torch.ones_like(weight, dtype=torch.float64) if filled else rv.double()
        if f"{prefix}running_mean" not in state:
            state[f"{prefix}running_mean"] = torch.zeros_like(weight)
        ok = rv64 > eps
        new_rv = torch.where(ok, rv64 - eps, rv64)
        fold = torch.where(ok, torch.ones_like(rv64), torch.sqrt((rv64 + eps) / rv64))
        state[f"{prefix}running_var"] = new_rv.to(weight.dtype)
        if not bool(ok.all()):
            state[f"{prefix}weight"] = (weight.double() * fold).to(weight.dtype)
            report.annotate(f"{prefix}weight", f"eps folded into {int((~ok).sum())} channels")
        note = ("running stats filled (mean 0, var 1 - eps) for an exact affine" if filled
                else f"running_var - {eps:g}: the source's BN has no eps")
        report.annotate(f"{prefix}weight", note)
        if not filled:
            report.annotate(f"{prefix}running_var", note)


def fill_default_bn_stats(state: "OrderedDict[str, torch.Tensor]", report: ConversionReport,
                          model_state: Optional[Mapping[str, Any]] = None) -> None:
    """Adds running_mean 0 / running_var 1 to frozen BN layers that have only weight and bias,
    the defaults of a peer whose BN uses the same eps (detectron2).

    Args:
        state: our names -> tensors, changed in place.
        report: annotated with what changed.
        model_state: when given, running stats are only added where the model has them.
    """
    for prefix in frozen_bn_prefixes(state):
        if not _needs_running_stats(prefix, model_state) or f"{prefix}running_var" in state:
            continue
        weight = state[f"{prefix}weight"]
        state.setdefault(f"{prefix}running_mean", torch.zeros_like(weight))
        state[f"{prefix}running_var"] = torch.ones_like(weight)
        report.annotate(f"{prefix}weight", "running stats filled with the defaults (mean 0, var 1)")


def background_last_to_first(t: torch.Tensor) -> torch.Tensor:
    """Moves the background row of class scores from last to first.

    Args:
        t: ``(K + 1, ...)`` rows ``[c_1..c_K, bg]``.

    Returns:
        ``(K + 1, ...)`` rows ``[bg, c_1..c_K]``.
    """
    return torch.cat([t[-1:], t[:-1]])


def add_background_rows(t: torch.Tensor, rows_per_class: int, num_classes: int) -> torch.Tensor:
    """Prepends zero rows for the background class; class-agnostic rows are tiled per class.

    Args:
        t: ``(K * rows_per_class, ...)`` class-specific or ``(rows_per_class, ...)`` agnostic.
        rows_per_class: 4 for box deltas, 1 for mask logits.
        num_classes: classes INCLUDING background (K + 1).

    Returns:
        ``(num_classes * rows_per_class, ...)``.
    """
    if t.shape[0] == rows_per_class and num_classes > 2:
        return t.repeat(num_classes, *([1] * (t.dim() - 1)))
    zeros = torch.zeros((rows_per_class,) + tuple(t.shape[1:]), dtype=t.dtype)
    return torch.cat([zeros, t])


def infer_architecture(state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Config keys that the shapes of converted weights (our names) pin down.

    Returns:
        e.g. ``{"MODEL.BACKBONE.CONV_BODY": "R-101-FPN", "MODEL.ROI_BOX_HEAD.NUM_CLASSES": 81,
        "MODEL.MASK_ON": True, ...}``; only keys the weights determine.
    """
    cfg: Dict[str, Any] = {}
    body = "backbone.body."
    blocks = {}
    for k in state:
        m = re.match(r"backbone\.body\.layer(\d)\.(\d+)\.", k)
        if m:
            blocks[int(m[1])] = max(blocks.get(int(m[1]), 0), int(m[2]) + 1)
    bottleneck = f"{body}layer1.0.conv3.weight" in state
    depths = {(2, 2, 2, 2): 26 if bottleneck else 18, (3, 4, 6, 3): 50 if bottleneck else 34,
              (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
    depth = depths.get(tuple(blocks.get(i, 0) for i in (1, 2, 3, 4)))
    if depth is not None:
        cfg["MODEL.BACKBONE.CONV_BODY"] = f"R-{depth}-FPN"
    if f"{body}conv1.weight" in state:
        cfg["MODEL.RESNETS.STEM_OUT_CHANNELS"] = int(state[f"{body}conv1.weight"].shape[0])
    last = f"{body}layer1.0.conv3.weight" if bottleneck else f"{body}layer1.0.conv2.weight"
    if last in state:
        cfg["MODEL.RESNETS.RES2_OUT_CHANNELS"] = int(state[last].shape[0])
    conv2 = state.get(f"{body}layer1.0.conv2.weight")
    if bottleneck and conv2 is not None:
        groups = int(conv2.shape[0]) // int(conv2.shape[1])
        cfg["MODEL.RESNETS.NUM_GROUPS"] = groups
        cfg["MODEL.RESNETS.WIDTH_PER_GROUP"] = int(conv2.shape[0]) // groups
    if "backbone.fpn.layer_blocks.0.0.weight" in state:
        cfg["MODEL.BACKBONE.OUT_CHANNELS"] = int(state["backbone.fpn.layer_blocks.0.0.weight"].shape[0])
    if "backbone.fpn.layer_blocks.0.0.weight" in state:
        cfg.update(_norm_keys("MODEL.FPN", state, "backbone.fpn.layer_blocks.0.1."))
    if "rpn.head.conv.weight" in state:
        cfg["MODEL.RPN.NUM_CONVS"] = 1 + sum(bool(re.fullmatch(r"rpn\.head\.extra_convs\.\d+\.weight", k))
                                             for k in state)
    box = "roi_heads.box.feature_extractor."
    fc6 = state.get(f"{box}fc6.weight", state.get(f"{box}fc6.0.weight"))
    if fc6 is not None:
        cfg["MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM"] = int(fc6.shape[0])
    xconvs = sorted((int(m[1]), state[k]) for k in state
                    if (m := re.fullmatch(rf"{re.escape(box)}xconvs\.(\d+)\.weight", k)))
    if xconvs:  # Sequential(conv, [norm], ReLU, ...): the 4-D weights are the convs
        convs = [w for _, w in xconvs if w.dim() == 4]
        cfg.update({"MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR": "FPNXconv1fcFeatureExtractor",
                    "MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS": len(convs),
                    "MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM": int(convs[0].shape[0])})
        cfg.update(_norm_keys("MODEL.ROI_BOX_HEAD", state, f"{box}xconvs.1."))
    elif fc6 is not None:
        cfg["MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR"] = "FPN2MLPFeatureExtractor"
        cfg.update(_norm_keys("MODEL.ROI_BOX_HEAD", state, f"{box}fc6.1."))
    cls = state.get("roi_heads.box.predictor.cls_score.weight")
    if cls is not None:
        cfg["MODEL.ROI_BOX_HEAD.NUM_CLASSES"] = int(cls.shape[0])
    mask_convs = sorted((int(m[1]), int(state[k].shape[0])) for k in state if (m := re.fullmatch(
        r"roi_heads\.mask\.feature_extractor\.mask_fcn(\d+)\.(?:0\.)?weight", k)))
    if cls is not None or fc6 is not None:
        cfg["MODEL.MASK_ON"] = bool(mask_convs)
    if mask_convs:
        cfg["MODEL.ROI_MASK_HEAD.CONV_LAYERS"] = [c for _, c in mask_convs]
        cfg.update(_norm_keys("MODEL.ROI_MASK_HEAD", state, "roi_heads.mask.feature_extractor.mask_fcn1.1."))
    return cfg


def _norm_keys(part: str, state: Mapping[str, torch.Tensor], norm: str) -> Dict[str, Any]:
    """``USE_GN`` / ``NORM`` of a part whose first norm layer (if any) has the prefix ``norm``:
    with running statistics BatchNorm, taken frozen ("FrozenBN"), else GroupNorm."""
    if f"{norm}running_mean" in state:
        return {f"{part}.USE_GN": False, f"{part}.NORM": "FrozenBN"}
    return {f"{part}.USE_GN": f"{norm}weight" in state, f"{part}.NORM": ""}

