"""Data pipeline: datasets, transforms, samplers, collation and loaders.

Images leave the pipeline as ``(3, H, W)`` uint8 RGB tensors, already resized;
normalisation happens inside the model.
"""
from maskrcnn.data.build import build_dataset, build_test_loaders, build_train_loader
from maskrcnn.data.collate import BatchCollator
from maskrcnn.data.datasets import COCODataset, ensure_shapes_dataset, resolve_dataset
from maskrcnn.data.image_io import read_image_rgb
from maskrcnn.data.transforms import build_transforms, get_resize_size

__all__ = ["build_dataset", "build_train_loader", "build_test_loaders", "BatchCollator",
           "COCODataset", "ensure_shapes_dataset", "resolve_dataset", "read_image_rgb",
           "build_transforms", "get_resize_size"]
