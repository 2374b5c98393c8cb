"""Weights from other frameworks: torchvision, detectron2, maskrcnn-benchmark, Detectron/Caffe2.

One file per format (``torchvision.py``, ``detectron2.py``, ``maskrcnn_benchmark.py``,
``caffe2.py``); ``detect.py`` recognises the format, ``common.py`` holds the shared renaming and
frozen-BN arithmetic, ``report.py`` what a conversion did. Reading files is ``checkpoint.io``'s
job and loading ``MODEL.WEIGHT`` is ``checkpoint.weights``'s:

    state, report = convert_state_dict(safe_load("model_final.pkl"), "auto", model.state_dict())
    report.recommended_config  # {"INPUT.TO_BGR255": True, ..., "MODEL.ROI_BOX_HEAD.NUM_CLASSES": 81}

Formats (``detect_format`` names): ``native`` (this project), ``torchvision``
(``maskrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn``), ``torchvision-resnet`` (ImageNet
classifiers), ``detectron2``, ``maskrcnn-benchmark``, ``caffe2`` (Detectron .pkl).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from . import detect as fmt
from .caffe2 import convert_caffe2
from .common import BN_COUNTER, BN_EPS, apply_rules, infer_architecture, rule_table
from .detect import FORMATS, detect_format, unwrap
from .detectron2 import convert_detectron2
from .maskrcnn_benchmark import convert_maskrcnn_benchmark
from .report import ConversionReport
from .torchvision import convert_torchvision, convert_torchvision_resnet

__all__ = ["BN_EPS", "CONVERTERS", "ConversionReport", "FORMATS", "convert_state_dict", "detect_format",
           "infer_architecture", "unwrap"]

Converter = Callable[[Mapping[str, Any], Optional[Mapping[str, Any]]],
                     Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]]

_TRAINING_STATE = ("optimizer", "scheduler", "iteration", "trainer", "amp", "grad_scaler")
_OUR_METADATA = ("converted_from", "recommended_config", "__author__", "matching_heuristics")
_IDENTITY = rule_table(r"(.+)  {1}")


def _convert_native(state: Mapping[str, Any], model_state: Optional[Mapping[str, Any]] = None
                    ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    report = ConversionReport(source=fmt.NATIVE)
    # Our own BN layers (NORM "BN") do have num_batches_tracked; drop it only where the model
    # (when known) has none.
    has_counter = model_state is None or any(k.endswith("num_batches_tracked") for k in model_state)
    skips = [] if has_counter else [(r"num_batches_tracked$", BN_COUNTER)]
    out = apply_rules(state, _IDENTITY, skips, report)
    report.recommended_config = infer_architecture(out)
    return out, report


CONVERTERS: Dict[str, Converter] = {
    fmt.NATIVE: _convert_native,
    fmt.TORCHVISION: convert_torchvision,
    fmt.TORCHVISION_RESNET: convert_torchvision_resnet,
    fmt.DETECTRON2: convert_detectron2,
    fmt.MASKRCNN_BENCHMARK: convert_maskrcnn_benchmark,
    fmt.CAFFE2: convert_caffe2,
}


def convert_state_dict(state: Any, source: str = "auto", model_state: Optional[Mapping[str, Any]] = None
                       ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """Renames (and where needed re-lays-out) weights of another framework into this project's names.

    Args:
        state: a state dict, or a whole loaded file (``{"model": ..., "optimizer": ...}``,
            ``{"blobs": ...}``, a detectron2 ``.pkl`` dict); numpy arrays become tensors.
        source: one of ``FORMATS`` or ``"auto"`` (``detect_format``).
        model_state: the target model's ``state_dict()``; when given, the report lists model
            tensors left uninitialised, shape mismatches and unused tensors, and norm layers
            follow the model (running stats only where it has them).

    Returns:
        ``(new_state, report)``: our names -> tensors, and a ``ConversionReport`` whose
        ``recommended_config`` holds the config keys the weights were trained with.

    Raises:
        ValueError: unknown ``source``, or a format that cannot be recognised.
    """
    if source == "auto":
        source = fmt.detect_format(state)
        if source == fmt.UNKNOWN:
            keys = list(fmt.unwrap(state)[0])[:8] if isinstance(state, Mapping) else []
            raise ValueError(f"unrecognised weights format (first names: {keys})")
    if source not in CONVERTERS:
        raise ValueError(f"unknown source format '{source}'; choose from {', '.join(CONVERTERS)} or auto")
    tensors, extras = fmt.unwrap(state)
    tensors = OrderedDict((k, _as_tensor(v)) for k, v in tensors.items())
    new_state, report = CONVERTERS[source](tensors, model_state)
    for key in extras:
        if key in _TRAINING_STATE:
            report.skip(key, "training state, not weights")
        elif key not in _OUR_METADATA:
            report.skip(key, "not weights")
    if isinstance(extras.get("recommended_config"), Mapping):
        report.recommended_config.update(extras["recommended_config"])
    if model_state is not None:
        report.compare_with_model(new_state, model_state)
    return new_state, report


def _as_tensor(value: Any) -> Any:
    """numpy arrays (from .pkl files) -> tensors; anything else unchanged."""
    if isinstance(value, torch.Tensor) or not hasattr(value, "__array_interface__"):
        return value
    import numpy as np

    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        return value
    return torch.from_numpy(np.array(arr, copy=True))
