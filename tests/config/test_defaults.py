"""The project's defaults: maskrcnn-benchmark compatibility, unsupported values, class count."""
import pytest

from maskrcnn.config import ConfigError, get_cfg, load_cfg, resolve_num_classes

MRCNN_BENCHMARK_KEYS = [
    "MODEL.BACKBONE.CONV_BODY", "MODEL.RPN.PRE_NMS_TOP_N_TRAIN", "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
    "MODEL.ROI_MASK_HEAD.RESOLUTION", "MODEL.MASK_ON", "MODEL.WEIGHT", "MODEL.DEVICE",
    "INPUT.MIN_SIZE_TRAIN", "INPUT.MAX_SIZE_TEST", "DATASETS.TRAIN", "DATALOADER.SIZE_DIVISIBILITY",
    "SOLVER.BASE_LR", "SOLVER.STEPS", "SOLVER.GAMMA", "SOLVER.WARMUP_FACTOR", "SOLVER.WARMUP_ITERS",
    "SOLVER.WARMUP_METHOD", "SOLVER.IMS_PER_BATCH", "SOLVER.CHECKPOINT_PERIOD", "SOLVER.WEIGHT_DECAY",
    "SOLVER.MOMENTUM", "TEST.IMS_PER_BATCH", "OUTPUT_DIR",
]


def test_maskrcnn_benchmark_keys_exist():
    cfg = get_cfg()
    for key in MRCNN_BENCHMARK_KEYS:
        node = cfg
        for part in key.split("."):
            node = node[part]


def test_get_cfg_returns_independent_copies():
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 1.0
    assert b.SOLVER.BASE_LR != 1.0


def test_benchmark_yaml_with_tuple_strings(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text('MODEL:\n  RPN:\n    ANCHOR_STRIDE: (4, 8, 16, 32, 64)\nSOLVER:\n  STEPS: (60000, 80000)\n')
    cfg = load_cfg(str(path))
    assert cfg.MODEL.RPN.ANCHOR_STRIDE == (4, 8, 16, 32, 64) and cfg.SOLVER.STEPS == (60000, 80000)
    assert cfg.is_frozen()


@pytest.mark.parametrize("key,value", [("MODEL.ROI_BOX_HEAD.PREDICTOR", "'FastRCNNPredictor'"), ("MODEL.RPN.FPN_POST_NMS_PER_BATCH", "True"),
                                       ("TEST.BBOX_AUG.ENABLED", "True")])
def test_unsupported_values_are_refused(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_cfg(None, [key, value])


@pytest.mark.parametrize("sizes", ["(800,)", "(800, 640)", "(640, 704, 800)"])
def test_range_sampling_needs_low_and_high(sizes):
    with pytest.raises(ConfigError, match=r"MIN_SIZE_TRAIN_SAMPLING 'range'.*give \(low, high\)"):
        load_cfg(None, ["INPUT.MIN_SIZE_TRAIN_SAMPLING", "range", "INPUT.MIN_SIZE_TRAIN", sizes])
    assert load_cfg(None, ["INPUT.MIN_SIZE_TRAIN_SAMPLING", "range", "INPUT.MIN_SIZE_TRAIN", "(640, 800)"])


def test_decreasing_steps_refused():
    with pytest.raises(ConfigError, match="increasing"):
        load_cfg(None, ["SOLVER.STEPS", "(10, 5)"])


def test_num_classes_resolution():
    cfg = get_cfg()
    resolved = resolve_num_classes(cfg, 80)
    assert resolved.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 81 and resolved.is_frozen()
    assert cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 0  # the caller's config is not modified
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 81
    assert resolve_num_classes(cfg, 80).MODEL.ROI_BOX_HEAD.NUM_CLASSES == 81  # explicit, agreeing
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 80
    with pytest.raises(ConfigError) as e:
        resolve_num_classes(cfg, 80, "coco_2017_train")
    assert "NUM_CLASSES is 80" in str(e.value) and "80 categories" in str(e.value) and "81" in str(e.value)


def test_shipped_configs_load():
    import glob
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    files = sorted(glob.glob(os.path.join(root, "configs", "**", "*.yaml"), recursive=True))
    assert len(files) >= 8
    for f in files:
        load_cfg(f)
    r101 = load_cfg(os.path.join(root, "configs", "e2e_mask_rcnn_R_101_FPN_1x.yaml"))
    assert r101.MODEL.BACKBONE.CONV_BODY == "R-101-FPN" and r101.MODEL.MASK_ON
    assert r101.SOLVER.STEPS == (60000, 80000) and r101.SOLVER.BASE_LR == 0.02
    cmd = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.0025", "SOLVER.MAX_ITER", "720000",
           "SOLVER.STEPS", "(480000, 640000)", "TEST.IMS_PER_BATCH", "1"]
    cfg = load_cfg(os.path.join(root, "configs", "e2e_mask_rcnn_R_50_FPN_1x.yaml"), cmd)
    assert cfg.SOLVER.STEPS == (480000, 640000) and cfg.SOLVER.MAX_ITER == 720000


@pytest.mark.parametrize("opts,words", [
    (["MODEL.FPN.USE_GN", "True", "MODEL.FPN.NORM", "FrozenBN"],
     ["MODEL.FPN.USE_GN = True", "MODEL.FPN.NORM = 'FrozenBN'", "two norms", "remove USE_GN"]),
    (["MODEL.ROI_MASK_HEAD.USE_GN", "True", "MODEL.ROI_MASK_HEAD.NORM", "BN"], ["MODEL.ROI_MASK_HEAD.USE_GN", "two norms"]),
    (["MODEL.ROI_BOX_HEAD.NORM", "BN"], ["MODEL.ROI_BOX_HEAD.NORM = 'BN'", "two fc layers", "FPNXconv1fcFeatureExtractor"]),
    (["MODEL.FPN.NORM", "SyncBN"], ["MODEL.FPN.NORM", "SyncBN"]),
    (["MODEL.RPN.NUM_CONVS", "0"], ["MODEL.RPN.NUM_CONVS"]),
])
def test_norm_and_rpn_conv_keys_are_checked(opts, words):
    with pytest.raises(ConfigError) as e:
        load_cfg(opts=opts)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_use_gn_and_norm_gn_build_the_same_model():
    import torch
    from maskrcnn.modeling import build_model

    def keys(opts):
        cfg = load_cfg(opts=["MODEL.DEVICE", "cpu", "MODEL.ROI_BOX_HEAD.NUM_CLASSES", 3,
                             "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", "FPNXconv1fcFeatureExtractor", *opts])
        torch.manual_seed(0)
        return {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}

    gn = keys(["MODEL.FPN.USE_GN", True, "MODEL.ROI_BOX_HEAD.USE_GN", True, "MODEL.ROI_MASK_HEAD.USE_GN", True])
    assert gn == keys(["MODEL.FPN.NORM", "GN", "MODEL.ROI_BOX_HEAD.NORM", "GN", "MODEL.ROI_MASK_HEAD.NORM", "GN"])
    assert "backbone.fpn.layer_blocks.0.1.weight" in gn and "backbone.fpn.layer_blocks.0.1.running_mean" not in gn
    bn = keys(["MODEL.FPN.NORM", "BN", "MODEL.ROI_BOX_HEAD.NORM", "FrozenBN", "MODEL.RPN.NUM_CONVS", 3])
    assert {"backbone.fpn.layer_blocks.0.1.running_mean", "roi_heads.box.feature_extractor.xconvs.1.running_var",
            "rpn.head.extra_convs.1.weight"} <= set(bn)
    assert "backbone.fpn.layer_blocks.0.0.bias" not in bn and "rpn.head.extra_convs.2.weight" not in bn
