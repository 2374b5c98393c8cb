"""Predictor: explicit arguments (model, transform, paste rule, mask threshold, categories);
only ``from_config`` reads a config, and the class count comes from the checkpoint."""
import pytest
import torch

from conftest import tiny_cfg
from maskrcnn.config import ConfigError
from maskrcnn.data.transforms import ResizeShortestEdge
from maskrcnn.modeling import build_model
from maskrcnn.predictor import Predictor

CATEGORIES = [{"id": 11, "name": "a"}, {"id": 22, "name": "b"}, {"id": 33, "name": "c"}]


def _confident_model():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    with torch.no_grad():
        model.roi_heads.box.predictor.cls_score.bias[2] = 10.0  # everything is class 2
    return model


def _image():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (90, 120, 3), dtype=torch.uint8, generator=g).numpy()


def test_explicit_arguments_and_outputs():
    p = Predictor(_confident_model(), transform=ResizeShortestEdge(64, 100), categories=CATEGORIES)
    assert not p.model.training and not hasattr(p, "cfg")
    out = p(_image())
    n = len(out["boxes"])
    assert n > 0 and out["masks"].shape == (n, 90, 120) and out["masks"].dtype == torch.bool
    assert (out["labels"] == 22).all()  # contiguous 2 -> category id 22
    assert p.label_name(22) == "b" and p.label_name(99) == "99"
    assert (out["boxes"][:, 2] <= 120).all() and (out["boxes"][:, 3] <= 90).all()  # original pixels
    high = Predictor(p.model, transform=ResizeShortestEdge(64, 100), mask_threshold=0.6)(_image())
    # the threshold reaches the pasted masks: fewer pixels, all of them set at 0.5 too
    assert 0 < high["masks"].sum() < out["masks"].sum() and not (high["masks"] & ~out["masks"]).any()
    with pytest.raises(ValueError, match="POSTPROCESS_MASKS_THRESHOLD"):
        Predictor(p.model, transform=ResizeShortestEdge(64, 100), mask_threshold=0.4)


def _files(tmp_path, categories, num_classes=0):
    cfg = tiny_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = num_classes
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 100
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())
    state = {"model": _confident_model().state_dict()}
    if categories is not None:
        state["categories"] = categories
    weights = tmp_path / "model.pth"
    torch.save(state, weights)
    return str(config), str(weights)


def test_from_config_takes_the_class_count_from_the_checkpoint(tmp_path):
    config, weights = _files(tmp_path, CATEGORIES)
    p = Predictor.from_config(config, weights)
    assert p.model.roi_heads.box.predictor.cls_score.out_features == 4
    assert p.transform(torch.zeros(3, 90, 120, dtype=torch.uint8), None)[0].shape[-2:] == (64, 85)
    direct = Predictor(_confident_model(), transform=ResizeShortestEdge(64, 100), categories=CATEGORIES)
    a, b = p(_image()), direct(_image())
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["masks"], b["masks"])
    with pytest.raises(ConfigError, match="NUM_CLASSES is 5 but .* 3 categories"):
        Predictor.from_config(config, weights, ["MODEL.ROI_BOX_HEAD.NUM_CLASSES", "5"])


def test_from_config_without_categories_needs_num_classes(tmp_path):
    config, weights = _files(tmp_path, None)
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        Predictor.from_config(config, weights)
    p = Predictor.from_config(config, weights, ["MODEL.ROI_BOX_HEAD.NUM_CLASSES", "4"])
    assert p.categories is None and (p(_image())["labels"] == 2).all()
