"""RPN head layout and proposal selection (against torchvision's RPN)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.ops import box_iou

from maskrcnn.modeling.box_coder import BoxCoder
from maskrcnn.modeling.rpn.anchor_generator import AnchorGenerator
from maskrcnn.modeling.rpn.head import RPNHead
from maskrcnn.modeling.rpn.inference import ProposalSelector

RATIOS = (0.5, 1.0, 2.0)


def level_features(gen, n, c, padded_hw, strides):
    h, w = padded_hw
    return [torch.randn(n, c, math.ceil(h / s), math.ceil(w / s), generator=gen) for s in strides]


# ----------------------------------------------------------------------- head
def test_rpn_head_shapes_and_order():
    torch.manual_seed(0)
    head = RPNHead(in_channels=8, num_anchors=3)
    for layer in (head.conv, head.cls_logits, head.bbox_pred):  # non-trivial outputs
        torch.nn.init.normal_(layer.bias, std=0.5)
    gen = torch.Generator().manual_seed(0)
    feats = level_features(gen, 2, 8, (64, 96), (4, 8, 16))
    logits, deltas = head(feats)
    r = sum(f.shape[-2] * f.shape[-1] * 3 for f in feats)
    assert logits.shape == (2, r) and deltas.shape == (2, r, 4)
    # reference: per level conv outputs flattened by torchvision's helper
    cls, reg = [], []
    for f in feats:
        t = F.relu(F.conv2d(f, head.conv.weight, head.conv.bias, padding=1))
        cls.append(F.conv2d(t, head.cls_logits.weight, head.cls_logits.bias))
        reg.append(F.conv2d(t, head.bbox_pred.weight, head.bbox_pred.bias))
    tv_cls, tv_reg = concat_box_prediction_layers(cls, reg)
    torch.testing.assert_close(logits.reshape(-1, 1), tv_cls)
    torch.testing.assert_close(deltas.reshape(-1, 4), tv_reg)
    # explicit index: level 0, image 1, cell (y=2, x=5), anchor 1
    w0 = feats[0].shape[-1]
    idx = (2 * w0 + 5) * 3 + 1
    torch.testing.assert_close(logits[1, idx], cls[0][1, 1, 2, 5])
    torch.testing.assert_close(deltas[1, idx], reg[0][1, 4:8, 2, 5])
    # the order agrees with the anchors: anchor idx is centred on that cell
    anchors, _ = AnchorGenerator(sizes=(32, 64, 128), strides=(4, 8, 16), aspect_ratios=RATIOS)(feats)
    a = anchors[idx]
    torch.testing.assert_close((a[0] + a[2]) / 2, torch.tensor(5 * 4.0))
    torch.testing.assert_close((a[1] + a[3]) / 2, torch.tensor(2 * 4.0))


def test_rpn_head_init_and_gradients():
    head = RPNHead(in_channels=4, num_anchors=3)
    for layer in (head.conv, head.cls_logits, head.bbox_pred):
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        assert 0.005 < float(layer.weight.detach().std()) < 0.02
    logits, deltas = head([torch.randn(1, 4, 5, 6)])
    (logits.sum() + deltas.sum()).backward()
    assert head.conv.weight.grad is not None


# ------------------------------------------------------------------ selection
def make_inputs(seed, image_sizes, strides=(4, 8, 16, 32, 64)):
    gen = torch.Generator().manual_seed(seed)
    ph = int(math.ceil(max(h for h, _ in image_sizes) / 64) * 64)
    pw = int(math.ceil(max(w for _, w in image_sizes) / 64) * 64)
    feats = level_features(gen, len(image_sizes), 1, (ph, pw), strides)
    sizes = tuple(32 * 2 ** i for i in range(len(strides)))
    anchors, counts = AnchorGenerator(sizes=sizes, strides=strides, aspect_ratios=RATIOS)(feats)
    n, r = len(image_sizes), anchors.shape[0]
    objectness = torch.randn(n, r, generator=gen) * 3
    deltas = torch.randn(n, r, 4, generator=gen) * 0.3
    return anchors, counts, objectness, deltas


def torchvision_proposals(anchors, counts, objectness, deltas, image_sizes, pre, post, nms):
    rpn = RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, dict(training=pre, testing=pre),
                                dict(training=post, testing=post), nms, score_thresh=0.0)
    rpn.eval()
    n = objectness.shape[0]
    proposals = TVBoxCoder((1.0, 1.0, 1.0, 1.0)).decode(deltas.reshape(-1, 4), [anchors] * n).view(n, -1, 4)
    return rpn.filter_proposals(proposals, objectness.reshape(-1, 1), image_sizes, counts)


@pytest.mark.parametrize("pre,post,nms", [(300, 100, 0.7), (50, 1000, 0.5), (2000, 2000, 0.7)])
def test_proposals_match_torchvision(pre, post, nms):
    image_sizes = [(200, 300), (256, 180)]
    anchors, counts, objectness, deltas = make_inputs(0, image_sizes)
    assert min(counts) < 2000 < max(counts)  # pre_nms_top_n caps some levels and not others
    selector = ProposalSelector(box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)), pre_nms_top_n=pre,
                                post_nms_top_n=post, nms_thresh=nms, min_size=0)
    ours = selector(anchors, counts, objectness, deltas, image_sizes)
    boxes, scores = torchvision_proposals(anchors, counts, objectness, deltas, image_sizes, pre, post, nms)
    assert len(ours) == 2
    for bl, b, s, hw in zip(ours, boxes, scores, image_sizes):
        assert bl.size == hw
        assert len(bl) == len(b) > 0
        # Same scores in the same (descending) order; boxes of equal score may come in another
        # order (torchvision orders them with an unstable sort, this project by level then logit).
        torch.testing.assert_close(bl.get_field("objectness"), s, rtol=0, atol=0)
        assert (s[:-1] >= s[1:]).all()
        torch.testing.assert_close(_by_score_then_box(bl.bbox, s), _by_score_then_box(b, s), rtol=0, atol=1e-4)


def _by_score_then_box(boxes, scores):
    """Boxes ordered by descending score, ties by their coordinates."""
    keys = [boxes[:, i].numpy() for i in range(3, -1, -1)] + [-scores.numpy()]
    return boxes[torch.from_numpy(np.lexsort(keys))]


@pytest.mark.parametrize("seed", range(3))
def test_proposal_properties(seed):
    image_sizes = [(190, 250), (256, 256), (100, 140)]
    anchors, counts, objectness, deltas = make_inputs(seed, image_sizes)
    post, thresh = 150, 0.6
    selector = ProposalSelector(box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)), pre_nms_top_n=400,
                                post_nms_top_n=post, nms_thresh=thresh, min_size=2.0)
    out = selector(anchors, counts, objectness, deltas, image_sizes)
    for bl, (h, w) in zip(out, image_sizes):
        b = bl.bbox
        assert 0 < len(bl) <= post
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
        assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] - b[:, 0]) >= 2.0).all() and ((b[:, 3] - b[:, 1]) >= 2.0).all()
        p = bl.get_field("objectness")
        assert ((p >= 0) & (p <= 1)).all()
        assert (p[:-1] >= p[1:]).all()  # best first


def test_single_level_nms_and_topk():
    image_sizes = [(256, 256)]
    anchors, counts, objectness, deltas = make_inputs(5, image_sizes, strides=(8,))
    thresh = 0.5
    selector = ProposalSelector(box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)), pre_nms_top_n=500,
                                post_nms_top_n=10_000, nms_thresh=thresh, min_size=0)
    bl = selector(anchors, counts, objectness, deltas, image_sizes)[0]
    iou = box_iou(bl.bbox, bl.bbox)
    iou.fill_diagonal_(0)
    assert iou.max() <= thresh
    # only the pre_nms_top_n best anchors can appear
    top = objectness[0].topk(500).values.sigmoid()
    assert bl.get_field("objectness").min() >= top.min()
    assert len(bl) <= 500
    # a tighter post_nms_top_n keeps the best prefix
    selector.post_nms_top_n = 7
    few = selector(anchors, counts, objectness, deltas, image_sizes)[0]
    assert len(few) == 7
    torch.testing.assert_close(few.bbox, bl.bbox[:7])


def test_min_size_removes_small_boxes():
    anchors = torch.tensor([[10.0, 10.0, 20.0, 20.0], [30.0, 30.0, 31.0, 40.0], [50.0, 50.0, 90.0, 60.0]])
    objectness = torch.tensor([[1.0, 2.0, 0.5]])
    deltas = torch.zeros(1, 3, 4)
    selector = ProposalSelector(box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)), pre_nms_top_n=10,
                                post_nms_top_n=10, nms_thresh=0.7, min_size=5)
    bl = selector(anchors, [3], objectness, deltas, [(100, 80)])[0]
    # the 1-pixel-wide box goes; the last one is clipped to x <= 80 and kept
    torch.testing.assert_close(bl.bbox, torch.tensor([[10.0, 10.0, 20.0, 20.0], [50.0, 50.0, 80.0, 60.0]]))
    torch.testing.assert_close(bl.get_field("objectness"), torch.sigmoid(torch.tensor([1.0, 0.5])))


def test_nms_threads_give_the_same_proposals(monkeypatch):
    """The per-image CPU NMS calls run on a thread pool; the kept boxes are those of the
    sequential calls, in the same order."""
    import maskrcnn.modeling.rpn.inference as rpn_inference

    gen = torch.Generator().manual_seed(3)
    n, k = 6, 900
    xy = torch.rand(n, k, 2, generator=gen) * 150
    boxes = torch.cat([xy, xy + torch.rand(n, k, 2, generator=gen) * 60 + 1], -1)
    scores = torch.rand(n, k, generator=gen)
    levels = [(0, 500), (500, 400)]
    pool = rpn_inference._cpu_pool()
    if pool is None:
        pytest.skip("one intra-op thread: no NMS pool")
    threaded = rpn_inference.nms_per_level(boxes, scores, levels, 0.7, 220)
    monkeypatch.setattr(rpn_inference, "_cpu_pool", lambda: None)
    sequential = rpn_inference.nms_per_level(boxes, scores, levels, 0.7, 220)
    assert torch.equal(threaded, sequential)
    assert 0 < int(sequential.sum()) < n * k  # NMS suppressed some boxes, kept others
