"""Evaluation of detection / segmentation predictions."""
from maskrcnn.evaluation.coco_eval import evaluate_coco, per_class_ap

__all__ = ["evaluate_coco", "per_class_ap"]
