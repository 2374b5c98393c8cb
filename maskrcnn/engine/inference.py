"""Inference over a data loader, gathered across processes, then COCO evaluation."""
from __future__ import annotations

import logging
import os
import time
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..config import ConfigError
from ..structures.bounding_box import BoxList
from ..utils.comm import all_gather, get_world_size, is_main_process, synchronize
from ..checkpoint import unwrap_model

logger = logging.getLogger(__name__)


@torch.no_grad()
def predict_dataset(model: nn.Module, data_loader) -> Dict[int, BoxList]:
    """Predictions of this process, keyed by image id, in ORIGINAL image pixels (CPU).

    Boxes are scaled from the network input size back to the json's (height,
    width); masks stay as (N, 1, M, M) probabilities, pasted at evaluation.
    """
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    out: Dict[int, BoxList] = {}
    for images, _, infos in data_loader:
        for det, info in zip(model.predict(images), infos):
            out[int(info["image_id"])] = det.to("cpu").resize((int(info["height"]), int(info["width"])))
    model.train(was_training)
    return out


def gather_predictions(local: Dict[int, BoxList]) -> Dict[int, BoxList]:
    """Merge the predictions of every process (on every process; rank 0 uses them)."""
    if get_world_size() == 1:
        return local
    merged: Dict[int, BoxList] = {}
    for part in all_gather(local):
        merged.update(part)
    return merged


def check_mask_threshold(mask_threshold: float) -> None:
    """Pasted masks are computed in a box-local window, valid for thresholds >= 0.5."""
    if not mask_threshold >= 0.5:
        raise ConfigError(f"MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD is {mask_threshold}: it must be "
                         ">= 0.5 (masks are pasted inside their box, see maskrcnn.layers.mask_ops)")


def evaluate(model: nn.Module, loaders: List[Tuple[str, object]], output_dir: str, *,
             paste_rule: str = "center", mask_threshold: float = 0.5) -> Dict[str, dict]:
    """Predict and COCO-evaluate each (name, loader); rank 0 writes ``inference/<name>/``.

    Args:
        model: the detector (DDP-wrapped or not); its train / eval mode is restored after.
        loaders: ``(dataset name, test loader)`` pairs, as ``build_test_loaders`` gives.
        output_dir: ``OUTPUT_DIR``; empty: nothing is written.
        paste_rule: ``MODEL.ROI_MASK_HEAD.PASTE_RULE`` (see ``maskrcnn.layers.mask_ops``).
        mask_threshold: ``MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD``: probability from
            which a pasted mask pixel is set, in the masks that are scored.

    Returns:
        ``{dataset_name: {"bbox": {...}, "segm": {...}}}`` on rank 0, ``{}`` elsewhere.
    """
    from ..evaluation import evaluate_coco

    check_mask_threshold(mask_threshold)
    results = {}
    for name, loader in loaders:
        start = time.time()
        preds = gather_predictions(predict_dataset(model, loader))
        logger.info("Inference on %s: %d images in %.1f s", name, len(preds), time.time() - start)
        if is_main_process():
            folder = os.path.join(output_dir, "inference", name) if output_dir else None
            if folder:
                os.makedirs(folder, exist_ok=True)
            results[name] = evaluate_coco(loader.dataset, preds, output_dir=folder, logger=logger,
                                          paste_rule=paste_rule, mask_threshold=mask_threshold)
        synchronize()
    return results
