"""Pictures for TensorBoard: ground truth | predictions of a fixed handful of evaluation images,
and ground truth | top RPN proposals of a training image.

Drawn with the shared :mod:`maskrcnn.utils.visualizer` (torchvision's drawing utilities), with
labels mapped to the dataset's category ids so that a class has the same colour here as in
``tools/visualize_data.py``, ``tools/visualize_results.py`` and the demo. Large images are
scaled down first (``max_side``), so that a TensorBoard event file stays small and the labels,
sized for the drawn image, stay readable.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from ..layers.mask_ops import paste_masks_in_image
from ..structures.bounding_box import BoxList
from torchvision.utils import draw_bounding_boxes

from ..utils.visualizer import (class_color, draw_ground_truth, draw_predictions, rasterize_instance_masks,
                                side_by_side, style_for, to_chw_uint8)

__all__ = ["GT_TITLE", "draw_dataset_images", "draw_gt_and_predictions", "draw_gt_and_proposals", "drawn_size",
           "predictions_title", "proposals_title", "vis_image_indices"]

#: Title of the left panel.
GT_TITLE = "ground truth"


def predictions_title(score_threshold: float) -> str:
    """Title of the right panel (the same for every image, so every picture has the same layout)."""
    return f"predictions, score >= {score_threshold:g}"


def proposals_title(top_k: int) -> str:
    """Title of the right panel of :func:`draw_gt_and_proposals`."""
    return f"top {top_k} RPN proposals"


def vis_image_indices(dataset: Any, num: int) -> List[int]:
    """Indices of the images drawn at every evaluation: the first ``num`` of the dataset.

    A COCO dataset keeps its images sorted by id, so these are the ``num`` smallest image ids,
    the same ones at every evaluation and in every run.
    """
    return list(range(min(max(0, int(num)), len(dataset))))


def drawn_size(height: int, width: int, max_side: int) -> Tuple[int, int]:
    """``(h, w)`` an ``(height, width)`` image is drawn at: scaled so its long side is at most ``max_side``."""
    scale = min(1.0, float(max_side) / max(height, width)) if max_side > 0 else 1.0
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _category_ids(labels: torch.Tensor, to_category_id: Mapping[int, int]) -> torch.Tensor:
    return torch.tensor([to_category_id.get(int(c), int(c)) for c in labels], dtype=torch.long)


def _draw_target(image: torch.Tensor, target: BoxList, class_names: Mapping[int, str],
                 to_category_id: Mapping[int, int]) -> torch.Tensor:
    masks = rasterize_instance_masks(target.get_field("masks"), target.bbox) if target.has_field("masks") else None
    return draw_ground_truth(image, target.bbox, _category_ids(target.get_field("labels"), to_category_id),
                             class_names, masks)


def draw_gt_and_proposals(image: torch.Tensor, target: BoxList, proposals: BoxList, *,
                          class_names: Mapping[int, str], to_category_id: Mapping[int, int],
                          top_k: int = 20) -> torch.Tensor:
    """Ground truth | the ``top_k`` first proposals, side by side (detectron2's ``visualize_training``).

    The proposals are plain outlines of one colour, without labels (twenty labels would hide
    the image), the best drawn last, on top.

    Args:
        image: ``(3, H, W)`` RGB image as the model received it (uint8, or float in 0..255).
        target: its ground truth at ``(H, W)`` (contiguous ``labels``, optional ``masks``).
        proposals: at ``(H, W)``, best first.
        class_names: category id -> name. to_category_id: contiguous label -> category id.
        top_k: how many proposals are drawn.

    Returns:
        ``(3, H', W')`` uint8 tensor.
    """
    canvas = to_chw_uint8(image)
    left = _draw_target(canvas, target.to("cpu"), class_names, to_category_id)
    h, w = canvas.shape[1:]
    boxes = proposals.bbox[:top_k].detach().to("cpu", torch.float32).flip(0)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    right = canvas
    if len(boxes):
        right = draw_bounding_boxes(canvas, boxes, colors=class_color(0), width=style_for(h, w)[1])
    return side_by_side([left, right], [GT_TITLE, proposals_title(top_k)])


def _resize_image(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def draw_gt_and_predictions(image: torch.Tensor, target: BoxList, prediction: BoxList, *,
                            class_names: Mapping[int, str], to_category_id: Mapping[int, int],
                            score_threshold: float = 0.5, paste_rule: str = "center",
                            mask_threshold: float = 0.5, max_side: int = 800,
                            image_name: str = "") -> torch.Tensor:
    """Ground truth | predictions scoring ``>= score_threshold``, side by side, under their titles.

    Args:
        image: ``(3, H, W)`` uint8 RGB at the original size.
        target: ground truth at ``(H, W)``: contiguous ``labels``, optional ``masks``
            (:class:`~maskrcnn.structures.segmentation_mask.InstanceMasks`).
        prediction: detections at ``(H, W)``: ``scores``, contiguous ``labels``, optional ``mask``
            ``(N, 1, M, M)`` probabilities.
        class_names: category id -> name.
        to_category_id: contiguous label -> category id (picks the colour and the name).
        score_threshold: lowest score drawn.
        paste_rule, mask_threshold: how mask probabilities are pasted (as evaluation does).
        max_side: the image is drawn scaled so that its long side is at most this (0: as is).
        image_name: names the image in the log line of an image without detections.

    Returns:
        ``(3, H', W')`` uint8 tensor; its size is that of :func:`side_by_side` of two
        :func:`drawn_size` panels titled :data:`GT_TITLE` and :func:`predictions_title`.
    """
    h, w = int(image.shape[-2]), int(image.shape[-1])
    size = drawn_size(h, w, max_side)
    canvas = _resize_image(image, size)

    left = _draw_target(canvas, target.resize(size), class_names, to_category_id)

    pred = prediction.to("cpu")
    pred = pred[pred.get_field("scores") >= score_threshold].resize(size)
    masks: Optional[torch.Tensor] = None
    if pred.has_field("mask"):
        masks = paste_masks_in_image(pred.get_field("mask"), pred.bbox, size, threshold=mask_threshold,
                                     rule=paste_rule)
    right = draw_predictions(canvas, pred.bbox, _category_ids(pred.get_field("labels"), to_category_id),
                             pred.get_field("scores"),
                             class_names, masks, score_thr=score_threshold, image_name=image_name)
    return side_by_side([left, right], [GT_TITLE, predictions_title(score_threshold)])


def draw_dataset_images(dataset: Any, predictions: Mapping[int, BoxList], num: int, *,
                        score_threshold: float = 0.5, paste_rule: str = "center",
                        mask_threshold: float = 0.5, max_side: int = 800) -> Dict[int, torch.Tensor]:
    """:func:`draw_gt_and_predictions` of the first ``num`` images of ``dataset``.

    Args:
        dataset: a :class:`~maskrcnn.data.datasets.coco.COCODataset` (``load_image``,
            ``get_target``, ``get_img_info``, ``class_names``, ``contiguous_to_category_id``).
        predictions: image id -> detections at the original size (an image without an entry
            is drawn without detections).
        num: how many images (:func:`vis_image_indices`).

    Returns:
        image id -> ``(3, H', W')`` uint8 picture, in dataset order.
    """
    to_id = dict(dataset.contiguous_to_category_id)
    names = {int(cid): str(dataset.class_names[k]) for k, cid in to_id.items()}
    out: Dict[int, torch.Tensor] = {}
    for index in vis_image_indices(dataset, num):
        info = dataset.get_img_info(index)
        image_id = int(info["id"])
        size = (int(info["height"]), int(info["width"]))
        pred = predictions.get(image_id)
        if pred is None:
            pred = BoxList(torch.zeros((0, 4)), size)
            pred.add_field("scores", torch.zeros(0))
            pred.add_field("labels", torch.zeros(0, dtype=torch.long))
        out[image_id] = draw_gt_and_predictions(
            dataset.load_image(index), dataset.get_target(index), pred, class_names=names,
            to_category_id=to_id, score_threshold=score_threshold, paste_rule=paste_rule,
            mask_threshold=mask_threshold, max_side=max_side,
            image_name=f"{dataset.name}: {info['file_name']} (id {image_id})")
    return out
