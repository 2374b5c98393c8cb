"""Evaluation of detection / segmentation predictions."""
from maskrcnn.evaluation.coco_eval import (CocoEvaluation, evaluate_coco, evaluate_coco_detailed, per_class_ap,
                                           precision_recall_curve)

__all__ = ["CocoEvaluation", "evaluate_coco", "evaluate_coco_detailed", "per_class_ap", "precision_recall_curve"]
