"""What the keys that used to be accepted and ignored now do: GROUP_NORM.EPSILON / DIM_PER_GP,
RPN.POST_NMS_TOP_N_*, RPN.STRADDLE_THRESH; and the value tables of config/checks.py agree with
the modules that use them."""
import pytest
import torch
from torch import nn

from conftest import tiny_cfg
from maskrcnn.config import ConfigError, check_supported, load_cfg
from maskrcnn.config.checks import CHOICES, RESNET_DEPTHS
from maskrcnn.modeling import build_model
from maskrcnn.layers.conv_norm import make_norm
from maskrcnn.modeling.backbone.resnet import RESNET_SPECS
from maskrcnn.modeling.box_coder import BoxCoder
from maskrcnn.modeling.rpn.inference import ProposalSelector
from maskrcnn.structures.bounding_box import BoxList


def _group_norms(cfg):
    check_supported(cfg)
    norms = [m for m in build_model(cfg).backbone.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) > 20  # body and FPN
    return norms


def test_group_norm_epsilon_and_channels_per_group():
    cfg = tiny_cfg()
    cfg.MODEL.FPN.USE_GN = True
    assert {m.eps for m in _group_norms(cfg)} == {1e-5} and {m.num_groups for m in _group_norms(cfg)} == {4}
    cfg.MODEL.GROUP_NORM.EPSILON = 1e-3
    assert {m.eps for m in _group_norms(cfg)} == {1e-3}
    cfg.MODEL.GROUP_NORM.NUM_GROUPS, cfg.MODEL.GROUP_NORM.DIM_PER_GP = -1, 8
    assert {m.num_channels // m.num_groups for m in _group_norms(cfg)} == {8}  # 16, 32, 64, ... channels
    cfg.MODEL.GROUP_NORM.NUM_GROUPS = 4  # both given: maskrcnn-benchmark's rule, one of them must be -1
    with pytest.raises(ConfigError, match="MODEL.GROUP_NORM.*exactly one"):
        check_supported(cfg)


def _select(level_cap):
    """Two levels of 20 anchors in disjoint x ranges, zero deltas: the proposals are the anchors."""
    torch.manual_seed(0)
    x = torch.cat([torch.arange(20) * 4.0, 200 + torch.arange(20) * 4.0])
    anchors = torch.stack([x, torch.zeros(40), x + 3, torch.full((40,), 3.0)], 1)
    selector = ProposalSelector(box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)), pre_nms_top_n=10, post_nms_top_n=100,
                                nms_thresh=0.7, min_size=0, level_post_nms_top_n=level_cap)
    out = selector(anchors, [20, 20], torch.randn(2, 40), torch.zeros(2, 40, 4), [(10, 300), (10, 300)])
    return [(int((b.bbox[:, 0] < 100).sum()), int((b.bbox[:, 0] >= 100).sum()), b) for b in out]


def test_post_nms_top_n_caps_each_level():
    free = _select(None)
    assert all(low == high == 10 for low, high, _ in free)  # pre_nms_top_n per level, nothing overlaps
    assert all(low == high == 10 for low, high, _ in _select(10))  # a cap >= pre_nms_top_n: no change
    for (low, high, capped), (_, _, full) in zip(_select(3), free):
        assert low == high == 3
        for first_level in (True, False):  # the 3 best of each level
            def level(b):
                return (b.bbox[:, 0] < 100) == first_level
            best = full.get_field("objectness")[level(full)].topk(3).values
            assert torch.equal(capped.get_field("objectness")[level(capped)].sort(descending=True).values, best)


def test_straddle_thresh_ignores_anchors_crossing_the_border():
    cfg = tiny_cfg()
    image = (64, 96)  # (h, w)
    anchors = torch.tensor([[10.0, 10, 30, 30],    # inside
                            [-8.0, 10, 20, 30],    # 8 px left of the image
                            [80.0, 40, 100, 70]])  # 4 px right, 6 px below
    gt = BoxList(torch.tensor([[12.0, 12, 30, 30]]), image)
    empty = BoxList(torch.zeros(0, 4), image)
    labels = {}
    for thresh in (-1, 0, 5, 10):
        cfg.MODEL.RPN.STRADDLE_THRESH = thresh
        check_supported(cfg)
        loss = build_model(cfg).rpn.loss_fn
        labels[thresh] = [loss.targets(anchors, [t])[0][0].tolist() for t in (gt, empty)]
    assert labels[-1] == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # every anchor is used (the default)
    assert labels[0] == [[1.0, -1.0, -1.0], [0.0, -1.0, -1.0]]  # maskrcnn-benchmark's 0
    assert labels[5] == [[1.0, -1.0, -1.0], [0.0, -1.0, -1.0]]  # 6 px below is more than 5
    assert labels[10] == labels[-1]


def test_choices_agree_with_the_modules():
    from maskrcnn.data.datasets.check import CHECK_LEVELS
    from maskrcnn.data.transforms import RESIZE_MODES, SIZE_SAMPLINGS
    from maskrcnn.layers.paste_rules import PASTE_RULES
    from maskrcnn.solver import build as solver_build

    assert CHOICES["MODEL.ROI_MASK_HEAD.PASTE_RULE"][0] == tuple(PASTE_RULES)
    assert CHOICES["INPUT.RESIZE_MODE"][0] == tuple(RESIZE_MODES)
    assert CHOICES["INPUT.MIN_SIZE_TRAIN_SAMPLING"][0] == tuple(SIZE_SAMPLINGS)
    assert CHOICES["DATASETS.CHECK"][0] == tuple(CHECK_LEVELS)
    assert tuple(sorted(RESNET_SPECS)) == tuple(sorted(RESNET_DEPTHS))
    for norm in CHOICES["MODEL.RESNETS.NORM"][0]:
        assert isinstance(make_norm(norm)(8), nn.Module)
    for name in CHOICES["SOLVER.LR_SCHEDULER"][0]:
        assert hasattr(solver_build, name)


def test_maskrcnn_benchmark_gn_config_loads(tmp_path):
    path = tmp_path / "gn.yaml"
    path.write_text("MODEL:\n  RESNETS:\n    STEM_FUNC: StemWithGN\n    TRANS_FUNC: BottleneckWithGN\n"
                    "    NORM: GN\n  GROUP_NORM:\n    DIM_PER_GP: -1\n    NUM_GROUPS: 32\n    EPSILON: 0.00001\n")
    assert load_cfg(str(path)).MODEL.RESNETS.TRANS_FUNC == "BottleneckWithGN"
    with pytest.raises(ConfigError, match="MODEL.RESNETS.TRANS_FUNC"):
        load_cfg(str(path), ["MODEL.RESNETS.NORM", "FrozenBN"])
