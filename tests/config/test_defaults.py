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
