"""The logic behind ``tools/convert_weights.py``: convert a file, check it against a model built
from a config, and write a checkpoint this project loads directly."""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .api import convert_state_dict
from .detect import UNKNOWN, detect_format
from .files import read_weights_file
from .report import ConversionReport

__all__ = ["DEFAULT_CONFIG", "config_mismatches", "convert_weights_file", "target_config"]

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs",
                              "e2e_mask_rcnn_R_50_FPN_1x.yaml")
# Class count used when the weights have no box predictor (backbone-only files): COCO.
_FALLBACK_NUM_CLASSES = 81


def _get(cfg, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _set(cfg, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = getattr(node, part)
    old = getattr(node, leaf)
    setattr(node, leaf, tuple(value) if isinstance(old, tuple) else value)


def config_mismatches(cfg, recommended: Mapping[str, Any]) -> List[str]:
    """Lines ``KEY: config has X, the weights expect Y`` for every recommended key ``cfg`` disagrees on.

    Args:
        cfg: a CfgNode.
        recommended: ``report.recommended_config``.
    """
    lines = []
    for key, want in recommended.items():
        try:
            have = _get(cfg, key)
        except AttributeError:
            continue
        same = (list(have) == list(want)) if isinstance(have, (list, tuple)) else have == want
        if not same:
            lines.append(f"{key}: config has {have!r}, the weights expect {want!r}")
    return lines


def target_config(recommended: Mapping[str, Any], config_file: Optional[str] = None,
                  opts: Sequence[str] = ()):
    """The config of the model the converted weights are checked against.

    Without ``config_file``: the R-50-FPN Mask R-CNN recipe with every key the weights
    recommend (depth, classes, mask head, input convention). With one: that file, where only
    an unset ``NUM_CLASSES`` (0) is taken from the weights. ``opts`` (``KEY VALUE`` pairs)
    come last.

    Returns:
        A CfgNode on the CPU, with ``MODEL.WEIGHT`` cleared.
    """
    from ...config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(config_file or os.path.normpath(DEFAULT_CONFIG))
    if config_file:
        if cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 0 and "MODEL.ROI_BOX_HEAD.NUM_CLASSES" in recommended:
            cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = recommended["MODEL.ROI_BOX_HEAD.NUM_CLASSES"]
    else:
        for key, value in recommended.items():
            _set(cfg, key, value)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 0:
        cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = _FALLBACK_NUM_CLASSES
    cfg.MODEL.WEIGHT = ""
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _atomic_save(obj: Any, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def convert_weights_file(in_path: str, out_path: str, source: str = "auto", config_file: Optional[str] = None,
                         opts: Sequence[str] = ()) -> Tuple[ConversionReport, List[str]]:
    """Converts ``in_path`` and writes ``{"model", "converted_from", "recommended_config"}`` to ``out_path``.

    The written file loads with ``torch.load(weights_only=True)`` and as ``MODEL.WEIGHT``.

    Args:
        in_path: weights of any supported format.
        out_path: destination (written atomically).
        source: format name or ``"auto"``.
        config_file: config of the model to check against (see ``target_config``).
        opts: ``KEY VALUE`` overrides of that config.

    Returns:
        ``(report, mismatches)``: the report against the built model, and ``config_mismatches``
        between that model's config and what the weights expect.

    Raises:
        ValueError: unrecognised format (message names the file).
    """
    from ...modeling.build import build_model

    obj = read_weights_file(in_path)
    if source == "auto":
        source = detect_format(obj)
        if source == UNKNOWN:
            raise ValueError(f"{in_path}: unrecognised weights format; pass SOURCE explicitly or see "
                             "the supported formats in README 'Weights from other frameworks'")
    _, first = convert_state_dict(obj, source)
    cfg = target_config(first.recommended_config, config_file, opts)
    model_state = build_model(cfg).state_dict()
    state, report = convert_state_dict(obj, source, model_state)
    recommended: Dict[str, Any] = dict(report.recommended_config)
    _atomic_save({"model": {k: v.contiguous() for k, v in state.items()}, "converted_from": source,
                  "recommended_config": recommended}, out_path)
    return report, config_mismatches(cfg, recommended)
