"""``MODEL.WEIGHT``: the one path from a weights name to a loaded model.

    torchvision://NAME or a local file -> safe read -> format detection -> conversion to this
    project's names (``convert/``) -> tolerant loading, with a table of skipped, missing and
    unexpected tensors.

``torchvision://resnet50`` and ``torchvision://resnet101`` are torchvision's ImageNet weights
(``IMAGENET1K_V1``, the ones detection recipes start from); ``torchvision://maskrcnn_resnet50_fpn``
and ``torchvision://fasterrcnn_resnet50_fpn`` are its COCO detectors (``COCO_V1``). The file is
looked up in ``torch.hub.get_dir()/checkpoints`` first; only when it is not there is a download
attempted, and a failure says where to put the file by hand.
"""
from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Mapping

import torch
from torch import nn

from .convert import convert_state_dict
from .convert.detect import NATIVE, UNKNOWN, detect_format, unwrap
from .convert.report import ConversionReport, collapse_names
from ..config.checks import get_key
from ..utils.errors import WeightsError
from .io import CheckpointError, safe_load

__all__ = ["CONVENTION_KEYS", "SCHEME", "convention_mismatches", "convention_of", "convert_weights",
           "load_model_state", "load_weights", "load_weights_file", "resolve_weights", "torchvision_weights_url",
           "unwrap_model"]

_logger = logging.getLogger(__name__)

SCHEME = "torchvision://"
# Which published weights a bare model name means: ImageNet V1 for classifiers (what the
# detection recipes were tuned with), COCO for torchvision's detectors.
PREFERRED_WEIGHTS = ("IMAGENET1K_V1", "COCO_V1")
_TRAINING_STATE = ("optimizer", "scheduler", "iteration")


#: Config keys that change what weights compute without changing any tensor's shape, so a wrong
#: value loads without an error and gives poor (or zero) AP: the input convention (channel order
#: and range, mean, std), where the ResNet strides, its norm (GroupNorm weights load into frozen
#: BN as a plain affine), and ROIAlign's half-pixel offset. Each applies
#: to the part of the model that the weights hold (``backbone.body`` / ``roi_heads``).
CONVENTION_KEYS: Dict[str, str] = {
    "INPUT.TO_BGR255": "backbone.body.", "INPUT.PIXEL_MEAN": "backbone.body.", "INPUT.PIXEL_STD": "backbone.body.",
    "MODEL.RESNETS.STRIDE_IN_1X1": "backbone.body.", "MODEL.RESNETS.NORM": "backbone.body.",
    "MODEL.ROI_BOX_HEAD.POOLER_ALIGNED": "roi_heads.box.", "MODEL.ROI_MASK_HEAD.POOLER_ALIGNED": "roi_heads.mask.",
}
# Keys compared through a coarser value: BN and frozen BN weights are interchangeable (train with
# BN, deploy frozen); GroupNorm is not.
_COMPARED_AS = {"MODEL.RESNETS.NORM": lambda norm: "GN" if norm == "GN" else "BN"}


def _cfg_value(cfg: Any, key: str) -> Any:
    value = get_key(cfg, key)
    return list(value) if isinstance(value, tuple) else value


def convention_of(cfg: Any) -> Dict[str, Any]:
    """The :data:`CONVENTION_KEYS` of ``cfg``, saved with this project's checkpoints as
    ``recommended_config`` (the entry ``tools/convert_weights.py`` writes too)."""
    return {key: _cfg_value(cfg, key) for key in CONVENTION_KEYS}


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _mismatched_keys(cfg: Any, expected: Mapping[str, Any], names: Iterable[str]) -> List[str]:
    names = list(names)
    keys = []
    for key, part in CONVENTION_KEYS.items():
        if key not in expected or (names and not any(n.startswith(part) for n in names)):
            continue
        coarse = _COMPARED_AS.get(key, lambda v: v)
        if not _same_value(coarse(_cfg_value(cfg, key)), coarse(expected[key])):
            keys.append(key)
    return keys


def _mismatch_line(cfg: Any, expected: Mapping[str, Any], key: str) -> str:
    return f"{key}: the config has {_cfg_value(cfg, key)!r}, the weights expect {expected[key]!r}"


def convention_mismatches(cfg: Any, expected: Mapping[str, Any], names: Iterable[str] = ()) -> List[str]:
    """Where ``cfg`` disagrees with the convention the weights were trained with.

    Args:
        cfg: the config the model was built from.
        expected: the weights' recommended config (a converter's report, or the
            ``recommended_config`` entry of the file); other keys are ignored.
        names: the weights' tensor names (our names); a key is only checked when the weights
            hold the part it applies to (an ImageNet backbone says nothing of ROIAlign). Empty:
            check every key.

    Returns:
        ``["KEY: the config has X, the weights expect Y", ...]``.
    """
    return [_mismatch_line(cfg, expected, key) for key in _mismatched_keys(cfg, expected, names)]


def _warn_convention(cfg: Any, expected: Any, names: Iterable[str], path: str, logger: logging.Logger) -> None:
    if cfg is None or not isinstance(expected, Mapping):
        return
    keys = _mismatched_keys(cfg, expected, names)
    if not keys:
        return
    lines = [_mismatch_line(cfg, expected, key) for key in keys]
    fix = " ".join(f'{k} "{expected[k]}"' if isinstance(expected[k], list) else f"{k} {expected[k]}" for k in keys)
    logger.warning("%s was trained with another input convention than this config; it loads, but what "
                   "the model computes (and its AP) will be off:\n  %s\nGive the keys the weights expect, "
                   "e.g. on the command line: %s (or ignore this if you retrain on purpose).",
                   path, "\n  ".join(lines), fix)


class WeightsNameError(WeightsError, ValueError):
    """``MODEL.WEIGHT`` names no loadable weights: an unsupported URL scheme, an unknown torchvision model."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside (Distributed)DataParallel wrappers, whose names checkpoints use.

    Args:
        model: A model, wrapped or not.

    Returns:
        ``model.module`` (repeatedly) for wrappers, else ``model``.
    """
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


# ------------------------------------------------------------------ torchvision://
def torchvision_weights_url(name: str) -> str:
    """The download address of torchvision's weights for model ``name``.

    Args:
        name: A torchvision model name, e.g. ``resnet50`` (ImageNet ``IMAGENET1K_V1``) or
            ``maskrcnn_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` (COCO ``COCO_V1``).

    Returns:
        The URL of the weights file.

    Raises:
        ValueError: torchvision has no such model.
    """
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(name)
    except (ValueError, KeyError) as e:
        raise WeightsNameError(f"unknown torchvision model '{name}' in '{SCHEME}{name}'") from e
    weights = next((getattr(enum, w) for w in PREFERRED_WEIGHTS if hasattr(enum, w)), enum.DEFAULT)
    return weights.url


def resolve_weights(name: str | os.PathLike) -> str:
    """A local file for ``name``: local paths as they are, ``torchvision://NAME`` from torch's cache.

    Args:
        name: A local path or ``torchvision://<model>``.

    Returns:
        The local path.

    Raises:
        ValueError: An unsupported scheme (``https://``, ``catalog://``, ...).
        RuntimeError: The file is not cached and could not be downloaded.
    """
    name = os.fspath(name)
    if "://" not in name:
        return name
    if not name.startswith(SCHEME):
        raise WeightsNameError(f"cannot load weights '{name}': only local files and {SCHEME}<model> "
                         "names (e.g. torchvision://resnet50) are supported")
    url = torchvision_weights_url(name[len(SCHEME):])
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    if os.path.isfile(cached):
        _logger.info("%s -> %s (cached)", name, cached)
        return cached
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    _logger.info("downloading %s to %s", url, cached)
    try:
        torch.hub.download_url_to_file(url, cached, progress=False)
    except Exception as e:  # no network, proxy, ...
        raise CheckpointError(f"could not download {url} for '{name}' ({type(e).__name__}: {e}); "
                           f"download it by hand to {cached}, or set MODEL.WEIGHT to a local file") from e
    return cached


# --------------------------------------------------------------------- conversion
def convert_weights(obj: Any, path: str, model_state: Mapping[str, Any] | None = None,
                    source: str = "auto") -> tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """Converts a loaded weights file of any supported framework to this project's names.

    Args:
        obj: What ``safe_load`` returned for ``path``.
        path: The file's name, for error messages.
        model_state: The target model's ``state_dict()``, for the report (uninitialised
            tensors, shape mismatches) and to match its norm layers.
        source: A format name (``convert.FORMATS``), or ``"auto"`` to detect it.

    Returns:
        ``(state_dict, report)``: our names -> tensors, and what was mapped / skipped / left
        uninitialised, with the config the weights expect in ``report.recommended_config``.

    Raises:
        ValueError: The format is not recognised or cannot be converted (the message names
            the file and a few of its tensor names).
    """
    if source == "auto":
        source = detect_format(obj)
    if source == UNKNOWN:
        raise ValueError(f"{path}: unrecognised weights format; {_describe(obj)}. Supported: this "
                         "project's checkpoints, torchvision (detection and ImageNet ResNets), "
                         "detectron2, maskrcnn-benchmark and Detectron/Caffe2 .pkl files")
    try:
        return convert_state_dict(obj, source, model_state)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def _describe(obj: Any) -> str:
    try:
        state, extras = unwrap(obj)
    except TypeError:
        return f"it holds a {type(obj).__name__}, not a dict of tensors"
    keys = [str(k) for k in list(state)[:6]]
    more = f" (and {len(state) - 6} more)" if len(state) > 6 else ""
    top = f"; other top-level entries: {sorted(map(str, extras))[:6]}" if extras else ""
    return f"its first names are {keys}{more}{top}"


def load_weights_file(path: str | os.PathLike, model_state: Mapping[str, Any] | None = None,
                      source: str = "auto", log: logging.Logger | None = None
                      ) -> tuple["OrderedDict[str, torch.Tensor]", ConversionReport]:
    """Reads weights of any supported framework and returns them in this project's names.

    Args:
        path: A local ``.pth`` / ``.pkl`` file or ``torchvision://<model>`` (torchvision,
            torchvision ImageNet ResNet, detectron2, maskrcnn-benchmark, Detectron/Caffe2, or
            this project's own).
        model_state: The target model's ``state_dict()`` (see ``convert_weights``).
        source: A format name, or ``"auto"`` to detect it.
        log: Logger for the conversion report; this module's when None.

    Returns:
        ``(state_dict, report)``, as ``convert_weights``; the state goes straight to
        ``load_model_state``.

    Raises:
        FileNotFoundError, CheckpointError, UnsafePickleError: See ``io.safe_load``.
        ValueError: The format is not recognised (the message names the file and a few keys).
    """
    path = resolve_weights(path)
    state, report = convert_weights(safe_load(path), path, model_state, source)
    report.log(log or _logger, where=path)
    return state, report


def load_weights(model: nn.Module, weights: str | os.PathLike,
                 logger: logging.Logger | None = None, cfg: Any = None) -> dict[str, list]:
    """Loads ``MODEL.WEIGHT`` (model tensors only) into ``model``.

    A file in the model's own names (this project's checkpoints) loads as it is; another
    framework's file is recognised and converted (torchvision's shares many names with ours,
    so an overlap alone does not tell). Optimizer, scheduler and iteration are ignored.

    Args:
        model: Target model (DDP/DataParallel wrappers are unwrapped).
        weights: A local file or ``torchvision://<model>``.
        logger: Logger for the reports; this module's when None.
        cfg: The config the model was built from; when given, a warning lists the
            :data:`CONVENTION_KEYS` it disagrees on with the weights (a converted file's
            recommended config, or the ``recommended_config`` saved in this project's files).

    Returns:
        The report of ``load_model_state``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: ``weights`` uses another URL scheme than ``torchvision://``.
        CheckpointError: The file is unsafe, corrupt or of no known format; the message names it.
    """
    logger = logger or _logger
    path = resolve_weights(weights)
    model_state = unwrap_model(model).state_dict()
    obj = safe_load(path)
    try:
        tensors, extras = unwrap(obj)
        if detect_format(obj) in (NATIVE, UNKNOWN) and set(tensors) & set(model_state):
            state: Mapping[str, Any] = tensors
            expected = extras.get("recommended_config")
        else:
            state, report = convert_weights(obj, path, model_state)
            report.log(logger, where=path)
            expected = report.recommended_config
    except (ValueError, TypeError) as e:
        raise CheckpointError(str(e) if path in str(e) else f"{path}: {e}") from e
    result = load_model_state(model, state, logger)
    _warn_convention(cfg, expected, [_strip_module(k) for k in state], path, logger)
    if any(k in extras for k in _TRAINING_STATE):
        logger.info("loaded model weights only; optimizer, scheduler and iteration start fresh")
    return result


# ------------------------------------------------------------------ tolerant load
def _add_backbone_prefix(state_dict: Mapping[str, Any], model_keys: Iterable[str]) -> Mapping[str, Any]:
    """An ImageNet ResNet state dict (``conv1.weight``, ``layer1.0...``) on ``backbone.body.*``.

    Used only when none of the file's names are model names but the prefixed ones are; the
    classifier (``fc.*``) is dropped.
    """
    keys = set(model_keys)
    if any(k in keys for k in state_dict):
        return state_dict
    prefixed = {f"backbone.body.{k}": v for k, v in state_dict.items() if not k.startswith("fc.")}
    return prefixed if any(k in keys for k in prefixed) else state_dict


def _strip_module(name: str) -> str:
    while name.startswith("module."):  # (Distributed)DataParallel, possibly nested
        name = name[len("module."):]
    return name


def _load_table(report: dict[str, list], total: int) -> str:
    lines = [f"loaded {len(report['loaded'])}/{total} tensors of the model"]
    if report["skipped"]:
        lines.append(f"skipped {len(report['skipped'])} tensors with mismatched shape (file -> model):")
        lines += [f"  {n}: {tuple(fs)} -> {tuple(ms)}" for n, fs, ms in report["skipped"]]
    if report["missing"]:
        lines.append(f"missing from file ({len(report['missing'])}), left as initialised:")
        lines += [f"  {n}" for n in collapse_names(report["missing"])]
    if report["unexpected"]:
        lines.append(f"unexpected in file ({len(report['unexpected'])}), ignored:")
        lines += [f"  {n}" for n in collapse_names(report["unexpected"])]
    return "\n".join(lines)


def load_model_state(model: nn.Module, state_dict: Mapping[str, Any],
                     logger: logging.Logger | None = None) -> dict[str, list]:
    """Loads matching tensors of ``state_dict`` into ``model``, tolerantly.

    Leading ``"module."`` prefixes are stripped from the file's names. Tensors whose shape differs from
    the model's (e.g. a class-specific head when fine-tuning with another number of classes)
    are skipped instead of raising. A readable table is logged.

    Args:
        model: Target model (DDP/DataParallel wrappers are unwrapped).
        state_dict: Mapping from parameter/buffer name to tensor.
        logger: Logger for the table; this module's when None.

    Returns:
        ``{"loaded": [names], "skipped": [(name, file_shape, model_shape)], "missing": [model
        names absent from the file], "unexpected": [file names absent from the model]}``.
    """
    logger = logger or _logger
    model = unwrap_model(model)
    own = model.state_dict()
    state_dict = _add_backbone_prefix({_strip_module(k): v for k, v in state_dict.items()}, own.keys())
    filtered: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    report: dict[str, list] = {"loaded": [], "skipped": [], "missing": [], "unexpected": []}
    for name, value in state_dict.items():
        if name.endswith("num_batches_tracked") and name not in own:
            continue  # BatchNorm counters have no counterpart in frozen BN / GN layers
        if name not in own or not isinstance(value, torch.Tensor):
            report["unexpected"].append(name)
        elif tuple(value.shape) != tuple(own[name].shape):
            report["skipped"].append((name, tuple(value.shape), tuple(own[name].shape)))
        else:
            filtered[name] = value
    in_file = set(filtered) | {s[0] for s in report["skipped"]}
    report["missing"] = [k for k in own if k not in in_file]
    report["loaded"] = list(filtered)
    model.load_state_dict(filtered, strict=False)
    level = logging.WARNING if (report["skipped"] or report["missing"] or report["unexpected"]) else logging.INFO
    logger.log(level, _load_table(report, len(own)))
    return report
