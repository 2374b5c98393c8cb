"""Inference over a data loader, gathered across processes, then COCO evaluation.

While predicting, a progress line is logged every ``log_period_s`` seconds, as detectron2's
``inference_on_dataset`` does: images done out of this process' total, seconds per image
(data loading included; the first warm-up batches are left out of the timing) and ETA.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

import torch
from torch import nn

from ..checkpoint import unwrap_model
from ..config import ConfigError
from ..structures.bounding_box import BoxList
from ..utils.comm import all_gather, get_world_size, is_main_process, synchronize
from ..utils.metric_logger import eta_string

if TYPE_CHECKING:  # pycocotools is imported when evaluating, not with the engine
    from ..evaluation.coco_eval import CocoEvaluation

logger = logging.getLogger(__name__)

#: Batches at the start of inference left out of the timing (model warm-up, first decode).
WARMUP_BATCHES = 5


def _num_images(data_loader) -> int:
    """Images this process predicts: its shard of the test set (or the whole loader's dataset);
    0 (unknown) for a plain iterable of batches."""
    sampler = getattr(getattr(data_loader, "batch_sampler", None), "sampler", None)
    try:
        return len(sampler) if sampler is not None else len(data_loader.dataset)
    except (TypeError, AttributeError):
        return 0


class InferenceProgress:
    """Logs ``Predicting name: done/total images, s / image, ETA`` at most every ``log_period_s`` seconds.

    Args:
        name: the dataset, named in each line.
        total_images: images this process will predict.
        num_batches: batches of the loader; the first ``min(WARMUP_BATCHES, num_batches - 1)``
            are left out of the timing.
        log_period_s: seconds between two lines; 0 logs after every batch.
    """

    def __init__(self, name: str, total_images: int, num_batches: int, log_period_s: float = 5.0) -> None:
        self.name = name or "dataset"
        self.total = int(total_images)
        self.warmup = max(0, min(WARMUP_BATCHES, int(num_batches) - 1))
        self.log_period_s = float(log_period_s)
        self.batches = self.images = 0
        self.timed_images = 0
        self.timed_seconds = self.data_seconds = 0.0
        self.start = self._last_log = time.perf_counter()

    def update(self, images: int, seconds: float, data_seconds: float) -> None:
        """Account one batch of ``images`` that took ``seconds`` (``data_seconds`` of them loading)."""
        self.batches += 1
        self.images += int(images)
        if self.batches > self.warmup:
            self.timed_images += int(images)
            self.timed_seconds += seconds
            self.data_seconds += data_seconds
        now = time.perf_counter()
        if now - self._last_log >= self.log_period_s:
            self._last_log = now
            logger.info("%s", self.line())

    def seconds_per_image(self) -> float:
        """Per image since the warm-up (everything so far while still warming up)."""
        if self.timed_images:
            return self.timed_seconds / self.timed_images
        return (time.perf_counter() - self.start) / max(1, self.images)

    def line(self) -> str:
        """The progress line, e.g. ``Predicting val: 40/60 images, 0.0512 s / image (...), ETA 0:00:01``."""
        per_image = self.seconds_per_image()
        data = self.data_seconds / self.timed_images if self.timed_images else float("nan")
        eta = per_image * max(0, self.total - self.images)
        return (f"Predicting {self.name}: {self.images}/{self.total} images, {per_image:.4f} s / image "
                f"(data {data:.4f} s / image), ETA {eta_string(eta)}")

    def summary(self) -> str:
        """The closing line: total time, and per image after the warm-up batches."""
        total = time.perf_counter() - self.start
        return (f"Predicted {self.name}: {self.images} images in {total:.1f} s, "
                f"{self.seconds_per_image():.4f} s / image after {self.warmup} warm-up batches")


@torch.no_grad()
def predict_dataset(model: nn.Module, data_loader, *, name: str = "",
                    log_period_s: float = 5.0) -> Dict[int, BoxList]:
    """Predictions of this process, keyed by image id, in ORIGINAL image pixels (CPU).

    Boxes are scaled from the network input size back to the json's (height,
    width); masks stay as (N, 1, M, M) probabilities, pasted at evaluation.

    Args:
        model: the detector (DDP-wrapped or not); its train / eval mode is restored after.
        data_loader: yields ``(images, targets, infos)``, ``infos`` with ``image_id``, ``height``, ``width``.
        name: the dataset, named in the progress lines.
        log_period_s: seconds between two progress lines (see :class:`InferenceProgress`).
    """
    model = unwrap_model(model)
    was_training = model.training
    model.eval()
    sync = model.device.type == "cuda" if hasattr(model, "device") else False
    progress = InferenceProgress(name, _num_images(data_loader), len(data_loader), log_period_s)
    out: Dict[int, BoxList] = {}
    start = time.perf_counter()
    for images, _, infos in data_loader:
        loaded = time.perf_counter()
        for det, info in zip(model.predict(images), infos):
            out[int(info["image_id"])] = det.to("cpu").resize((int(info["height"]), int(info["width"])))
        if sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        progress.update(len(infos), now - start, loaded - start)
        start = now
    logger.info("%s", progress.summary())
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


@dataclass
class DatasetEvaluation:
    """The evaluation of one dataset: what pycocotools found, and the predictions it scored.

    Attributes:
        name: the dataset's name.
        coco: metrics, per-class AP and precision-recall curves
            (:class:`~maskrcnn.evaluation.coco_eval.CocoEvaluation`).
        dataset: the evaluated COCODataset.
        predictions: image id -> detections at the original size (every image of the dataset).
        paste_rule, mask_threshold: how the masks were pasted for scoring.
    """

    name: str
    coco: CocoEvaluation
    dataset: Any
    predictions: Dict[int, BoxList]
    paste_rule: str = "center"
    mask_threshold: float = 0.5

    @property
    def metrics(self) -> Dict[str, Dict[str, float]]:
        """``{iou_type: {"AP", "AP50", ...}}`` in percent."""
        return self.coco.metrics

    def draw_images(self, num: int, score_threshold: float = 0.5, max_side: int = 800) -> Dict[int, torch.Tensor]:
        """Ground truth | predictions of the dataset's first ``num`` images (the same ones every time).

        Returns:
            image id -> ``(3, H, W)`` uint8 picture (see
            :func:`maskrcnn.evaluation.figures.draw_gt_and_predictions`).
        """
        from ..evaluation.figures import draw_dataset_images

        return draw_dataset_images(self.dataset, self.predictions, num, score_threshold=score_threshold,
                                   paste_rule=self.paste_rule, mask_threshold=self.mask_threshold,
                                   max_side=max_side)


def evaluate_datasets(model: nn.Module, loaders: List[Tuple[str, Any]], output_dir: str, *,
                      paste_rule: str = "center", mask_threshold: float = 0.5,
                      log_period_s: float = 5.0) -> Dict[str, DatasetEvaluation]:
    """Predict and COCO-evaluate each (name, loader); rank 0 writes ``inference/<name>/``.

    Args:
        model: the detector (DDP-wrapped or not); its train / eval mode is restored after.
        loaders: ``(dataset name, test loader)`` pairs, as ``build_test_loaders`` gives.
        output_dir: ``OUTPUT_DIR``; empty: nothing is written.
        paste_rule: ``MODEL.ROI_MASK_HEAD.PASTE_RULE`` (see ``maskrcnn.layers.mask_ops``).
        mask_threshold: ``MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD``: probability from
            which a pasted mask pixel is set, in the masks that are scored.
        log_period_s: seconds between two progress lines while predicting (0: every batch).

    Returns:
        ``{dataset_name: DatasetEvaluation}`` on rank 0, ``{}`` elsewhere.
    """
    from ..evaluation import evaluate_coco_detailed

    check_mask_threshold(mask_threshold)
    results: Dict[str, DatasetEvaluation] = {}
    for name, loader in loaders:
        start = time.time()
        preds = gather_predictions(predict_dataset(model, loader, name=name, log_period_s=log_period_s))
        logger.info("Inference on %s: %d images in %.1f s", name, len(preds), time.time() - start)
        if is_main_process():
            folder = os.path.join(output_dir, "inference", name) if output_dir else None
            if folder:
                os.makedirs(folder, exist_ok=True)
            coco = evaluate_coco_detailed(loader.dataset, preds, output_dir=folder, logger=logger,
                                          paste_rule=paste_rule, mask_threshold=mask_threshold)
            results[name] = DatasetEvaluation(name, coco, loader.dataset, preds, paste_rule, mask_threshold)
        synchronize()
    return results


def evaluate(model: nn.Module, loaders: List[Tuple[str, Any]], output_dir: str, *,
             paste_rule: str = "center", mask_threshold: float = 0.5,
             log_period_s: float = 5.0) -> Dict[str, dict]:
    """:func:`evaluate_datasets`, keeping only the metrics.

    Returns:
        ``{dataset_name: {"bbox": {...}, "segm": {...}}}`` on rank 0, ``{}`` elsewhere.
    """
    evaluations = evaluate_datasets(model, loaders, output_dir, paste_rule=paste_rule,
                                    mask_threshold=mask_threshold, log_period_s=log_period_s)
    return {name: ev.metrics for name, ev in evaluations.items()}
