"""GroupNorm ROI heads and the conv-fc ("4conv1fc") box head: maskrcnn-benchmark's and detectron2's
layouts load and compute what those peers compute, the config keys are honoured or refused, and a
model with them trains and predicts.

The peers' forward passes are written here with torch.nn.functional from their source
(maskrcnn-benchmark's ``FPNXconv1fcFeatureExtractor`` / ``MaskRCNNFPNFeatureExtractor`` with
``make_conv3x3`` / ``make_fc``; detectron2's ``FastRCNNConvFCHead`` / ``MaskRCNNConvUpsampleHead``
with ``NORM "GN"``); their tensor names are written out from those modules' structure.
"""
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import square_target, tiny_cfg
from maskrcnn.checkpoint.convert import convert_state_dict, infer_architecture
from maskrcnn.config import ConfigError, check_supported, load_cfg
from maskrcnn.modeling import build_model

C, R, DIM, HIDDEN, GROUPS = 16, 7, 32, 64, 8  # tiny shapes: pooled channels, resolution, conv dim, fc6, GN groups
BOX, MASK = "roi_heads.box.feature_extractor.", "roi_heads.mask.feature_extractor."


def gn_cfg(num_convs=4, box_gn=True, mask_gn=True):
    cfg = tiny_cfg()
    cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", "FPNXconv1fcFeatureExtractor",
                         "MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS", num_convs, "MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM", DIM,
                         "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", HIDDEN, "MODEL.ROI_BOX_HEAD.USE_GN", box_gn,
                         "MODEL.ROI_MASK_HEAD.USE_GN", mask_gn, "MODEL.ROI_MASK_HEAD.CONV_LAYERS", (DIM, DIM),
                         "MODEL.GROUP_NORM.NUM_GROUPS", GROUPS, "MODEL.BACKBONE.OUT_CHANNELS", C])
    check_supported(cfg)
    return cfg


def _rand(g, *shape):
    return torch.randn(shape, generator=g) * 0.2


def _gn_leaves(g, n):
    return {"weight": 1 + _rand(g, n), "bias": _rand(g, n)}


def reference_box(x, convs, fc, gn):
    """Peer box feature extractor: per conv ``relu([gn](conv(x)))``, then ``relu(fc6(flatten))``."""
    for w, b, norm in convs:
        x = F.conv2d(x, w, b, padding=1)
        if gn:
            x = F.group_norm(x, GROUPS, norm["weight"], norm["bias"], 1e-5)
        x = F.relu(x)
    return F.relu(F.linear(x.flatten(1), *fc))


def reference_mask(x, convs, gn):
    for w, b, norm in convs:
        x = F.conv2d(x, w, b, padding=1)
        x = F.relu(F.group_norm(x, GROUPS, norm["weight"], norm["bias"], 1e-5) if gn else x)
    return x


def peer_heads(seed, num_convs, gn):
    """Random head tensors: box convs, fc6, mask convs (``(weight, bias or None, norm)``)."""
    g = torch.Generator().manual_seed(seed)
    box = [(_rand(g, DIM, C if i == 0 else DIM, 3, 3), None if gn else _rand(g, DIM), _gn_leaves(g, DIM))
           for i in range(num_convs)]
    fc = (_rand(g, HIDDEN, DIM * R * R) * 0.1, _rand(g, HIDDEN))
    mask = [(_rand(g, DIM, C if i == 0 else DIM, 3, 3), None if gn else _rand(g, DIM), _gn_leaves(g, DIM))
            for i in range(2)]
    return box, fc, mask


def mb_names(box, fc, mask, gn):
    """maskrcnn-benchmark's names: ``xconvs`` = Sequential(conv, [GN], ReLU, ...); ``mask_fcnI`` =
    Sequential(conv, GN) with GN (``make_conv3x3``), the conv itself without."""
    sd, step = {}, 3 if gn else 2
    for i, (w, b, norm) in enumerate(box):
        sd[f"{BOX}xconvs.{step * i}.weight"] = w
        if gn:
            sd.update({f"{BOX}xconvs.{step * i + 1}.{k}": v for k, v in norm.items()})
        else:
            sd[f"{BOX}xconvs.{step * i}.bias"] = b
    sd[f"{BOX}fc6.weight"], sd[f"{BOX}fc6.bias"] = fc
    for i, (w, b, norm) in enumerate(mask, 1):
        if gn:
            sd[f"{MASK}mask_fcn{i}.0.weight"] = w
            sd.update({f"{MASK}mask_fcn{i}.1.{k}": v for k, v in norm.items()})
        else:
            sd[f"{MASK}mask_fcn{i}.weight"], sd[f"{MASK}mask_fcn{i}.bias"] = w, b
    return sd


def d2_names(box, fc, mask, gn):
    """detectron2's names: ``box_head.conv{i}`` (a Conv2d with ``.norm``), ``fc1``; ``mask_fcn{i}``."""
    sd = {}
    for prefix, convs in (("roi_heads.box_head.conv", box), ("roi_heads.mask_head.mask_fcn", mask)):
        for i, (w, b, norm) in enumerate(convs, 1):
            sd[f"{prefix}{i}.weight"] = w
            if gn:
                sd.update({f"{prefix}{i}.norm.{k}": v for k, v in norm.items()})
            else:
                sd[f"{prefix}{i}.bias"] = b
    sd["roi_heads.box_head.fc1.weight"], sd["roi_heads.box_head.fc1.bias"] = fc
    return sd


def load_heads(model, state):
    for name, module in (("box", model.roi_heads.box.feature_extractor), ("mask", model.roi_heads.mask.feature_extractor)):
        prefix = f"roi_heads.{name}.feature_extractor."
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)


@pytest.mark.parametrize("source", ["maskrcnn-benchmark", "detectron2"])
@pytest.mark.parametrize("gn", [True, False])
def test_peer_heads_load_and_compute_the_peer_function(source, gn):
    box, fc, mask = peer_heads(seed=3, num_convs=4, gn=gn)
    sd = (mb_names if source == "maskrcnn-benchmark" else d2_names)(box, fc, mask, gn)
    state, report = convert_state_dict(sd, source)
    assert report.skipped == []
    model = build_model(gn_cfg(box_gn=gn, mask_gn=gn)).eval()
    assert set(state) == {k for k in model.state_dict() if k.startswith((BOX, MASK))}
    load_heads(model, state)
    x = torch.randn(5, C, R, R, generator=torch.Generator().manual_seed(4))
    xm = torch.randn(3, C, 14, 14, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(model.roi_heads.box.feature_extractor(x), reference_box(x, box, fc, gn),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.roi_heads.mask.feature_extractor(xm), reference_mask(xm, mask, gn),
                                   rtol=1e-4, atol=1e-5)
    arch = infer_architecture(state)
    assert arch["MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR"] == "FPNXconv1fcFeatureExtractor"
    assert (arch["MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS"], arch["MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM"]) == (4, DIM)
    assert arch["MODEL.ROI_BOX_HEAD.USE_GN"] is gn and arch["MODEL.ROI_MASK_HEAD.USE_GN"] is gn
    assert arch["MODEL.ROI_MASK_HEAD.CONV_LAYERS"] == [DIM, DIM] and arch["MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM"] == HIDDEN


def test_maskrcnn_benchmark_gn_mlp_head_names():
    """maskrcnn-benchmark's ``make_fc(use_gn=True)``: Linear without bias, then GroupNorm."""
    cfg = tiny_cfg()
    cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.USE_GN", True, "MODEL.GROUP_NORM.NUM_GROUPS", GROUPS])
    ext = build_model(cfg).roi_heads.box.feature_extractor
    assert sorted(ext.state_dict()) == ["fc6.0.weight", "fc6.1.bias", "fc6.1.weight", "fc7.0.weight",
                                        "fc7.1.bias", "fc7.1.weight"]
    x = torch.randn(4, cfg.MODEL.BACKBONE.OUT_CHANNELS, R, R)
    sd = ext.state_dict()
    h = F.relu(F.group_norm(F.linear(x.flatten(1), sd["fc6.0.weight"]), GROUPS, sd["fc6.1.weight"], sd["fc6.1.bias"]))
    h = F.relu(F.group_norm(F.linear(h, sd["fc7.0.weight"]), GROUPS, sd["fc7.1.weight"], sd["fc7.1.bias"]))
    with torch.no_grad():
        torch.testing.assert_close(ext(x), h)
    assert infer_architecture({f"{BOX}{k}": v for k, v in sd.items()})["MODEL.ROI_BOX_HEAD.USE_GN"] is True


def test_detectron2_batchnorm_head_is_refused():
    box, fc, mask = peer_heads(seed=1, num_convs=2, gn=True)
    sd = d2_names(box, fc, mask, gn=True)
    sd["roi_heads.box_head.conv1.norm.running_mean"] = torch.zeros(DIM)
    sd["roi_heads.box_head.conv1.norm.running_var"] = torch.ones(DIM)
    with pytest.raises(ValueError, match="BatchNorm.*conv1.norm.running_var"):
        convert_state_dict(sd, "detectron2")


def test_group_norm_keys_shape_the_head_norms():
    model = build_model(gn_cfg())
    norms = [m for m in model.roi_heads.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 4 + 2 and {m.num_groups for m in norms} == {GROUPS}
    cfg = gn_cfg()
    cfg.merge_from_list(["MODEL.GROUP_NORM.NUM_GROUPS", -1, "MODEL.GROUP_NORM.DIM_PER_GP", 16,
                         "MODEL.GROUP_NORM.EPSILON", 1e-3])
    norms = [m for m in build_model(cfg).roi_heads.modules() if isinstance(m, nn.GroupNorm)]
    assert {(m.num_groups, m.eps) for m in norms} == {(DIM // 16, 1e-3)}
    convs = [m for m in build_model(gn_cfg(num_convs=2, box_gn=False)).roi_heads.box.modules()
             if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and all(c.bias is not None for c in convs)


@pytest.mark.parametrize("override, match", [
    (["MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS", 2], "only used by the conv-fc box head"),
    (["MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM", 128], "set FEATURE_EXTRACTOR FPNXconv1fcFeatureExtractor"),
    (["MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", "FPNXconv1fcFeatureExtractor", "MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS", 0],
     r"NUM_STACKED_CONVS.*\[1, inf\)"),
    (["MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", "ResNet50Conv5ROIFeatureExtractor"], "FPN2MLPFeatureExtractor"),
])
def test_conv_head_keys_without_the_conv_head_are_refused(override, match):
    cfg = tiny_cfg()
    cfg.merge_from_list(override)
    with pytest.raises(ConfigError, match=match):
        check_supported(cfg)


def test_the_gn_recipe_builds_group_norm_everywhere():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_cfg(os.path.join(root, "configs", "gn_baselines", "e2e_mask_rcnn_R_50_FPN_1x_gn.yaml"),
                   ["MODEL.DEVICE", "cpu", "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 81])
    model = build_model(cfg)
    count = {name: sum(isinstance(m, nn.GroupNorm) for m in part.modules())
             for name, part in (("body", model.backbone.body), ("fpn", model.backbone.fpn),
                                ("box", model.roi_heads.box), ("mask", model.roi_heads.mask))}
    assert count == {"body": 1 + 3 * 16 + 4, "fpn": 8, "box": 4, "mask": 4}
    assert model.roi_heads.box.feature_extractor.fc6.in_features == 256 * 7 * 7


def test_gn_heads_train_and_predict():
    torch.manual_seed(0)
    model = build_model(gn_cfg())
    images = [torch.rand(3, 96, 128), torch.rand(3, 120, 80)]
    targets = [square_target((96, 128), [[10, 10, 50, 60], [60, 20, 120, 90]], [1, 2]),
               square_target((120, 80), [[5, 30, 70, 110]], [3])]
    model.train()
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_mask"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.roi_heads.named_parameters():
        if ".xconvs." in name or "mask_fcn" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and all(o.has_field("scores") for o in out)

