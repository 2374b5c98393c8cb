"""Dataset names -> annotation file and image directory.

Sources, in order: user entries ``cfg.DATASETS.CATALOG.<name>`` (keys
``ANN_FILE`` and ``IMG_DIR``), then the built-in COCO splits (under
``cfg.DATASETS.DATA_DIR``, laid out like maskrcnn-benchmark) and the synthetic
``shapes_train`` / ``shapes_val`` splits (generated under ``DATA_DIR`` on first use).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from maskrcnn.data.datasets.shapes import ensure_shapes_dataset
from maskrcnn.data.image_io import ImageFileNotFoundError
from maskrcnn.utils.errors import DataError

__all__ = ["resolve_dataset", "known_datasets", "UnknownDatasetError", "BUILTIN_COCO",
           "SHAPES_SPLITS", "SHAPES_TRAIN_IMAGES", "SHAPES_VAL_IMAGES",
           "SHAPES_TRAIN_SEED", "SHAPES_VAL_SEED"]

DEFAULT_DATA_DIR = "datasets"

# name -> (annotation file, image directory), relative to DATA_DIR.
BUILTIN_COCO: Dict[str, tuple] = {
    "coco_2017_train": ("coco/annotations/instances_train2017.json", "coco/train2017"),
    "coco_2017_val": ("coco/annotations/instances_val2017.json", "coco/val2017"),
    "coco_2014_train": ("coco/annotations/instances_train2014.json", "coco/train2014"),
    "coco_2014_val": ("coco/annotations/instances_val2014.json", "coco/val2014"),
    "coco_2014_minival": ("coco/annotations/instances_minival2014.json", "coco/val2014"),
    "coco_2014_valminusminival": ("coco/annotations/instances_valminusminival2014.json",
                                  "coco/val2014"),
}

SHAPES_TRAIN_IMAGES = 600
SHAPES_VAL_IMAGES = 60
SHAPES_TRAIN_SEED = 20240601
SHAPES_VAL_SEED = 20240602
# name -> (split, number of images, seed)
SHAPES_SPLITS: Dict[str, tuple] = {
    "shapes_train": ("train", SHAPES_TRAIN_IMAGES, SHAPES_TRAIN_SEED),
    "shapes_val": ("val", SHAPES_VAL_IMAGES, SHAPES_VAL_SEED),
}


class UnknownDatasetError(DataError, KeyError):
    """A dataset name that is neither a CATALOG entry nor built in."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def _get(node: Any, key: str, default: Any = None) -> Any:
    """``node[key]`` / ``node.key`` for dict-like or attribute-style config nodes."""
    if node is None:
        return default
    if hasattr(node, "get") and callable(node.get):
        return node.get(key, default)
    return getattr(node, key, default)


def _catalog_names(cfg_datasets: Any) -> List[str]:
    catalog = _get(cfg_datasets, "CATALOG")
    if catalog is None:
        return []
    keys = catalog.keys() if hasattr(catalog, "keys") else vars(catalog).keys()
    return sorted(str(k) for k in keys)


def known_datasets(cfg_datasets: Any = None) -> List[str]:
    """All resolvable names: CATALOG entries plus built-ins."""
    return sorted(set(_catalog_names(cfg_datasets)) | set(BUILTIN_COCO) | set(SHAPES_SPLITS))


def _data_dir(cfg_datasets: Any) -> str:
    return os.path.abspath(os.path.expanduser(str(_get(cfg_datasets, "DATA_DIR") or DEFAULT_DATA_DIR)))


def _user_entry(name: str, entry: Any) -> Dict[str, str]:
    ann_file, img_dir = _get(entry, "ANN_FILE"), _get(entry, "IMG_DIR")
    if not ann_file or not img_dir:
        raise ValueError(f"DATASETS.CATALOG.{name} needs both ANN_FILE and IMG_DIR, got {entry!r}")
    return {"ann_file": os.path.abspath(os.path.expanduser(str(ann_file))),
            "img_dir": os.path.abspath(os.path.expanduser(str(img_dir))), "kind": "coco"}


def _unknown(name: str, cfg_datasets: Any) -> UnknownDatasetError:
    return UnknownDatasetError(
        f"Unknown dataset {name!r}. Known datasets: {', '.join(known_datasets(cfg_datasets))}.\n"
        "To use your own COCO-format dataset, add a catalog entry to your YAML config:\n"
        "  DATASETS:\n"
        "    CATALOG:\n"
        f"      {name}:\n"
        "        ANN_FILE: path/to/instances.json\n"
        "        IMG_DIR: path/to/images\n"
        f"    TRAIN: (\"{name}\",)\n"
        f"or set DATASETS.CATALOG.{name}.ANN_FILE and DATASETS.CATALOG.{name}.IMG_DIR on the "
        "command line. Relative paths are resolved against the current directory.")


def resolve_dataset(name: str, cfg_datasets: Any) -> Dict[str, str]:
    """Find the files of dataset ``name``.

    Args:
        name: dataset name, e.g. ``"coco_2017_val"``, ``"shapes_train"`` or a CATALOG key.
        cfg_datasets: the ``cfg.DATASETS`` node (reads ``CATALOG`` and ``DATA_DIR``).

    Returns:
        ``{"ann_file": abs path, "img_dir": abs path, "kind": "coco" | "shapes"}``.

    Raises:
        UnknownDatasetError: (a KeyError) the name is not known.
        ImageFileNotFoundError: a built-in COCO split's annotation file is missing.
    """
    entry: Optional[Any] = _get(_get(cfg_datasets, "CATALOG"), name)
    if entry is not None:
        return _user_entry(name, entry)
    data_dir = _data_dir(cfg_datasets)
    if name in BUILTIN_COCO:
        ann_rel, img_rel = BUILTIN_COCO[name]
        ann_file = os.path.join(data_dir, ann_rel)
        if not os.path.isfile(ann_file):
            raise ImageFileNotFoundError(
                f"dataset {name!r}: annotation file not found: {ann_file}. Set DATASETS.DATA_DIR "
                f"to the directory holding coco/, or add a DATASETS.CATALOG.{name} entry.")
        return {"ann_file": ann_file, "img_dir": os.path.join(data_dir, img_rel), "kind": "coco"}
    if name in SHAPES_SPLITS:
        split, num_images, seed = SHAPES_SPLITS[name]
        ann_file, img_dir = ensure_shapes_dataset(data_dir, split, num_images, seed)
        return {"ann_file": ann_file, "img_dir": img_dir, "kind": "shapes"}
    raise _unknown(name, cfg_datasets)
