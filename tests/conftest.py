"""Shared helpers: a tiny model config (as a CfgNode or a YAML file) and synthetic targets."""
import copy
import os
import sys

import pytest
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from maskrcnn.config import get_cfg  # noqa: E402
from maskrcnn.structures.bounding_box import BoxList  # noqa: E402
from maskrcnn.structures.segmentation_mask import InstanceMasks  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


# The tiny model (about 1M parameters), as config keys: one source for tiny_cfg() and the YAML
# files of the tool tests.
TINY_MODEL = {
    "BACKBONE": {"CONV_BODY": "R-18-FPN", "FREEZE_CONV_BODY_AT": 0, "OUT_CHANNELS": 32},
    "RESNETS": {"NORM": "GN", "STEM_OUT_CHANNELS": 16, "RES2_OUT_CHANNELS": 16},
    "GROUP_NORM": {"NUM_GROUPS": 4},
    "RPN": {"ANCHOR_SIZES": "(16, 32, 64, 128, 256)", "PRE_NMS_TOP_N_TRAIN": 300,
            "FPN_POST_NMS_TOP_N_TRAIN": 100, "PRE_NMS_TOP_N_TEST": 300, "FPN_POST_NMS_TOP_N_TEST": 100},
    "ROI_HEADS": {"BATCH_SIZE_PER_IMAGE": 64},
    "ROI_BOX_HEAD": {"MLP_HEAD_DIM": 64},
    "ROI_MASK_HEAD": {"CONV_LAYERS": [32, 32]},
}
# Overrides of the tiny model for GroupNorm ROI heads and a 2-conv conv-fc box head.
GN_HEADS = ["MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", "FPNXconv1fcFeatureExtractor", "MODEL.ROI_BOX_HEAD.USE_GN", True,
            "MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS", 2, "MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM", 16,
            "MODEL.ROI_MASK_HEAD.USE_GN", True]
TINY_PIXELS = {"TO_BGR255": False, "PIXEL_MEAN": [0.5, 0.5, 0.5], "PIXEL_STD": [0.25, 0.25, 0.25]}


def tiny_cfg(mask_on: bool = True):
    """A small, fast model (about 1M parameters) for CPU tests."""
    cfg = get_cfg()
    cfg.merge_from_other_cfg({"MODEL": dict(copy.deepcopy(TINY_MODEL), DEVICE="cpu", MASK_ON=mask_on),
                              "INPUT": copy.deepcopy(TINY_PIXELS)})
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 4
    return cfg


def write_tiny_config(path, catalog, train, test, output_dir, mask_on=True, **solver):
    """Write a training config of the tiny model, 96-160 px images, to ``path`` and return it.

    Args:
        path: the YAML file to write (its folder is created).
        catalog: ``{name: (ann_file, img_dir)}`` (``DATASETS.CATALOG``).
        train, test: dataset names (``DATASETS.TRAIN`` / ``TEST``).
        output_dir: ``OUTPUT_DIR``.
        mask_on: Mask R-CNN (True) or Faster R-CNN.
        solver: ``SOLVER`` overrides of the 2-iteration default (e.g. ``MAX_ITER=4``).
    """
    cfg = {
        "MODEL": dict(copy.deepcopy(TINY_MODEL), DEVICE="cpu", MASK_ON=mask_on),
        "INPUT": dict(MIN_SIZE_TRAIN=[96], MAX_SIZE_TRAIN=160, MIN_SIZE_TEST=96, MAX_SIZE_TEST=160,
                      **copy.deepcopy(TINY_PIXELS)),
        "DATASETS": {"CATALOG": {n: {"ANN_FILE": str(a), "IMG_DIR": str(d)} for n, (a, d) in catalog.items()},
                     "TRAIN": list(train), "TEST": list(test)},
        "DATALOADER": {"NUM_WORKERS": 0},
        "SOLVER": {"BASE_LR": 0.01, "IMS_PER_BATCH": 2, "MAX_ITER": 2, "STEPS": [1], "WARMUP_ITERS": 1,
                   "CHECKPOINT_PERIOD": 100, "LOG_PERIOD": 1, **solver},
        "TEST": {"IMS_PER_BATCH": 2},
        "OUTPUT_DIR": str(output_dir),
        "SEED": 0,
    }
    os.makedirs(os.path.dirname(os.path.abspath(str(path))), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return str(path)


def square_target(size, boxes, labels):
    """BoxList at ``size`` (h, w) whose masks are the boxes themselves, as polygons."""
    polys = [[[x1, y1, x2, y1, x2, y2, x1, y2]] for x1, y1, x2, y2 in boxes]
    t = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), size)
    t.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    t.add_field("masks", InstanceMasks(polys, size))
    return t


@pytest.fixture
def cfg_tiny():
    return tiny_cfg()


def write_box_images(img_dir, boxes_per_image, height, width):
    """One grey ``{image id}.png`` of ``height x width`` per entry of ``boxes_per_image``
    (image id -> ``[(category id, (x, y, w, h)), ...]``), each box filled red for category 3
    and blue otherwise."""
    import numpy as np
    from PIL import Image

    os.makedirs(img_dir, exist_ok=True)
    for img_id, objects in boxes_per_image.items():
        pixels = np.full((height, width, 3), 100, np.uint8)
        for cat, (x, y, w, h) in objects:
            pixels[y:y + h, x:x + w] = (230, 40, 40) if cat == 3 else (40, 40, 230)
        Image.fromarray(pixels).save(os.path.join(img_dir, f"{img_id}.png"))
