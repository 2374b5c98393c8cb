"""Shared fixtures: a tiny model config and synthetic targets."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from maskrcnn.config import get_cfg  # noqa: E402
from maskrcnn.structures.bounding_box import BoxList  # noqa: E402
from maskrcnn.structures.segmentation_mask import InstanceMasks  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def tiny_cfg(mask_on: bool = True):
    """A small, fast model (about 1M parameters) for CPU tests."""
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = mask_on
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 4
    cfg.MODEL.BACKBONE.CONV_BODY = "R-18-FPN"
    cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 0
    cfg.MODEL.BACKBONE.OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 16
    cfg.MODEL.GROUP_NORM.NUM_GROUPS = 4
    cfg.MODEL.RPN.ANCHOR_SIZES = (16, 32, 64, 128, 256)
    cfg.MODEL.RPN.PRE_NMS_TOP_N_TRAIN = 300
    cfg.MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN = 100
    cfg.MODEL.RPN.PRE_NMS_TOP_N_TEST = 300
    cfg.MODEL.RPN.FPN_POST_NMS_TOP_N_TEST = 100
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = 64
    cfg.MODEL.ROI_MASK_HEAD.CONV_LAYERS = (32, 32)
    cfg.INPUT.TO_BGR255 = False
    cfg.INPUT.PIXEL_MEAN = [0.5, 0.5, 0.5]
    cfg.INPUT.PIXEL_STD = [0.25, 0.25, 0.25]
    return cfg


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
