"""torchvision's ``maskrcnn_resnet50_fpn_v2`` and this project's model built from
``configs/torchvision/maskrcnn_resnet50_fpn_v2.yaml`` compute the same detections from the same
weights.

The v2 model has BatchNorm in its ResNet, its FPN and both heads, two RPN convs and a 4conv1fc box
head. It gets seeded random weights with every BatchNorm's affine parameters and statistics
drawn away from the identity (so a tensor mapped to the wrong layer, or statistics left out,
changes the result), then is made confident as in ``test_torchvision_parity.py``. Its state dict
goes through the torchvision converter, or through ``MODEL.WEIGHT`` as a file; both models run
on the same images, and the final detections must agree as there: labels equal, boxes within
0.01 px, scores within 1e-4, masks pixel for pixel away from the threshold.
"""
from __future__ import annotations

import logging
import os

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn_v2

from maskrcnn.checkpoint.convert import convert_state_dict
from maskrcnn.config import get_cfg
from maskrcnn.data.transforms import ResizeShortestEdge
from maskrcnn.layers.mask_ops import paste_masks_in_image
from maskrcnn.modeling import build_model
from maskrcnn.predictor import Predictor
from peers import HEAD_SCALES, make_confident, smooth_images
from test_torchvision_parity import TIE, _pair

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "configs", "torchvision", "maskrcnn_resnet50_fpn_v2.yaml")
SIZES = [(480, 640), (333, 517)]


@torch.no_grad()
def _randomise_head_norms(model: torch.nn.Module, seed: int) -> None:
    """Every BatchNorm outside the ResNet (make_confident calibrates those): affine and
    statistics drawn near, not at, the identity."""
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d) and not name.startswith("backbone.body"):
            c = m.num_features
            m.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
            m.bias.copy_(0.1 * torch.randn(c, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(1 + 0.5 * torch.rand(c, generator=g))


def _check_masks(ours: torch.Tensor, values: torch.Tensor) -> None:
    """``ours`` (N, H, W) bool against torchvision's pasted probabilities ``values``: every pixel
    whose value is farther than TIE from the 0.5 threshold is the same, and such tie pixels (which
    float rounding decides either way; test_torchvision_parity.py) are at most 3% of any mask of
    200 pixels or more, so that the first check covers nearly all of it."""
    theirs = values > 0.5
    tie = (values - 0.5).abs() <= TIE
    wrong = ((ours != theirs) & ~tie).flatten(1).sum(1)
    assert not wrong.any(), f"pixels away from the threshold differ: {wrong.tolist()}"
    area = theirs.flatten(1).sum(1)
    ties = tie.flatten(1).sum(1)
    large = area >= 200
    assert (ties[large] <= 0.03 * area[large]).all(), (ties[large].tolist(), area[large].tolist())


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    tv = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91).eval()
    _randomise_head_norms(tv, 1)
    # Mask logits scaled less than for v1 (HEAD_SCALES): with the BatchNorms of the mask head they
    # would saturate the sigmoid, and saturated masks paste to exact ties at the threshold.
    tv = make_confident(tv, head_scales={**HEAD_SCALES, "roi_heads.mask_predictor.mask_fcn_logits": 3.0})
    state, report = convert_state_dict(tv.state_dict(), "torchvision")
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu"])
    ours = build_model(cfg).eval()
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return tv, ours, state


@pytest.fixture(scope="module")
def runs(models):
    tv, ours, _ = models
    images = smooth_images(SIZES, seed=5)
    resize = ResizeShortestEdge(800, 1333, "torchvision")
    with torch.no_grad():
        tv_dets = tv([im.float() / 255 for im in images])
        our_dets = ours.predict([resize(im)[0] for im in images])
    return images, tv_dets, our_dets


def test_detections_are_confident(runs):
    # Without a full, varied set of detections the comparison below would prove little.
    for d in runs[1]:
        assert len(d["scores"]) == 100 and len(d["labels"].unique()) >= 20
        assert d["scores"].max() > 0.4


def test_final_detections_and_masks_match(runs):
    images, tv_dets, our_dets = runs
    for im, d_tv, d in zip(images, tv_dets, our_dets):
        h, w = im.shape[1:]
        d = d.resize((h, w))
        pairs = _pair(d.bbox, d.get_field("scores"), d.get_field("labels"), d_tv)
        masks = paste_masks_in_image(d.get_field("mask"), d.bbox, (h, w), rule="torchvision")
        _check_masks(masks[pairs], d_tv["masks"][:, 0])
        assert (d_tv["masks"][:, 0] > 0.5).flatten(1).any(1).sum() > 50


def test_a_v2_file_loads_through_model_weight(models, runs, tmp_path):
    """torchvision's state dict as a file (what ``torchvision://maskrcnn_resnet50_fpn_v2`` resolves
    to), converted on load by the Predictor under the v2 config."""
    tv, _, _ = models
    path = tmp_path / "maskrcnn_resnet50_fpn_v2_coco.pth"
    torch.save(tv.state_dict(), path)
    predictor = Predictor.from_config(CONFIG, str(path), opts=["MODEL.DEVICE", "cpu"])
    image = runs[0][0]
    with torch.no_grad():
        d_tv = tv([image.float() / 255])[0]  # alone: in a batch, padding changes what the FPN's BN sees
    out = predictor(image.permute(1, 2, 0).numpy())
    pairs = _pair(out["boxes"], out["scores"], out["labels"], d_tv)
    _check_masks(out["masks"][pairs], d_tv["masks"][:, 0])


def test_v2_weights_under_the_v1_config_are_reported(models, tmp_path, caplog):
    """Under the v1 config, v2 weights do not fit (its FPN has no BN, its box head two fc layers):
    the load warns, naming what is left uninitialised and the config the weights are for."""
    tv, _, _ = models
    path = tmp_path / "v2.pth"
    torch.save(tv.state_dict(), path)
    v1 = os.path.join(ROOT, "configs", "torchvision", "maskrcnn_resnet50_fpn.yaml")
    with caplog.at_level(logging.WARNING):
        Predictor.from_config(v1, str(path), opts=["MODEL.DEVICE", "cpu"])
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    for words in ("left uninitialised in the model", "roi_heads.box.feature_extractor.fc7",
                  "MODEL.FPN.NORM: FrozenBN", "MODEL.RPN.NUM_CONVS: 2", "maskrcnn_resnet50_fpn_v2.yaml"):
        assert words in text, words
