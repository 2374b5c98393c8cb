"""Peer weight files for the converter tests: each framework's exact tensor names and R-50-FPN
shapes, written out from the architecture (independently of maskrcnn.checkpoint.convert), with
seeded random values."""
import pickle
import re
import struct
from collections import OrderedDict

import numpy as np
import torch

STAGES = {2: 3, 3: 4, 4: 6, 5: 3}  # ResNet-50 blocks of res2..res5


class Filler:
    """Seeded random tensors: scaled convs, positive BN variances."""

    def __init__(self, seed, var_range=(0.5, 2.0)):
        self.g = torch.Generator().manual_seed(seed)
        self.var_range = var_range

    def conv(self, *shape):
        fan_in = int(np.prod(shape[1:]))
        return torch.randn(shape, generator=self.g) / fan_in ** 0.5

    def vec(self, n):
        return torch.randn(n, generator=self.g) * 0.1

    def bn(self, n):
        return {"weight": torch.empty(n).uniform_(0.5, 1.5, generator=self.g), "bias": self.vec(n),
                "running_mean": self.vec(n), "running_var": torch.empty(n).uniform_(*self.var_range, generator=self.g)}


def resnet_layout():
    """(stage, block, in, width, out) of the ResNet-50 bottlenecks."""
    cin = 64
    for s, n in STAGES.items():
        width, cout = 64 * 2 ** (s - 2), 256 * 2 ** (s - 2)
        for b in range(n):
            yield s, b, cin, width, cout
            cin = cout


def head_shapes(num_scores, num_boxes, num_masks):
    """(peer-neutral) shapes of the R-50-FPN Mask R-CNN heads, in forward order."""
    return [("rpn_conv", (256, 256, 3, 3)), ("rpn_cls", (3, 256, 1, 1)), ("rpn_box", (12, 256, 1, 1)),
            ("fc6", (1024, 256 * 7 * 7)), ("fc7", (1024, 1024)), ("cls", (num_scores, 1024)),
            ("box", (num_boxes * 4, 1024))] + [(f"fcn{i}", (256, 256, 3, 3)) for i in range(1, 5)] + [
            ("deconv", (256, 256, 2, 2)), ("mask", (num_masks, 256, 1, 1))]


def build_state(f, names, conv_norm_names, fpn_names, bn_leaves=("weight", "bias", "running_mean", "running_var")):
    """A peer state dict: ``conv_norm_names(s, b, part)`` -> (conv name, norm prefix) per ResNet conv."""
    sd = OrderedDict()

    def conv_norm(key, shape):
        conv, norm = conv_norm_names(key)
        sd[conv] = f.conv(*shape)
        for leaf, v in f.bn(shape[0]).items():
            if leaf in bn_leaves:
                sd[norm(leaf)] = v
    conv_norm(("stem",), (64, 3, 7, 7))
    for s, b, cin, width, cout in resnet_layout():
        if b == 0:
            conv_norm((s, b, "shortcut"), (cout, cin, 1, 1))
        for j, shape in enumerate([(width, cin, 1, 1), (width, width, 3, 3), (cout, width, 1, 1)], 1):
            conv_norm((s, b, j), shape)
    for s in range(2, 6):
        for kind, shape in (("lateral", (256, 256 * 2 ** (s - 2), 1, 1)), ("output", (256, 256, 3, 3))):
            w, bias = fpn_names(kind, s)
            sd[w], sd[bias] = f.conv(*shape), f.vec(256)
    for key, shape in head_shapes(*names["_counts"]):
        w, bias = names[key]
        sd[w], sd[bias] = f.conv(*shape), f.vec(shape[0] if key != "deconv" else shape[1])
    return sd


D2_HEADS = {"rpn_conv": "proposal_generator.rpn_head.conv", "rpn_cls": "proposal_generator.rpn_head.objectness_logits",
            "rpn_box": "proposal_generator.rpn_head.anchor_deltas", "fc6": "roi_heads.box_head.fc1",
            "fc7": "roi_heads.box_head.fc2", "cls": "roi_heads.box_predictor.cls_score",
            "box": "roi_heads.box_predictor.bbox_pred", "deconv": "roi_heads.mask_head.deconv",
            "mask": "roi_heads.mask_head.predictor", **{f"fcn{i}": f"roi_heads.mask_head.mask_fcn{i}" for i in range(1, 5)}}
MB_HEADS = {"rpn_conv": "rpn.head.conv", "rpn_cls": "rpn.head.cls_logits", "rpn_box": "rpn.head.bbox_pred",
            "fc6": "roi_heads.box.feature_extractor.fc6", "fc7": "roi_heads.box.feature_extractor.fc7",
            "cls": "roi_heads.box.predictor.cls_score", "box": "roi_heads.box.predictor.bbox_pred",
            "deconv": "roi_heads.mask.predictor.conv5_mask", "mask": "roi_heads.mask.predictor.mask_fcn_logits",
            **{f"fcn{i}": f"roi_heads.mask.feature_extractor.mask_fcn{i}" for i in range(1, 5)}}
C2_HEADS = {"rpn_conv": "conv_rpn_fpn2", "rpn_cls": "rpn_cls_logits_fpn2", "rpn_box": "rpn_bbox_pred_fpn2",
            "fc6": "fc6", "fc7": "fc7", "cls": "cls_score", "box": "bbox_pred", "deconv": "conv5_mask",
            "mask": "mask_fcn_logits", **{f"fcn{i}": f"_[mask]_fcn{i}" for i in range(1, 5)}}


def detectron2_state(f):
    def names(key):
        p = "backbone.bottom_up."
        base = p + "stem.conv1" if key == ("stem",) else \
            f"{p}res{key[0]}.{key[1]}." + ("shortcut" if key[2] == "shortcut" else f"conv{key[2]}")
        return base + ".weight", lambda leaf: f"{base}.norm.{leaf}"
    heads = {k: (f"{v}.weight", f"{v}.bias") for k, v in D2_HEADS.items()}
    sd = build_state(f, {**heads, "_counts": (81, 80, 80)}, names,
                     lambda kind, s: (f"backbone.fpn_{kind}{s}.weight", f"backbone.fpn_{kind}{s}.bias"))
    sd["proposal_generator.anchor_generator.cell_anchors.0"] = torch.randn(3, 4)
    sd["pixel_mean"] = torch.tensor([103.53, 116.28, 123.675]).view(3, 1, 1)
    sd["pixel_std"] = torch.ones(3, 1, 1)
    return sd


def mb_state(f, bn_leaves=("weight", "bias", "running_mean", "running_var")):
    def names(key):
        if key == ("stem",):
            return "backbone.body.stem.conv1.weight", lambda leaf: f"backbone.body.stem.bn1.{leaf}"
        s, b, j = key
        p = f"backbone.body.layer{s - 1}.{b}."
        if j == "shortcut":
            return p + "downsample.0.weight", lambda leaf: f"{p}downsample.1.{leaf}"
        return f"{p}conv{j}.weight", lambda leaf: f"{p}bn{j}.{leaf}"
    heads = {k: (f"{v}.weight", f"{v}.bias") for k, v in MB_HEADS.items()}
    kinds = {"lateral": "inner", "output": "layer"}
    sd = build_state(f, {**heads, "_counts": (81, 81, 81)}, names,
                     lambda kind, s: (f"backbone.fpn.fpn_{kinds[kind]}{s - 1}.weight",
                                      f"backbone.fpn.fpn_{kinds[kind]}{s - 1}.bias"), bn_leaves)
    for i in range(5):
        sd[f"rpn.anchor_generator.cell_anchors.{i}"] = torch.randn(3, 4)
    return sd


def caffe2_blobs(f, heads=True):
    """Detectron blob names; the AffineChannel layers have only _bn_s / _bn_b."""
    def names(key):
        if key == ("stem",):
            return "conv1_w", lambda leaf: {"weight": "res_conv1_bn_s", "bias": "res_conv1_bn_b"}[leaf]
        s, b, j = key
        base = f"res{s}_{b}_" + ("branch1" if j == "shortcut" else f"branch2{'abc'[j - 1]}")
        return base + "_w", lambda leaf: f"{base}_bn_{leaf[0] if leaf == 'bias' else 's'}"

    def fpn(kind, s):
        last = STAGES[s] - 1
        base = (f"fpn_inner_res{s}_{last}_sum" + ("" if s == 5 else "_lateral")) if kind == "lateral" \
            else f"fpn_res{s}_{last}_sum"
        return base + "_w", base + "_b"
    head_names = {k: (f"{v}_w", f"{v}_b") for k, v in C2_HEADS.items()}
    sd = build_state(f, {**head_names, "_counts": (81, 81, 81)}, names, fpn, ("weight", "bias"))
    if not heads:  # an ImageNet R-50.pkl: trunk + classifier
        sd = OrderedDict((k, v) for k, v in sd.items() if re.match(r"(conv1|res)", k))
        sd["fc1000_w"], sd["fc1000_b"] = f.conv(1000, 2048), f.vec(1000)
    sd["conv1_w_momentum"] = torch.zeros(64, 3, 7, 7)
    return OrderedDict((k, v.numpy()) for k, v in sd.items())


def randomise(model, seed):
    """Random biases and BN statistics (torchvision initialises many of them to constants)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0, generator=g)
            elif t.dim() == 1 and t.is_floating_point():
                t.normal_(0.0, 0.1, generator=g)
    return model.eval()


def to_legacy_torchvision_names(sd):
    """The names of torchvision's published maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth (before version 2)."""
    out = OrderedDict()
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue  # the published file uses FrozenBatchNorm2d
        k = re.sub(r"^rpn\.head\.conv\.0\.0\.", "rpn.head.conv.", k)
        k = re.sub(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.0\.", r"\1.", k)
        k = re.sub(r"^roi_heads\.mask_head\.(\d+)\.0\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}.", k)
        out[k] = v
    return out


class Py2Pickler(pickle._Pickler):
    """Writes str / bytes as Python 2 ``str`` (BINSTRING) and numpy under ``numpy.core``, like Detectron's files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str
