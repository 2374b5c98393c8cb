"""``convert_state_dict``: any supported format -> this project's names, with a report."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from . import detect as fmt
from .common import BN_COUNTER, apply_rules, compile_rules, infer_architecture
from .d2_format import convert_detectron2
from .mb_format import convert_caffe2, convert_maskrcnn_benchmark
from .report import ConversionReport
from .tv_format import convert_torchvision, convert_torchvision_resnet

__all__ = ["convert_state_dict", "CONVERTERS"]

Converter = Callable[[Mapping[str, Any], Optional[Mapping[str, Any]]],
                     Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]]

_TRAINING_STATE = ("optimizer", "scheduler", "iteration", "trainer", "amp", "grad_scaler")


def _convert_native(state: Mapping[str, Any], model_state: Optional[Mapping[str, Any]] = None
                    ) -> Tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    report = ConversionReport(source=fmt.NATIVE)
    # Our own BN layers (NORM "BN") do have num_batches_tracked; drop it only where the model
    # (when known) has none.
    has_counter = model_state is None or any(k.endswith("num_batches_tracked") for k in model_state)
    skips = [] if has_counter else [(r"num_batches_tracked$", BN_COUNTER)]
    out = apply_rules(state, compile_rules([(r"(.+)", r"\1")]), skips, report)
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
        elif key not in ("converted_from", "recommended_config", "__author__", "matching_heuristics"):
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
