"""COCO box / mask evaluation of gathered predictions with pycocotools.

Predictions must be given at the ORIGINAL image size of the COCO json (boxes in
original pixels, ``BoxList.size == (height, width)`` of the json entry). A
mismatch raises a ``ValueError`` instead of silently scoring mAP 0 because
predictions and ground truth live at different scales.

Metrics are in percent; values pycocotools cannot compute (``-1``, e.g. no
small objects in the ground truth) are reported as ``float('nan')``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from maskrcnn.layers.mask_ops import masks_to_rle
from maskrcnn.structures.bounding_box import BoxList

if TYPE_CHECKING:  # imported where evaluation runs: training and inference need no pycocotools
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

__all__ = ["CocoEvaluation", "evaluate_coco", "evaluate_coco_detailed", "per_class_ap", "precision_recall_curve",
           "predictions_to_coco_results", "METRIC_NAMES"]

#: Keys of each iou type's metrics, in the order of ``COCOeval.stats[:6]``.
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_IOU_TYPES = ("bbox", "segm")


def _check_sizes(coco: COCO, predictions: Mapping[int, BoxList]) -> None:
    """Raise ``ValueError`` if a prediction's image is unknown or not at the json's size."""
    for image_id, boxlist in predictions.items():
        if int(image_id) not in coco.imgs:
            raise ValueError(f"prediction for image id {image_id}, which is not in the ground truth")
        info = coco.imgs[int(image_id)]
        expected = (int(info["height"]), int(info["width"]))
        if tuple(boxlist.size) != expected:
            raise ValueError(
                f"image id {image_id}: prediction BoxList.size (h, w) = {tuple(boxlist.size)} but "
                f"the ground truth image is {expected}; resize predictions to the original image "
                f"size (boxlist.resize((height, width))) before evaluation")


def predictions_to_coco_results(predictions: Mapping[int, BoxList],
                                contiguous_to_category_id: Mapping[int, int],
                                paste_rule: str = "center", mask_threshold: float = 0.5) -> List[Dict[str, Any]]:
    """Convert per-image BoxLists to COCO result dicts.

    Args:
        predictions: ``image_id -> BoxList`` at original image size with fields
            ``"scores"`` ``(N,)``, ``"labels"`` ``(N,)`` contiguous and optionally
            ``"mask"`` ``(N, 1, M, M)`` probabilities.
        contiguous_to_category_id: contiguous label -> COCO category id.
        paste_rule: how masks are pasted (``MODEL.ROI_MASK_HEAD.PASTE_RULE``; see
            ``maskrcnn.layers.mask_ops``).
        mask_threshold: probability from which a pasted mask pixel is set
            (``MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD``, >= 0.5).

    Returns:
        One dict per detection: ``image_id``, ``category_id``, ``bbox`` (xywh
        floats), ``score`` and, when the BoxList has masks, ``segmentation`` (RLE).
    """
    results: List[Dict[str, Any]] = []
    for image_id in sorted(predictions, key=int):
        boxlist = predictions[image_id]
        if len(boxlist) == 0:
            continue
        boxes = boxlist.bbox.detach().cpu().double()
        xywh = _xyxy_to_xywh(boxes).tolist()
        scores = boxlist.get_field("scores").detach().cpu().tolist()
        labels = boxlist.get_field("labels").detach().cpu().tolist()
        rles: Optional[List[Dict[str, Any]]] = None
        if boxlist.has_field("mask"):
            rles = masks_to_rle(boxlist.get_field("mask").detach(), boxes, boxlist.size,
                                threshold=mask_threshold, rule=paste_rule)
        for k, (box, score, label) in enumerate(zip(xywh, scores, labels)):
            if int(label) not in contiguous_to_category_id:
                raise ValueError(f"image id {image_id}: label {label} has no COCO category id")
            res = {"image_id": int(image_id), "category_id": int(contiguous_to_category_id[int(label)]),
                   "bbox": [float(v) for v in box], "score": float(score)}
            if rles is not None:
                res["segmentation"] = rles[k]
            results.append(res)
    return results


def _xyxy_to_xywh(boxes: Any) -> Any:
    """``(N, 4)`` xyxy tensor -> ``(N, 4)`` xywh tensor."""
    out = boxes.clone()
    out[:, 2:] = boxes[:, 2:] - boxes[:, :2]
    return out


def _load_results(coco_gt: COCO, results: List[Dict[str, Any]], iou_type: str) -> COCO:
    """COCO object of the results; an empty one (all images, no annotations) if none."""
    if iou_type == "segm":  # area and size ranges from the mask, not the box
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    else:
        results = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(copy.deepcopy(results))
    from pycocotools.coco import COCO

    coco_dt = COCO()  # loadRes asserts on an empty list
    coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                       "categories": copy.deepcopy(coco_gt.dataset["categories"]), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt.createIndex()
    return coco_dt


def _run_cocoeval(coco_gt: COCO, coco_dt: COCO, iou_type: str, logger: logging.Logger) -> COCOeval:
    """evaluate / accumulate / summarize, with pycocotools' printing sent to ``logger``."""
    from pycocotools.cocoeval import COCOeval

    coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco_eval.evaluate()
        coco_eval.accumulate()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco_eval.summarize()
    logger.info("COCO %s results:\n%s", iou_type, buffer.getvalue().rstrip())
    return coco_eval


def _to_percent(value: float) -> float:
    value = float(value)
    return float("nan") if value < 0 or not math.isfinite(value) else 100.0 * value


def per_class_ap(coco_eval: COCOeval, class_names: Sequence[str]) -> Dict[str, float]:
    """AP (IoU 0.50:0.95, all areas, maxDets 100) per class, in percent.

    Args:
        coco_eval: an accumulated ``COCOeval``; its ``params.catIds`` are sorted, so
            the k-th category is contiguous class ``k + 1``.
        class_names: ``class_names[0]`` is background, ``class_names[k]`` the name of
            contiguous class ``k``.

    Returns:
        ``{class name: AP%}``; ``nan`` for classes without ground truth.
    """
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M)
    cat_ids = list(coco_eval.params.catIds)
    if len(class_names) - 1 != len(cat_ids) or precision.shape[2] != len(cat_ids):
        raise ValueError(f"{len(class_names) - 1} class names for {len(cat_ids)} categories")
    out: Dict[str, float] = {}
    for k in range(len(cat_ids)):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[str(class_names[k + 1])] = float(np.mean(p)) * 100.0 if p.size else float("nan")
    return out


def precision_recall_curve(coco_eval: COCOeval) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The precision-recall curve whose mean is the AP: IoU 0.50:0.95, all areas, maxDets 100.

    pycocotools samples precision at 101 recall levels 0, 0.01, ..., 1 (interpolated: the best
    precision at that recall or beyond; 0 beyond the highest recall reached). At each level the
    precision is averaged over the 10 IoU thresholds and over the classes that have ground
    truth, so the mean of the curve is exactly ``stats[0]``, the AP.

    Args:
        coco_eval: an accumulated ``COCOeval``.

    Returns:
        ``(recall (R,), precision (R,))`` float arrays in 0..1 with R = 101, or None when no
        class has ground truth.
    """
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # (T, R, K)
    valid = precision > -1  # -1: a class without ground truth
    if not valid.any():
        return None
    counts = valid.sum(axis=(0, 2))
    curve = np.where(valid, precision, 0.0).sum(axis=(0, 2)) / np.maximum(counts, 1)
    return np.asarray(coco_eval.params.recThrs, dtype=np.float64), curve.astype(np.float64)


def format_per_class_table(aps: Mapping[str, float], columns: int = 3) -> str:
    """Readable text table of ``{class: AP%}``, ``columns`` (class, AP) pairs per row."""
    items = list(aps.items())
    if not items:
        return "(no classes)"
    width = max(5, max(len(name) for name, _ in items))
    cells = [f"{name:<{width}} | {ap:6.2f}" for name, ap in items]
    header = " | ".join([f"{'class':<{width}} | {'AP':>6}"] * min(columns, len(cells)))
    rows = [" | ".join(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    return "\n".join([header, "-" * len(header)] + rows)


@dataclass
class CocoEvaluation:
    """What one COCO evaluation of a dataset found, per iou type (``"bbox"``, ``"segm"``).

    Attributes:
        metrics: ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}`` in percent, ``nan``
            where not computable (what :func:`evaluate_coco` returns).
        per_class_ap: ``{iou_type: {class name: AP%}}`` (IoU 0.50:0.95), ``nan`` for classes
            without ground truth.
        precision_recall: ``{iou_type: (recall (101,), precision (101,))}``, see
            :func:`precision_recall_curve`; absent when no class has ground truth.
    """

    metrics: Dict[str, Dict[str, float]] = field(default_factory=dict)
    per_class_ap: Dict[str, Dict[str, float]] = field(default_factory=dict)
    precision_recall: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def evaluate_coco(dataset: Any, predictions: Mapping[int, BoxList], output_dir: Optional[str] = None,
                  iou_types: Sequence[str] = _IOU_TYPES,
                  logger: Optional[logging.Logger] = None,
                  paste_rule: str = "center", mask_threshold: float = 0.5) -> Dict[str, Dict[str, float]]:
    """Evaluate predictions against ``dataset.coco`` with pycocotools.

    Args:
        dataset: object with ``.coco`` (ground-truth ``COCO``), ``.contiguous_to_category_id``,
            ``.class_names`` and ``.name``.
        predictions: ``image_id -> BoxList`` at the original image size (see module doc),
            fields ``"scores"``, ``"labels"`` and optionally ``"mask"`` ``(N, 1, M, M)``.
            Every ground-truth image is evaluated; images without an entry count as
            images without detections.
        output_dir: if given, ``coco_instances_results.json`` and ``metrics.json`` are
            written there.
        iou_types: subset of ``("bbox", "segm")``; ``"segm"`` is skipped when no
            prediction has masks.
        logger: where pycocotools' summaries and the per-class table go.
        paste_rule: how masks are pasted (``MODEL.ROI_MASK_HEAD.PASTE_RULE``; see
            ``maskrcnn.layers.mask_ops``).
        mask_threshold: probability from which a pasted mask pixel is set
            (``MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD``, >= 0.5).

    Returns:
        ``{iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl"}}`` in percent,
        ``nan`` where not computable. :func:`evaluate_coco_detailed` also gives the per-class
        AP and the precision-recall curves.

    Raises:
        ValueError: a prediction is not at its ground-truth image size, refers to an
            unknown image, or has a label without a category id.
    """
    return evaluate_coco_detailed(dataset, predictions, output_dir, iou_types, logger, paste_rule,
                                  mask_threshold).metrics


def evaluate_coco_detailed(dataset: Any, predictions: Mapping[int, BoxList], output_dir: Optional[str] = None,
                           iou_types: Sequence[str] = _IOU_TYPES, logger: Optional[logging.Logger] = None,
                           paste_rule: str = "center", mask_threshold: float = 0.5) -> CocoEvaluation:
    """:func:`evaluate_coco` (same arguments, same files and logs), with everything it computed.

    Returns:
        A :class:`CocoEvaluation`: the metrics, the per-class AP and the precision-recall curve
        of each iou type.
    """
    logger = logger or logging.getLogger(__name__)
    for iou_type in iou_types:
        if iou_type not in _IOU_TYPES:
            raise ValueError(f"unsupported iou type {iou_type!r}; expected one of {_IOU_TYPES}")
    coco_gt: COCO = dataset.coco
    _check_sizes(coco_gt, predictions)
    missing = len(set(coco_gt.imgs) - {int(i) for i in predictions})
    if missing:
        logger.warning("%s: %d of %d images have no predictions entry", dataset.name, missing,
                       len(coco_gt.imgs))
    results = predictions_to_coco_results(predictions, dataset.contiguous_to_category_id, paste_rule,
                                          mask_threshold)
    logger.info("%s: %d detections on %d images", dataset.name, len(results), len(predictions))
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "coco_instances_results.json"), "w") as f:
            json.dump(results, f)
    has_masks = any(b.has_field("mask") for b in predictions.values())
    out = CocoEvaluation()
    for iou_type in iou_types:
        if iou_type == "segm" and not has_masks:
            logger.info("%s: no predicted masks, skipping segm evaluation", dataset.name)
            continue
        type_results = [r for r in results if iou_type == "bbox" or "segmentation" in r]
        coco_eval = _run_cocoeval(coco_gt, _load_results(coco_gt, type_results, iou_type),
                                  iou_type, logger)
        out.metrics[iou_type] = {k: _to_percent(v) for k, v in zip(METRIC_NAMES, coco_eval.stats[:6])}
        out.per_class_ap[iou_type] = per_class_ap(coco_eval, dataset.class_names)
        curve = precision_recall_curve(coco_eval)
        if curve is not None:
            out.precision_recall[iou_type] = curve
        table = format_per_class_table(out.per_class_ap[iou_type])
        logger.info("%s per-class %s AP:\n%s", dataset.name, iou_type, table)
    if output_dir:
        # Strict JSON: a metric that cannot be computed (no ground truth of that size) is null.
        safe = {t: {k: (v if math.isfinite(v) else None) for k, v in m.items()} for t, m in out.metrics.items()}
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            json.dump(safe, f, indent=2, allow_nan=False)
    return out
