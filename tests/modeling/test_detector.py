"""The detector end to end on a tiny model: losses, empty ground truth, inference outputs."""

import pytest
import torch

from conftest import square_target, tiny_cfg
from maskrcnn.modeling import build_model

LOSS_KEYS = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}


def _batch():
    """Two images of different sizes in one batch, with ground truth."""
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=g),
              torch.randint(0, 256, (3, 120, 80), dtype=torch.uint8, generator=g)]
    targets = [square_target((96, 128), [[10, 10, 50, 60], [60, 20, 120, 90]], [1, 2]),
               square_target((120, 80), [[5, 30, 70, 110]], [3])]
    return images, targets


def _model(mask_on=True, seed=0):
    torch.manual_seed(seed)
    return build_model(tiny_cfg(mask_on))


def test_losses_are_finite_and_backpropagate():
    model = _model()
    model.train()
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every trainable parameter must receive a gradient"
    assert any(g.abs().sum() > 0 for g in model.roi_heads.mask.parameters() for g in [g.grad])


def test_losses_pinned_under_seed():
    """Regression pin: the same seed, inputs and code give these values."""
    model = _model(seed=0)
    model.train()
    images, targets = _batch()
    torch.manual_seed(123)
    losses = {k: float(v.detach()) for k, v in model(images, targets).items()}
    expected = PINNED
    for k, v in expected.items():
        assert losses[k] == pytest.approx(v, rel=1e-3, abs=1e-9), (k, losses[k], v)


# Values printed by the code (torch 2.14.1, CPU). loss_objectness and loss_classifier moved
# (0.693782 -> 0.693145, 1.418753 -> 1.414225) when the balanced sampler stopped waiting for the
# device (its random draws changed, not its rule); the others, which do not depend on which
# negatives are drawn, kept their values.
PINNED = {"loss_objectness": 0.693145, "loss_rpn_box_reg": 0.003315, "loss_classifier": 1.414225,
          "loss_box_reg": 1.481e-06, "loss_mask": 1.068276}


def test_empty_ground_truth_gives_zero_box_and_mask_losses():
    model = _model()
    model.train()
    images, targets = _batch()
    empty = [t[torch.zeros(len(t), dtype=torch.bool)] for t in targets]
    losses = model(images, empty)
    assert set(losses) == LOSS_KEYS
    for k, v in losses.items():
        assert torch.isfinite(v), k
    assert float(losses["loss_rpn_box_reg"].detach()) == 0.0
    assert float(losses["loss_box_reg"].detach()) == 0.0
    assert float(losses["loss_mask"].detach()) == 0.0
    assert float(losses["loss_objectness"].detach()) > 0.0 and float(losses["loss_classifier"].detach()) > 0.0
    sum(losses.values()).backward()


def test_half_empty_batch():
    model = _model()
    model.train()
    images, targets = _batch()
    targets[1] = targets[1][torch.zeros(1, dtype=torch.bool)]
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert float(losses["loss_mask"].detach()) > 0


def test_target_size_mismatch_is_an_error():
    model = _model()
    images, targets = _batch()
    targets[0] = targets[0].resize((48, 64))
    with pytest.raises(ValueError, match="size"):
        model(images, targets)


def test_predict_outputs_in_input_coordinates():
    model = _model()
    model.eval()
    # Make the detector confident so that detections exist: bias the classifier to class 1.
    with torch.no_grad():
        model.roi_heads.box.predictor.cls_score.bias[1] = 10.0
    images, _ = _batch()
    outs = model(images)
    assert len(outs) == 2
    for out, im in zip(outs, images):
        h, w = im.shape[-2:]
        assert out.size == (h, w)
        assert len(out) > 0
        assert set(out.fields()) == {"scores", "labels", "mask"}
        b = out.bbox
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
        assert (out.get_field("labels") == 1).all()
        m = out.get_field("mask")
        assert m.shape == (len(out), 1, 28, 28)
        assert (m >= 0).all() and (m <= 1).all()
        assert len(out) <= 100


def test_faster_rcnn_has_no_mask_head():
    model = _model(mask_on=False)
    model.train()
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS - {"loss_mask"}
    model.eval()
    out = model(images)[0]
    assert not out.has_field("mask")


def test_num_classes_zero_is_refused_by_build():
    cfg = tiny_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 0
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        build_model(cfg)


def test_preprocess_channel_order_normalisation_and_padding():
    cfg = tiny_cfg()
    cfg.INPUT.TO_BGR255 = True
    cfg.INPUT.PIXEL_MEAN = [10.0, 20.0, 30.0]
    cfg.INPUT.PIXEL_STD = [1.0, 2.0, 4.0]
    model = build_model(cfg)
    image = torch.zeros((3, 40, 50), dtype=torch.uint8)
    image[0], image[1], image[2] = 200, 100, 50  # R, G, B
    batch = model.preprocess([image])
    assert batch.tensors.shape == (1, 3, 64, 64)  # padded to a multiple of 32
    assert batch.image_sizes == [(40, 50)]
    x = batch.tensors[0, :, 0, 0]
    assert torch.allclose(x, torch.tensor([(50 - 10) / 1.0, (100 - 20) / 2.0, (200 - 30) / 4.0]))  # BGR
    assert float(batch.tensors[0, :, 45, 55].abs().sum()) == 0.0
    cfg = tiny_cfg()  # RGB in 0..1, mean 0.5, std 0.25
    x = build_model(cfg).preprocess([image]).tensors[0, :, 0, 0]
    assert torch.allclose(x, (torch.tensor([200, 100, 50]) / 255.0 - 0.5) / 0.25)


def test_rpn_only_model_gives_proposals():
    cfg = tiny_cfg()
    cfg.MODEL.RPN_ONLY = True
    torch.manual_seed(0)
    model = build_model(cfg)
    images, targets = _batch()
    assert set(model(images, targets)) == {"loss_objectness", "loss_rpn_box_reg"}
    model.eval()
    out = model(images)
    assert [o.size for o in out] == [(96, 128), (120, 80)]
    assert all(o.has_field("objectness") and 0 < len(o) <= 100 for o in out)
