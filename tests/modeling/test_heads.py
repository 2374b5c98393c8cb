"""The heads' public API: forward (raw predictions), losses (dict), inference (per image).

Loss values are pinned where they do not depend on random sampling: the mask loss on fixed
positives (values printed by the code before mask targets moved to the device; polygons and
RLE alike), and the RPN / box losses against their plain definitions (boolean selection of
the sampled elements) when every candidate is sampled.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from conftest import square_target, tiny_cfg
from maskrcnn.modeling import build_model
from maskrcnn.modeling.balanced_sampler import BalancedPositiveNegativeSampler
from maskrcnn.modeling.box_coder import BoxCoder
from maskrcnn.modeling.matcher import Matcher
from maskrcnn.modeling.roi_heads.box_head.loss import box_head_losses
from maskrcnn.modeling.roi_heads.box_head.proposal_sampler import ProposalSampler
from maskrcnn.modeling.rpn.loss import RPNLoss
from maskrcnn.structures.bounding_box import BoxList, box_iou
from maskrcnn.structures.segmentation_mask import InstanceMasks

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def _star(rng, cx, cy, r0, r1, n):
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(r0, r1, n)
    return np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).ravel().tolist()


def star_targets(seed=0, with_rle=False):
    """Two images of different sizes; star polygons, an overlapping two-part instance, and
    (``with_rle``) the last instance of each image as RLE."""
    rng = np.random.default_rng(seed)
    out = []
    for (h, w), n in (((96, 128), 3), ((120, 80), 2)):
        polys, rles, boxes = [], [], []
        for i in range(n):
            cx, cy = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.3 * h, 0.7 * h)
            parts = [_star(rng, cx, cy, 5, 0.3 * min(h, w), int(rng.integers(5, 12)))]
            if i == 1:
                parts.append(_star(rng, cx + 8, cy - 6, 3, 12, 6))
            p = np.concatenate([np.asarray(q).reshape(-1, 2) for q in parts])
            boxes.append([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])
            rle = mask_utils.merge(mask_utils.frPyObjects(parts, h, w)) if with_rle and i == n - 1 else None
            rles.append(rle)
            polys.append(None if rle is not None else parts)
        t = BoxList(torch.tensor(boxes, dtype=torch.float32).clamp(min=0), (h, w))
        t.bbox[:, 0::2] = t.bbox[:, 0::2].clamp(max=w)
        t.bbox[:, 1::2] = t.bbox[:, 1::2].clamp(max=h)
        t.add_field("labels", torch.tensor(rng.integers(1, 4, n), dtype=torch.int64))
        t.add_field("masks", InstanceMasks(polys, (h, w), rles=rles))
        out.append(t)
    return out


def jittered_positives(targets, seed=1, per_gt=6):
    """Boxes around each ground truth, as the box head's positives (labels, matched_idxs)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in targets:
        h, w = t.size
        idx = torch.arange(len(t)).repeat_interleave(per_gt)
        b = t.bbox[idx]
        b = b + (torch.rand(b.shape, generator=g) - 0.5) * 0.4 * (b[:, 2:] - b[:, :2]).repeat(1, 2)
        b = torch.stack([b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)], 1)
        p = BoxList(b, (h, w))
        p.add_field("labels", t.get_field("labels")[idx])
        p.add_field("matched_idxs", idx)
        out.append(p)
    return out


def _model_and_features():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=g),
              torch.randint(0, 256, (3, 120, 80), dtype=torch.uint8, generator=g)]
    return model, model.backbone(model.preprocess(images).tensors)


# Printed by the code before the mask targets were computed batched on the device.
MASK_LOSS_PINNED = {False: 1.2659858465194702, True: 1.2633569240570068}


@pytest.mark.parametrize("with_rle", [False, True])
def test_mask_loss_pinned_on_fixed_positives(with_rle):
    model, features = _model_and_features()
    targets = star_targets(0, with_rle)
    positives = jittered_positives(targets)
    head = model.roi_heads.mask
    logits = head(features, positives)
    assert logits.shape == (30, 4, 28, 28)  # 5 instances x 6 boxes
    losses = head.losses(logits, positives, targets)
    assert set(losses) == {"loss_mask"}
    assert float(losses["loss_mask"].detach()) == pytest.approx(MASK_LOSS_PINNED[with_rle], rel=1e-6)
    head.loss_weight = 2.0  # the weight is applied in the head
    assert float(head.losses(logits, positives, targets)["loss_mask"].detach()) == pytest.approx(
        2 * MASK_LOSS_PINNED[with_rle], rel=1e-6)


def test_mask_loss_without_positives_is_a_connected_zero():
    model, features = _model_and_features()
    targets = star_targets(0)
    none = [p[torch.zeros(len(p), dtype=torch.bool)] for p in jittered_positives(targets)]
    logits = model.roi_heads.mask(features, none)
    loss = model.roi_heads.mask.losses(logits, none, targets)["loss_mask"]
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def test_mask_inference_returns_new_boxlists():
    model, features = _model_and_features()
    detections = [square_target((96, 128), [[10, 10, 50, 60], [60, 20, 120, 90]], [1, 2]),
                  square_target((120, 80), [], [])]
    before = [set(d.fields()) for d in detections]
    head = model.roi_heads.mask
    out = head.inference(head(features, detections), detections)
    assert [set(d.fields()) for d in detections] == before  # the caller's objects are untouched
    assert [len(o) for o in out] == [2, 0] and all(o is not d for o, d in zip(out, detections))
    assert out[0].get_field("mask").shape == (2, 1, 28, 28)
    assert torch.equal(out[0].get_field("labels"), detections[0].get_field("labels"))


def _candidates(seed, n):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 80
    return torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 40], 1)


def test_rpn_loss_equals_its_definition_when_every_anchor_is_sampled():
    anchors = _candidates(0, 300)
    gts = [square_target((128, 128), [[10, 10, 50, 60], [60, 20, 120, 90]], [1, 2]),
           square_target((128, 128), [], [])]
    g = torch.Generator().manual_seed(1)
    objectness, deltas = torch.randn(2, 300, generator=g), torch.randn(2, 300, 4, generator=g) * 0.1
    loss = RPNLoss(matcher=Matcher(0.7, 0.3, allow_low_quality_matches=True),
                   sampler=BalancedPositiveNegativeSampler(10_000, 0.5), box_coder=BoxCoder((1.0,) * 4),
                   smooth_l1_beta=1 / 9, loss_weight=3.0)
    got = loss(anchors, objectness, deltas, gts)
    labels, reg = loss.targets(anchors, gts)
    sampled, pos = labels >= 0, labels == 1
    assert pos.any() and (labels == -1).any()
    num = sampled.sum()
    obj = F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled], reduction="sum") / num
    box = F.smooth_l1_loss(deltas[pos], reg[pos], beta=1 / 9, reduction="sum") / num
    torch.testing.assert_close(got["loss_objectness"], 3 * obj)
    torch.testing.assert_close(got["loss_rpn_box_reg"], 3 * box)


def test_proposal_sampler_order_counts_and_box_losses():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    sampler = ProposalSampler(matcher=Matcher(0.5, 0.3), sampler=BalancedPositiveNegativeSampler(10_000, 0.25),
                              box_coder=coder)
    gts = [square_target((128, 128), [[10, 10, 50, 60], [60, 20, 120, 90]], [1, 3]),
           square_target((128, 128), [], [])]
    proposals = [BoxList(_candidates(2, 200), (128, 128)), BoxList(_candidates(3, 50), (128, 128))]
    sampled, num_pos = sampler(proposals, gts)
    for s, k, p, gt in zip(sampled, num_pos, proposals, gts):
        cand = torch.cat([p.bbox, gt.bbox])
        labels = s.get_field("labels")
        assert k == int((labels > 0).sum()) and (labels[:k] > 0).all() and (labels[k:] == 0).all()
        # every non-ignored candidate is sampled once (the budget exceeds them), positives first,
        # each group in candidate order
        iou = box_iou(gt.bbox, cand) if len(gt) else torch.zeros(0, len(cand))
        best = iou.max(0).values if len(gt) else torch.zeros(len(cand))
        want_pos = torch.nonzero(best >= 0.5).flatten()
        want_neg = torch.nonzero(best < 0.3).flatten()
        assert torch.equal(s.bbox, cand[torch.cat([want_pos, want_neg])])
    assert num_pos[1] == 0
    # box losses against their definition
    g = torch.Generator().manual_seed(4)
    k = sum(len(s) for s in sampled)
    logits, regression = torch.randn(k, 4, generator=g), torch.randn(k, 16, generator=g)
    got = box_head_losses(logits, regression, sampled, smooth_l1_beta=1.0, loss_weight=0.5)
    labels = torch.cat([s.get_field("labels") for s in sampled])
    targets = torch.cat([s.get_field("regression_targets") for s in sampled])
    pos = torch.nonzero(labels > 0).flatten()
    box = F.smooth_l1_loss(regression.view(k, 4, 4)[pos, labels[pos]], targets[pos], beta=1.0, reduction="sum") / k
    torch.testing.assert_close(got["loss_classifier"], 0.5 * F.cross_entropy(logits, labels))
    torch.testing.assert_close(got["loss_box_reg"], 0.5 * box)


def test_box_losses_of_no_proposals_are_connected_zeros():
    logits, regression = torch.zeros(0, 4, requires_grad=True), torch.zeros(0, 16, requires_grad=True)
    empty = BoxList(torch.zeros(0, 4), (10, 10))
    empty.add_field("labels", torch.zeros(0, dtype=torch.int64))
    empty.add_field("regression_targets", torch.zeros(0, 4))
    got = box_head_losses(logits, regression, [empty], smooth_l1_beta=1.0)
    assert all(float(v.detach()) == 0.0 and v.requires_grad for v in got.values())


def test_heads_public_api_and_dispatch():
    model, features = _model_and_features()
    model.train()
    targets = star_targets(0)
    sizes = [(96, 128), (120, 80)]
    rpn_out = model.rpn(features)
    assert rpn_out.objectness.shape == rpn_out.deltas.shape[:2] == (2, rpn_out.anchors.shape[0])
    assert sum(rpn_out.counts) == rpn_out.anchors.shape[0]
    assert set(model.rpn.losses(rpn_out, targets)) == {"loss_objectness", "loss_rpn_box_reg"}
    train = model.rpn.inference(rpn_out, sizes, training=True)
    test = model.rpn.inference(rpn_out, sizes)
    assert [t.size for t in test] == sizes and all(len(t) <= 100 for t in train + test)
    torch.manual_seed(0)
    losses = model.roi_heads(features, train, targets)
    torch.manual_seed(0)
    assert losses.keys() == model.roi_heads.loss(features, train, targets).keys() == {
        "loss_classifier", "loss_box_reg", "loss_mask"}
    detections = model.roi_heads(features, test)
    assert [d.size for d in detections] == sizes
    assert all(set(d.fields()) == {"scores", "labels", "mask"} for d in detections)
    box = model.roi_heads.box
    preds = box(features, test)
    assert preds[0].shape == (sum(len(t) for t in test), 4) and preds[1].shape[1] == 16
    assert [len(d) for d in box.inference(preds, test)] == [len(d) for d in detections]


def _positives_then_negatives(targets, per_gt=6, negatives=10):
    """Per image, ``jittered_positives`` followed by ``negatives`` background boxes (label 0), as
    the proposal sampler orders them; and the number of positives."""
    out, counts = [], []
    for p in jittered_positives(targets, per_gt=per_gt):
        h, w = p.size
        neg = BoxList(torch.tensor([[0.0, 0.0, 8.0, 8.0]]).repeat(negatives, 1), (h, w))
        neg.add_field("labels", torch.zeros(negatives, dtype=torch.int64))
        neg.add_field("matched_idxs", torch.zeros(negatives, dtype=torch.int64))
        both = BoxList(torch.cat([p.bbox, neg.bbox]), (h, w))
        for name in ("labels", "matched_idxs"):
            both.add_field(name, torch.cat([p.get_field(name), neg.get_field(name)]))
        out.append(both)
        counts.append(len(p))
    return out, counts


def test_mask_training_positives_capped_to_a_uniform_random_subset():
    """MODEL.ROI_MASK_HEAD.MAX_TRAIN_PER_IMAGE: at most that many of an image's positives, drawn
    uniformly, kept in order, never a negative; 0 or a cap above the count keeps them all."""
    cfg = tiny_cfg()
    cfg.MODEL.ROI_MASK_HEAD.MAX_TRAIN_PER_IMAGE = 5
    head = build_model(cfg).roi_heads.mask
    sampled, counts = _positives_then_negatives(star_targets(0))
    s, k = sampled[0], counts[0]
    assert k > 5 and len(s) > k
    torch.manual_seed(0)
    hits = torch.zeros(len(s))
    draws = 600
    for _ in range(draws):
        picked = head.select_positives(s, k)
        # rows of s: find which by their boxes (the jittered boxes are distinct)
        rows = torch.cdist(picked.bbox, s.bbox).argmin(1)
        assert len(picked) == 5 and bool((rows[1:] > rows[:-1]).all()) and int(rows.max()) < k
        assert torch.equal(picked.get_field("labels"), s.get_field("labels")[rows])
        assert torch.equal(picked.get_field("matched_idxs"), s.get_field("matched_idxs")[rows])
        hits[rows] += 1
    expected = draws * 5 / k
    assert bool((hits[:k] > 0.6 * expected).all()) and bool((hits[:k] < 1.4 * expected).all()), hits[:k]
    assert hits[k:].sum() == 0
    for cap in (0, k, k + 3):
        head.max_train_per_image = cap
        kept = head.select_positives(s, k)
        assert torch.equal(kept.bbox, s.bbox[:k]) and torch.equal(kept.get_field("labels"), s.get_field("labels")[:k])
    with pytest.raises(ValueError, match="max_train_per_image"):
        type(head)(pooler=head.pooler, feature_extractor=head.feature_extractor, predictor=head.predictor,
                   resolution=head.resolution, max_train_per_image=-1)


def test_mask_loss_of_a_training_step_runs_on_the_capped_positives():
    """In ROIHeads.loss the mask head sees min(positives, cap) boxes per image, and with a cap at
    or above every image's positives the losses are those of no cap."""
    model, features = _model_and_features()
    model.train()
    targets = star_targets(0)
    proposals = model.rpn.inference(model.rpn(features), [(96, 128), (120, 80)], training=True)
    seen = []
    hook = model.roi_heads.mask.feature_extractor.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    box = model.roi_heads.box
    torch.manual_seed(3)
    _, num_pos = box.sample(proposals, targets)
    assert min(num_pos) > 2, num_pos  # the ground truth boxes are positives
    results = {}
    for cap in (0, max(num_pos), 2):
        model.roi_heads.mask.max_train_per_image = cap
        seen.clear()
        torch.manual_seed(3)
        results[cap] = model.roi_heads.loss(features, proposals, targets)
        want = sum(num_pos) if cap == 0 else sum(min(k, cap) for k in num_pos)
        assert seen == [want]
    hook.remove()
    for name in results[0]:
        torch.testing.assert_close(results[max(num_pos)][name], results[0][name])
    assert not torch.equal(results[2]["loss_mask"], results[0]["loss_mask"])
