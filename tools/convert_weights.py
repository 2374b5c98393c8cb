#!/usr/bin/env python
"""Convert weights of another framework into a checkpoint this project loads as MODEL.WEIGHT:

    python tools/convert_weights.py detectron2 model_final_f10217.pkl out/d2_R50_FPN.pth
    python tools/convert_weights.py auto e2e_mask_rcnn_R_50_FPN_1x.pth out/mb.pth \\
        --config-file configs/e2e_mask_rcnn_R_50_FPN_1x.yaml MODEL.ROI_BOX_HEAD.NUM_CLASSES 81

SOURCE: torchvision, torchvision-resnet, detectron2, maskrcnn-benchmark, caffe2 or auto.
Prints the tensors mapped, skipped and left uninitialised in the model built from the config
(default: the R-50-FPN Mask R-CNN recipe shaped like the weights), and the input config the
weights expect. OUT holds {"model", "converted_from", "recommended_config"}.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, List, Mapping, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from maskrcnn.checkpoint import atomic_write, safe_load  # noqa: E402
from maskrcnn.checkpoint.convert import FORMATS, ConversionReport  # noqa: E402
from maskrcnn.checkpoint.weights import convert_weights  # noqa: E402
from maskrcnn.config import get_cfg  # noqa: E402
from maskrcnn.modeling.build import build_model  # noqa: E402
from maskrcnn.utils.errors import UserError, WeightsError, main_guard  # noqa: E402

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "e2e_mask_rcnn_R_50_FPN_1x.yaml")
# Class count used when the weights have no box predictor (backbone-only files): COCO.
FALLBACK_NUM_CLASSES = 81


def _node_and_leaf(cfg, key: str) -> Tuple[Any, str]:
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = getattr(node, part)
    return node, leaf


def config_mismatches(cfg, recommended: Mapping[str, Any]) -> List[str]:
    """Lines ``KEY: config has X, the weights expect Y`` for every recommended key ``cfg`` disagrees on.

    Args:
        cfg: a CfgNode.
        recommended: ``report.recommended_config``.

    Returns:
        One line per disagreeing key; keys this config does not have are left out.
    """
    lines = []
    for key, want in recommended.items():
        try:
            node, leaf = _node_and_leaf(cfg, key)
            have = getattr(node, leaf)
        except AttributeError:
            continue
        same = (list(have) == list(want)) if isinstance(have, (list, tuple)) else have == want
        if not same:
            lines.append(f"{key}: config has {have!r}, the weights expect {want!r}")
    return lines


def target_config(recommended: Mapping[str, Any], config_file: Optional[str] = None,
                  opts: Sequence[str] = ()):
    """The config of the model the converted weights are checked against.

    Args:
        recommended: ``report.recommended_config`` of a first conversion.
        config_file: without it, the R-50-FPN Mask R-CNN recipe with every key the weights
            recommend (depth, classes, mask head, input convention); with it, that file, where
            only an unset ``NUM_CLASSES`` (0) is taken from the weights.
        opts: ``KEY VALUE`` pairs merged last.

    Returns:
        A CfgNode on the CPU, with ``MODEL.WEIGHT`` cleared.
    """
    cfg = get_cfg()
    cfg.merge_from_file(config_file or DEFAULT_CONFIG)
    if config_file:
        if cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 0 and "MODEL.ROI_BOX_HEAD.NUM_CLASSES" in recommended:
            cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = recommended["MODEL.ROI_BOX_HEAD.NUM_CLASSES"]
    else:
        for key, value in recommended.items():
            node, leaf = _node_and_leaf(cfg, key)
            setattr(node, leaf, tuple(value) if isinstance(getattr(node, leaf), tuple) else value)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 0:
        cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = FALLBACK_NUM_CLASSES
    cfg.MODEL.WEIGHT = ""
    cfg.MODEL.DEVICE = "cpu"
    return cfg


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
        ValueError: unrecognised format (the message names the file).
        CheckpointError: unreadable or unsafe file (the message names it).
    """
    obj = safe_load(in_path)
    _, first = convert_weights(obj, in_path, source=source)
    cfg = target_config(first.recommended_config, config_file, opts)
    state, report = convert_weights(obj, in_path, build_model(cfg).state_dict(), source=first.source)
    recommended = dict(report.recommended_config)
    out = {"model": {k: v.contiguous() for k, v in state.items()}, "converted_from": report.source,
           "recommended_config": recommended}
    atomic_write(out_path, lambda f: torch.save(out, f))
    return report, config_mismatches(cfg, recommended)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns 0. Bad input raises a UserError (status 4 for the weights,
    2 for the config or an unwritable OUT; see maskrcnn/utils/errors.py)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", choices=[*FORMATS, "auto"], help="format of IN")
    parser.add_argument("input", metavar="IN", help=".pth or .pkl weights file")
    parser.add_argument("output", metavar="OUT", help="converted checkpoint (.pth)")
    parser.add_argument("--config-file", default="", help="config of the target model")
    parser.add_argument("opts", nargs="*", help="config overrides as KEY VALUE pairs")
    args = parser.parse_intermixed_args(argv)  # --config-file may come after IN OUT
    try:
        report, mismatches = convert_weights_file(args.input, args.output, args.source,
                                                  args.config_file or None, args.opts)
    except UserError:  # CheckpointError (missing, corrupt, unsafe IN), ConfigError
        raise
    except (ValueError, RuntimeError) as e:  # a format that cannot be converted; names the file
        raise WeightsError(str(e)) from e
    except OSError as e:  # writing OUT
        raise UserError(f"cannot write {args.output}: {e.strerror or e}; choose another OUT") from e
    print(report.to_text(full=True))
    if mismatches:
        print("the target config differs from what the weights expect:")
        print("\n".join(f"  {line}" for line in mismatches))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    main_guard(main)
