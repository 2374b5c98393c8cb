"""Weights of torchvision, detectron2, maskrcnn-benchmark and Detectron (Caffe2) load into our model.

Each peer's file is built on disk with the peer's exact names and shapes (R-50-FPN, random
values; the key lists are written out from the architecture in peer_weights.py, independently
of the converters). torchvision is installed, so its converted model is compared with torchvision's
own modules; for the others the peer's arithmetic (detectron2's class order, maskrcnn-benchmark's
eps-free frozen BN, Caffe2's affine channel) is restated and compared.
"""
import importlib.util
import io
import os
import pickle
import pickletools
import re
import shlex
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.rpn import concat_box_prediction_layers

from maskrcnn.config import get_cfg
from maskrcnn.modeling.build import build_model
from maskrcnn.checkpoint import UnsafePickleError, load_model_state, load_weights_file
from maskrcnn.checkpoint.convert import BN_EPS, convert_state_dict, detect_format
from maskrcnn.checkpoint.convert.common import BN_COUNTER
from peer_weights import (Filler, Py2Pickler, caffe2_blobs, detectron2_state, mb_state, randomise,
                          to_legacy_torchvision_names)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "convert_weights.py")


def _tool_module():
    """tools/convert_weights.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("convert_weights_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def r50_cfg(num_classes=81, mask_on=True):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "e2e_mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = num_classes
    cfg.MODEL.MASK_ON = mask_on
    cfg.MODEL.WEIGHT = ""
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.fixture(scope="module")
def ours():
    torch.manual_seed(0)
    return build_model(r50_cfg()).eval()


def assert_close(a, b, tol=1e-5):
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=tol, atol=tol * float(b.abs().max()))


@pytest.fixture(scope="module")
def tv_model():
    torch.manual_seed(1)
    return randomise(torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None), 1)


# --------------------------------------------------------------------------- torchvision
def test_torchvision_maskrcnn_matches_torchvision_modules(tmp_path, ours, tv_model):
    path = tmp_path / "tv.pth"
    torch.save(tv_model.state_dict(), path)
    model = build_model(r50_cfg(num_classes=91)).eval()
    state, report = load_weights_file(str(path), model.state_dict())
    assert report.source == "torchvision" and report.uninitialised == [] and report.shape_mismatch == []
    assert {r for _, r in report.skipped} == {"BatchNorm step counter (frozen BN has none)"}
    assert report.recommended_config["INPUT.TO_BGR255"] is False
    assert report.recommended_config["MODEL.ROI_BOX_HEAD.NUM_CLASSES"] == 91
    model.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        feats, ref = model.backbone(x), list(tv_model.backbone(x).values())
        for a, b in zip(feats, ref):
            assert_close(a, b)
        objectness, deltas = model.rpn.head(feats)
        ref_obj, ref_deltas = concat_box_prediction_layers(*tv_model.rpn.head(ref))
        assert_close(objectness, ref_obj.view(1, -1))
        assert_close(deltas, ref_deltas.view(1, -1, 4))
        pooled = torch.randn(5, 256, 7, 7)
        fc = model.roi_heads.box.feature_extractor(pooled)
        ref_fc = tv_model.roi_heads.box_head(pooled)
        assert_close(fc, ref_fc)
        for a, b in zip(model.roi_heads.box.predictor(fc), tv_model.roi_heads.box_predictor(ref_fc)):
            assert_close(a, b)
        pooled = torch.randn(3, 256, 14, 14)
        mask = model.roi_heads.mask.predictor(model.roi_heads.mask.feature_extractor(pooled))
        assert_close(mask, tv_model.roi_heads.mask_predictor(tv_model.roi_heads.mask_head(pooled)))


def test_torchvision_legacy_names(tmp_path, ours, tv_model):
    legacy = to_legacy_torchvision_names(tv_model.state_dict())
    assert "roi_heads.mask_head.mask_fcn1.weight" in legacy and "rpn.head.conv.weight" in legacy
    # torchvision itself accepts these names (its version<2 upgrade hooks), so they are the real ones
    fresh = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    result = fresh.load_state_dict(legacy, strict=False)
    assert result.unexpected_keys == [] and all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    assert detect_format(legacy) == "torchvision"
    new, report = convert_state_dict(legacy, "auto", ours.state_dict())
    current, _ = convert_state_dict(tv_model.state_dict(), "torchvision")
    assert report.skipped == [] and set(new) == set(current) and len(new) == 307
    assert all(torch.equal(new[k], current[k]) for k in new)


def test_torchvision_fasterrcnn(tmp_path):
    torch.manual_seed(2)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    model = build_model(r50_cfg(num_classes=91, mask_on=False))
    assert detect_format({"model": tv.state_dict()}) == "torchvision"
    state, report = convert_state_dict(tv.state_dict(), "torchvision", model.state_dict())
    assert report.uninitialised == [] and report.recommended_config["MODEL.MASK_ON"] is False
    model.load_state_dict(state, strict=True)


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn_v2"])
def test_torchvision_v2_converts_and_names_its_architecture(name):
    """The *_v2 models' every tensor has a place in the model their recommended config builds
    (BN statistics included; only BN counters are skipped), as in
    configs/torchvision/maskrcnn_resnet50_fpn_v2.yaml."""
    torch.manual_seed(2)
    tv = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None)
    assert detect_format({"model": tv.state_dict()}) == "torchvision"
    state, report = convert_state_dict(tv.state_dict(), "torchvision")
    rec = report.recommended_config
    assert {k: rec[k] for k in ("MODEL.FPN.NORM", "MODEL.RPN.NUM_CONVS", "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR",
                                "MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS", "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM",
                                "MODEL.ROI_BOX_HEAD.NORM")} == {
        "MODEL.FPN.NORM": "FrozenBN", "MODEL.RPN.NUM_CONVS": 2,
        "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR": "FPNXconv1fcFeatureExtractor",
        "MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS": 4, "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM": 1024,
        "MODEL.ROI_BOX_HEAD.NORM": "FrozenBN"}
    assert rec["MODEL.MASK_ON"] is name.startswith("mask")
    assert rec.get("MODEL.ROI_MASK_HEAD.NORM", "FrozenBN") == "FrozenBN"
    assert {r for _, r in report.skipped} == {BN_COUNTER}, report.skipped
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "torchvision", "maskrcnn_resnet50_fpn_v2.yaml"))
    cfg.merge_from_list(["MODEL.WEIGHT", "", "MODEL.DEVICE", "cpu", "MODEL.MASK_ON", name.startswith("mask")])
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    tv_state = tv.state_dict()
    assert torch.equal(state["roi_heads.box.feature_extractor.xconvs.10.running_var"],
                       tv_state["roi_heads.box_head.3.1.running_var"])
    assert torch.equal(state["rpn.head.extra_convs.0.weight"], tv_state["rpn.head.conv.1.0.weight"])
    assert torch.equal(state["roi_heads.box.feature_extractor.fc6.weight"], tv_state["roi_heads.box_head.5.weight"])


def test_torchvision_imagenet_resnet_matches_torchvision_trunk(tmp_path, ours):
    torch.manual_seed(3)
    tv = randomise(torchvision.models.resnet50(), 3)
    path = tmp_path / "resnet50.pth"
    torch.save(tv.state_dict(), path)
    state, report = load_weights_file(str(path), ours.state_dict())
    assert report.source == "torchvision-resnet"
    assert ("fc.weight", "ImageNet classifier") in report.skipped
    assert not any(k.startswith("backbone.body.") for k in report.uninitialised)
    assert "rpn.head.conv.weight" in report.uninitialised
    loaded = load_model_state(ours, state)
    assert loaded["unexpected"] == [] and loaded["skipped"] == []
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for layer, ours_c in zip([tv.layer1, tv.layer2, tv.layer3, tv.layer4], ours.backbone.body(x)):
            y = layer(y)
            assert_close(ours_c, y)


# --------------------------------------------------------------------------- detectron2
def test_detectron2_pth_and_pkl_and_class_layout(tmp_path, ours):
    sd = detectron2_state(Filler(4))
    pth, pkl = tmp_path / "d2.pth", tmp_path / "model_final.pkl"
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "iteration": 9}, pth)
    with open(pkl, "wb") as fh:
        pickle.dump({"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "Detectron2 Model Zoo",
                     "matching_heuristics": True}, fh)
    state, report = load_weights_file(str(pth), ours.state_dict())
    from_pkl, _ = load_weights_file(str(pkl), ours.state_dict())
    assert report.source == "detectron2" and report.uninitialised == [] and report.shape_mismatch == []
    assert all(torch.equal(state[k], from_pkl[k]) for k in state) and set(state) == set(from_pkl)
    reasons = dict(report.skipped)
    assert "anchor" in reasons["proposal_generator.anchor_generator.cell_anchors.0"]
    assert "training state" in reasons["optimizer"] and "pixel_mean" in reasons
    rec = report.recommended_config
    assert rec["MODEL.ROI_BOX_HEAD.POOLER_ALIGNED"] is True and rec["INPUT.TO_BGR255"] is True
    assert rec["INPUT.PIXEL_MEAN"] == pytest.approx([103.53, 116.28, 123.675])
    assert rec["MODEL.RESNETS.STRIDE_IN_1X1"] is True and rec["MODEL.ROI_BOX_HEAD.NUM_CLASSES"] == 81
    ours.load_state_dict(state, strict=True)
    p = "roi_heads.box_predictor."
    feat = torch.randn(6, 1024)
    d2_scores = F.linear(feat, sd[p + "cls_score.weight"], sd[p + "cls_score.bias"])  # background last
    d2_deltas = F.linear(feat, sd[p + "bbox_pred.weight"], sd[p + "bbox_pred.bias"]).view(6, 80, 4)
    with torch.no_grad():
        scores, deltas = ours.roi_heads.box.predictor(feat)
    assert_close(scores[:, 0], d2_scores[:, 80])
    assert_close(scores[:, 1:], d2_scores[:, :80])
    assert_close(scores.softmax(-1)[:, 1:], d2_scores.softmax(-1)[:, :80])
    assert_close(deltas.view(6, 81, 4)[:, 1:], d2_deltas)
    assert torch.equal(deltas.view(6, 81, 4)[:, 0], torch.zeros(6, 4))
    x = torch.randn(2, 256, 14, 14)
    m = "roi_heads.mask_head."
    up = F.relu(F.conv_transpose2d(x, sd[m + "deconv.weight"], sd[m + "deconv.bias"], stride=2))
    d2_masks = F.conv2d(up, sd[m + "predictor.weight"], sd[m + "predictor.bias"])
    with torch.no_grad():
        masks = ours.roi_heads.mask.predictor(x)
    assert_close(masks[:, 1:], d2_masks)
    assert torch.equal(masks[:, 0], torch.zeros(2, 28, 28))
    # detectron2's frozen BN adds the same eps: statistics are copied unchanged
    assert torch.equal(state["backbone.body.layer3.4.bn2.running_var"],
                       sd["backbone.bottom_up.res4.4.conv2.norm.running_var"])


def test_detectron2_class_agnostic_heads_are_tiled():
    sd = {"roi_heads.box_predictor.cls_score.weight": torch.randn(4, 8),
          "roi_heads.box_predictor.bbox_pred.weight": torch.randn(4, 8),
          "roi_heads.mask_head.predictor.weight": torch.randn(1, 8, 1, 1)}
    state, _ = convert_state_dict(sd, "detectron2")
    box = state["roi_heads.box.predictor.bbox_pred.weight"].view(4, 4, 8)
    assert all(torch.equal(box[c], sd["roi_heads.box_predictor.bbox_pred.weight"]) for c in range(4))
    assert state["roi_heads.mask.predictor.mask_fcn_logits.weight"].shape == (4, 8, 1, 1)


# --------------------------------------------------------------------------- maskrcnn-benchmark
@pytest.fixture(scope="module")
def mb_file(tmp_path_factory):
    # Small variances make a forgotten eps visible (0.5 * eps / var ~ 1e-2), and a few channels
    # below eps exercise the fold into the weight.
    sd = mb_state(Filler(5, var_range=(1e-4, 1e-3)))
    sd["backbone.body.stem.bn1.running_var"][:3] = 1e-6
    path = tmp_path_factory.mktemp("mb") / "e2e_mask_rcnn_R_50_FPN_1x.pth"
    torch.save({"model": OrderedDict((f"module.{k}", v) for k, v in sd.items()),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.02, "params": [0, 1]}]},
                "scheduler": {"last_epoch": 90000}, "iteration": 90000}, path)
    return str(path), sd


def test_maskrcnn_benchmark_frozen_bn_stays_exact(mb_file, ours):
    path, sd = mb_file
    state, report = load_weights_file(path, ours.state_dict())
    assert report.source == "maskrcnn-benchmark" and report.uninitialised == [] and report.shape_mismatch == []
    reasons = dict(report.skipped)
    assert {reasons[k] for k in ("optimizer", "scheduler", "iteration")} == {"training state, not weights"}
    assert "anchor" in reasons["rpn.anchor_generator.cell_anchors.0"]
    rec = report.recommended_config
    assert rec["INPUT.TO_BGR255"] is True and rec["INPUT.PIXEL_MEAN"] == [102.9801, 115.9465, 122.7717]
    assert rec["MODEL.RESNETS.STRIDE_IN_1X1"] is True and rec["MODEL.ROI_BOX_HEAD.POOLER_ALIGNED"] is False
    ours.load_state_dict(state, strict=True)
    for mb_prefix, module in [("backbone.body.stem.bn1", ours.backbone.body.bn1),
                              ("backbone.body.layer3.2.bn2", ours.backbone.body.layer3[2].bn2),
                              ("backbone.body.layer1.0.downsample.1", ours.backbone.body.layer1[0].downsample[1])]:
        w, b, rm, rv = (sd[f"{mb_prefix}.{leaf}"] for leaf in ("weight", "bias", "running_mean", "running_var"))
        scale = w * rv.rsqrt()  # maskrcnn-benchmark's FrozenBatchNorm2d: no eps
        x = torch.randn(2, w.numel(), 3, 3)
        expected = x * scale.view(1, -1, 1, 1) + (b - rm * scale).view(1, -1, 1, 1)
        with torch.no_grad():
            assert_close(module(x), expected, tol=1e-5)
    assert torch.equal(state["roi_heads.box.predictor.cls_score.weight"], sd["roi_heads.box.predictor.cls_score.weight"])
    assert torch.equal(state["backbone.fpn.inner_blocks.3.0.weight"], sd["backbone.fpn.fpn_inner4.weight"])


def test_maskrcnn_benchmark_bn_without_statistics_is_a_pure_affine():
    f = Filler(6)
    sd = {"backbone.body.stem.bn1.weight": f.vec(8) + 1, "backbone.body.stem.bn1.bias": f.vec(8)}
    state, _ = convert_state_dict(sd, "maskrcnn-benchmark")
    bn = torchvision.ops.FrozenBatchNorm2d(8)
    bn.load_state_dict({k.rsplit(".", 1)[1]: v for k, v in state.items()})
    x = torch.randn(2, 8, 3, 3)
    expected = x * sd["backbone.body.stem.bn1.weight"].view(1, -1, 1, 1) + sd["backbone.body.stem.bn1.bias"].view(1, -1, 1, 1)
    assert_close(bn(x), expected, tol=1e-6)
    assert set(state) == {f"backbone.body.bn1.{k}" for k in ("weight", "bias", "running_mean", "running_var")}
    assert torch.allclose(state["backbone.body.bn1.running_var"], torch.full((8,), 1 - BN_EPS))


# --------------------------------------------------------------------------- Detectron / Caffe2
def test_caffe2_detection_pkl(tmp_path, ours):
    blobs = caffe2_blobs(Filler(7))
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"blobs": blobs, "cfg": "MODEL:\n  TYPE: generalized_rcnn\n"}, fh, protocol=2)
    state, report = load_weights_file(str(path), ours.state_dict())
    assert report.source == "caffe2" and report.uninitialised == [] and report.shape_mismatch == []
    assert dict(report.skipped)["conv1_w_momentum"] == "optimizer state (momentum)"
    assert report.recommended_config["INPUT.TO_BGR255"] is True
    ours.load_state_dict(state, strict=True)
    s, b = blobs["res3_1_branch2c_bn_s"], blobs["res3_1_branch2c_bn_b"]
    x = torch.randn(2, s.size, 3, 3)
    with torch.no_grad():  # AffineChannel: s * x + b, exactly
        assert_close(ours.backbone.body.layer2[1].bn3(x), x * torch.from_numpy(s).view(1, -1, 1, 1)
                     + torch.from_numpy(b).view(1, -1, 1, 1), tol=1e-6)
    for ours_name, blob in [("backbone.fpn.inner_blocks.3.0.weight", "fpn_inner_res5_2_sum_w"),
                            ("backbone.fpn.inner_blocks.2.0.bias", "fpn_inner_res4_5_sum_lateral_b"),
                            ("backbone.fpn.layer_blocks.0.0.weight", "fpn_res2_2_sum_w"),
                            ("rpn.head.conv.weight", "conv_rpn_fpn2_w"), ("backbone.body.layer1.0.downsample.0.weight", "res2_0_branch1_w"),
                            ("roi_heads.mask.feature_extractor.mask_fcn3.bias", "_[mask]_fcn3_b"),
                            ("roi_heads.mask.predictor.mask_fcn_logits.weight", "mask_fcn_logits_w")]:
        assert np.array_equal(state[ours_name].numpy(), blobs[blob]), ours_name


def test_caffe2_imagenet_python2_pickle(tmp_path, ours):
    blobs = caffe2_blobs(Filler(8), heads=False)
    path = tmp_path / "R-50.pkl"
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(blobs)
    data = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    opcodes = {op.name for op, _, _ in pickletools.genops(data)}
    assert b"numpy.core.multiarray" in data and "SHORT_BINSTRING" in opcodes
    assert not opcodes & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"}
    path.write_bytes(data)
    state, report = load_weights_file(str(path), ours.state_dict())
    assert report.source == "caffe2"
    assert dict(report.skipped)["fc1000_w"] == "ImageNet classifier"
    assert not any(k.startswith("backbone.body.") for k in report.uninitialised)
    assert np.array_equal(state["backbone.body.layer4.2.conv2.weight"].numpy(), blobs["res5_2_branch2b_w"])
    assert report.recommended_config["MODEL.BACKBONE.CONV_BODY"] == "R-50-FPN"


def test_group_norm_resnets_are_recognised_and_load_into_the_gn_recipe(tmp_path, ours, caplog):
    """Detectron's R-50-GN.pkl (``_gn_s`` / ``_gn_b`` blobs) into the GN recipe's model; into a
    frozen-BN config it would load as a plain affine, so the runtime check names MODEL.RESNETS.NORM."""
    blobs = OrderedDict((k.replace("_bn_", "_gn_"), v) for k, v in caffe2_blobs(Filler(9), heads=False).items())
    path = tmp_path / "R-50-GN.pkl"
    with open(path, "wb") as fh:
        pickle.dump(blobs, fh)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "gn_baselines", "e2e_mask_rcnn_R_50_FPN_1x_gn.yaml"))
    cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.NUM_CLASSES", 81, "MODEL.DEVICE", "cpu"])
    gn_model = build_model(cfg)
    state, report = load_weights_file(str(path), gn_model.state_dict())
    rec = report.recommended_config
    assert rec["MODEL.RESNETS.NORM"] == "GN" and rec["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    assert not any(k.startswith("backbone.body.") for k in report.uninitialised) and not report.shape_mismatch
    assert not any("running" in k for k in state)  # GroupNorm: weight and bias only
    gn_model.load_state_dict(state, strict=False)
    gn = gn_model.backbone.body.layer3[2].bn2
    assert isinstance(gn, torch.nn.GroupNorm)
    assert np.array_equal(gn.weight.detach().numpy(), blobs["res4_2_branch2b_gn_s"])
    assert np.array_equal(gn.bias.detach().numpy(), blobs["res4_2_branch2b_gn_b"])
    from maskrcnn.checkpoint import Checkpointer
    for model, config, warned in ((gn_model, cfg, False), (ours, r50_cfg(), True)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="maskrcnn"):
            Checkpointer(model, save_to_disk=False, cfg=config).load(str(path), model_only=True)
        warnings = [r.getMessage() for r in caplog.records if "input convention" in r.getMessage()]
        assert bool(warnings) is warned
        if warned:
            assert "MODEL.RESNETS.NORM: the config has 'FrozenBN', the weights expect 'GN'" in warnings[0]
    # maskrcnn-benchmark: its frozen BN saves running statistics, its GroupNorm none
    _, gn_report = convert_state_dict(mb_state(Filler(10), bn_leaves=("weight", "bias")), "maskrcnn-benchmark")
    assert gn_report.recommended_config["MODEL.RESNETS.NORM"] == "GN"
    _, bn_report = convert_state_dict(mb_state(Filler(10)), "maskrcnn-benchmark")
    assert "MODEL.RESNETS.NORM" not in bn_report.recommended_config


# --------------------------------------------------------------------------- safety and errors
class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def test_malicious_pickles_are_refused_without_running(tmp_path):
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Evil(control)))  # an ordinary unpickler runs it ...
    assert control.exists()
    for name, save in [("evil.pkl", lambda o, p: p.write_bytes(pickle.dumps(o))),
                       ("evil_plain.pth", lambda o, p: p.write_bytes(pickle.dumps(o, protocol=2))),
                       ("evil_zip.pth", lambda o, p: torch.save(o, p))]:
        marker = tmp_path / f"marker_{name}"
        path = tmp_path / name
        save({"model": {"conv1.weight": _Evil(marker)}, "__author__": "x"}, path)
        with pytest.raises(UnsafePickleError, match=re.escape(name)) as err:
            load_weights_file(str(path))
        assert "system" in str(err.value)
        assert not marker.exists(), name  # ... ours never does


def test_unrecognised_files_name_the_file(tmp_path):
    path = tmp_path / "strange.pth"
    torch.save({"foo.weight": torch.zeros(2), "bar.bias": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"strange\.pth.*foo\.weight"):
        load_weights_file(str(path))
    garbage = tmp_path / "garbage.pkl"
    garbage.write_text("not a pickle at all")
    with pytest.raises(RuntimeError, match=r"garbage\.pkl"):
        load_weights_file(str(garbage))


# --------------------------------------------------------------------------- the tool
def test_tool_round_trip(mb_file, ours, tmp_path):
    path, _ = mb_file
    out = tmp_path / "converted" / "mb.pth"
    r = subprocess.run([sys.executable, TOOL, "auto", path, str(out),
                        "--config-file", os.path.join(ROOT, "configs", "e2e_mask_rcnn_R_50_FPN_1x.yaml"),
                        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "81"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    # the recipe is set up for torchvision's RGB weights: the tool says what to change
    assert "INPUT.TO_BGR255: config has False, the weights expect True" in r.stdout
    assert "maskrcnn-benchmark: mapped 307" in r.stdout
    assert "backbone.body.stem.conv1.weight -> backbone.body.conv1.weight" in r.stdout
    assert "training state, not weights" in r.stdout and "left uninitialised" not in r.stdout
    data = torch.load(out, weights_only=True)
    assert data["converted_from"] == "maskrcnn-benchmark"
    assert data["recommended_config"]["INPUT.TO_BGR255"] is True
    assert set(data["model"]) == set(ours.state_dict())
    direct, _ = load_weights_file(path, ours.state_dict())
    back, report = load_weights_file(str(out), ours.state_dict())
    assert report.source == "native" and report.uninitialised == []
    assert report.recommended_config["MODEL.RESNETS.STRIDE_IN_1X1"] is True
    assert all(torch.equal(back[k], direct[k]) for k in direct)


def test_tool_reports_uninitialised_heads_for_a_backbone(tmp_path):
    torch.manual_seed(9)
    src = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), src)
    report, mismatches = _tool_module().convert_weights_file(str(src), str(tmp_path / "out.pth"),
                                                             "torchvision-resnet")
    assert "rpn.head.conv.weight" in report.uninitialised
    assert not any(k.startswith("backbone.body.") for k in report.uninitialised)
    assert mismatches == []  # the default recipe takes the weights' input convention
    assert torch.load(tmp_path / "out.pth", weights_only=True)["converted_from"] == "torchvision-resnet"


def test_legacy_torch_serialization_is_read(tmp_path):
    sd = {"conv1.weight": torch.randn(4, 3, 7, 7), "layer1.0.conv1.weight": torch.randn(4, 4, 1, 1)}
    path = tmp_path / "old_format.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    state, report = load_weights_file(str(path))
    assert report.source == "torchvision-resnet"
    assert torch.equal(state["backbone.body.conv1.weight"], sd["conv1.weight"])


# --------------------------------------------------------------------------- rule tables
def test_rule_table_fields_and_errors():
    from maskrcnn.checkpoint.convert.common import rename, rule_table

    rules = rule_table(r"""
        # comment lines and blank lines are ignored

        res(\d)_(\d+)_branch2([abc])_([wb])   layer{1-1}.{2}.conv{3:conv}.{4:leaf}
        mask_head\.(\d+)\.(weight)            mask_fcn{1+1}.{2}
    """, {"conv": {"a": 1, "b": 2, "c": 3}, "leaf": {"w": "weight", "b": "bias"}})
    assert rename("res3_12_branch2c_b", rules) == "layer2.12.conv3.bias"
    assert rename("mask_head.0.weight", rules) == "mask_fcn1.weight"
    assert rename("res3_12_branch2c_b_momentum", rules) is None  # patterns match whole names
    with pytest.raises(ValueError, match="unknown lookup 'leaf'"):
        rule_table(r"x_([wb])  y.{1:leaf}")
    with pytest.raises(ValueError, match="a pattern and a target"):
        rule_table(r"only_one_column")
