"""Datasets: COCO-format loader, synthetic shapes, name catalog."""
from maskrcnn.data.datasets.catalog import UnknownDatasetError, known_datasets, resolve_dataset
from maskrcnn.data.datasets.check import CHECK_LEVELS, check_dataset
from maskrcnn.data.datasets.coco import COCODataset, MissingMasksError, load_coco_json
from maskrcnn.data.datasets.report import DatasetError, DatasetReport
from maskrcnn.data.datasets.shapes import ensure_shapes_dataset

__all__ = ["COCODataset", "load_coco_json", "ensure_shapes_dataset", "resolve_dataset",
           "known_datasets", "UnknownDatasetError", "check_dataset", "CHECK_LEVELS", "DatasetError",
           "DatasetReport", "MissingMasksError"]
