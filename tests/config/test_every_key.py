"""Every key of the defaults is honoured or refused (issue 10 #3).

For each key (enumerated from ``get_cfg()``, so a new key without an entry in ``PROOFS`` fails),
the config with the key changed either builds something different from the config without the
change - the model, the data (datasets, loaders, transforms), the solver, the training hooks, what
``tools/test_net.py`` evaluates, the distributed set-up, the rescaled schedule - or is refused by
``check_supported`` with a ConfigError naming the key. Both configs get the same ``context``
first (e.g. a cosine schedule to prove ``COSINE_END_FACTOR``). What is built is compared through
:func:`fingerprint.fingerprint`, which is checked to be deterministic.
"""
import argparse
import json
import logging
import re
import shutil
import warnings

import pytest
import torch

from conftest import tiny_cfg
from fingerprint import fingerprint
from maskrcnn.config import CfgNode, ConfigError, check_supported, get_cfg
from maskrcnn.data.build import build_test_loaders, build_train_dataset, build_train_loader
from maskrcnn.data.datasets.shapes import ensure_shapes_dataset
from maskrcnn.engine import launch, run
from maskrcnn.modeling import build_model
from maskrcnn.solver import make_lr_scheduler, make_optimizer
from maskrcnn.solver.scaling import auto_scale_workers
from maskrcnn.utils.errors import UserError

MODEL, DATA, SOLVER, HOOKS, TEST_RUN, LAUNCH, SCALING, REFUSED, TRAINER = (
    "model", "data", "solver", "hooks", "test_run", "launch", "scaling", "refused", "trainer")
R26 = {"MODEL.BACKBONE.CONV_BODY": "R-26-FPN", "MODEL.RESNETS.WIDTH_PER_GROUP": 8}  # bottleneck blocks
FROZEN_BN = {"MODEL.RESNETS.NORM": "FrozenBN"}
SCALES = (0.5, 0.25, 0.125, 0.0625)
XCONV = {"MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR": "FPNXconv1fcFeatureExtractor", "MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM": 16}

# key -> (changed value (or f(paths) -> value), how it is proven, context applied to both configs)
PROOFS = {
    "MODEL.META_ARCHITECTURE": ("MaskRCNN", REFUSED, {}),
    "MODEL.DEVICE": ("meta", MODEL, {}),
    "MODEL.MASK_ON": (False, MODEL, {}),
    "MODEL.RPN_ONLY": (True, MODEL, {}),
    "MODEL.WEIGHT": (lambda p: p["weights_b"], TEST_RUN, {}),
    "MODEL.CHANNELS_LAST": (True, MODEL, {}),
    "MODEL.BACKBONE.CONV_BODY": ("R-26-FPN", MODEL, {}),
    "MODEL.BACKBONE.FREEZE_CONV_BODY_AT": (2, MODEL, {}),
    "MODEL.BACKBONE.OUT_CHANNELS": (16, MODEL, {}),
    "MODEL.RESNETS.NUM_GROUPS": (2, MODEL, R26),
    "MODEL.RESNETS.WIDTH_PER_GROUP": (4, MODEL, R26),
    "MODEL.RESNETS.STRIDE_IN_1X1": (True, MODEL, R26),
    "MODEL.RESNETS.TRANS_FUNC": ("BottleneckWithGN", REFUSED, FROZEN_BN),
    "MODEL.RESNETS.STEM_FUNC": ("StemWithGN", REFUSED, FROZEN_BN),
    "MODEL.RESNETS.RES5_DILATION": (2, MODEL, {}),
    "MODEL.RESNETS.STEM_OUT_CHANNELS": (8, MODEL, {}),
    "MODEL.RESNETS.RES2_OUT_CHANNELS": (8, MODEL, {}),
    "MODEL.RESNETS.NORM": ("BN", MODEL, {}),
    "MODEL.FPN.USE_GN": (True, MODEL, {}),
    "MODEL.FPN.NORM": ("FrozenBN", MODEL, {}),
    "MODEL.FPN.USE_RELU": (True, REFUSED, {}),
    "MODEL.GROUP_NORM.NUM_GROUPS": (2, MODEL, {}),
    "MODEL.GROUP_NORM.EPSILON": (1e-3, MODEL, {}),
    "MODEL.GROUP_NORM.DIM_PER_GP": (8, MODEL, {"MODEL.GROUP_NORM.NUM_GROUPS": -1, "MODEL.GROUP_NORM.DIM_PER_GP": 4}),
    "MODEL.RPN.USE_FPN": (False, REFUSED, {}),
    "MODEL.RPN.ANCHOR_SIZES": ((8, 16, 32, 64, 128), MODEL, {}),
    "MODEL.RPN.ANCHOR_STRIDE": ((2, 4, 8, 16, 32), MODEL, {}),
    "MODEL.RPN.ASPECT_RATIOS": ((1.0,), MODEL, {}),
    "MODEL.RPN.ANCHOR_ROUNDING": (False, MODEL, {}),
    "MODEL.RPN.ANCHOR_STRIDES_FROM_IMAGE": (True, MODEL, {}),
    "MODEL.RPN.STRADDLE_THRESH": (0, MODEL, {}),
    "MODEL.RPN.FG_IOU_THRESHOLD": (0.8, MODEL, {}),
    "MODEL.RPN.BG_IOU_THRESHOLD": (0.2, MODEL, {}),
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": (128, MODEL, {}),
    "MODEL.RPN.POSITIVE_FRACTION": (0.25, MODEL, {}),
    "MODEL.RPN.PRE_NMS_TOP_N_TRAIN": (200, MODEL, {}),
    "MODEL.RPN.PRE_NMS_TOP_N_TEST": (200, MODEL, {}),
    "MODEL.RPN.POST_NMS_TOP_N_TRAIN": (50, MODEL, {}),
    "MODEL.RPN.POST_NMS_TOP_N_TEST": (50, MODEL, {}),
    "MODEL.RPN.NMS_THRESH": (0.6, MODEL, {}),
    "MODEL.RPN.MIN_SIZE": (2, MODEL, {}),
    "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN": (50, MODEL, {}),
    "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST": (50, MODEL, {}),
    "MODEL.RPN.FPN_POST_NMS_PER_BATCH": (True, REFUSED, {}),
    "MODEL.RPN.SMOOTH_L1_BETA": (0.5, MODEL, {}),
    "MODEL.RPN.LOSS_WEIGHT": (2.0, MODEL, {}),
    "MODEL.RPN.LOSS_NORMALIZATION": ("batch_size", MODEL, {}),
    "MODEL.RPN.RPN_HEAD": ("RetinaNetHead", REFUSED, {}),
    "MODEL.RPN.NUM_CONVS": (2, MODEL, {}),
    "MODEL.ROI_HEADS.USE_FPN": (False, REFUSED, {}),
    "MODEL.ROI_HEADS.FG_IOU_THRESHOLD": (0.6, MODEL, {}),
    "MODEL.ROI_HEADS.BG_IOU_THRESHOLD": (0.4, MODEL, {}),
    "MODEL.ROI_HEADS.BBOX_REG_WEIGHTS": ((1.0, 1.0, 1.0, 1.0), MODEL, {}),
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": (32, MODEL, {}),
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": (0.5, MODEL, {}),
    "MODEL.ROI_HEADS.SCORE_THRESH": (0.1, MODEL, {}),
    "MODEL.ROI_HEADS.NMS": (0.6, MODEL, {}),
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMG": (50, MODEL, {}),
    "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR": ("FPNXconv1fcFeatureExtractor", MODEL, {}),
    "MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS": (2, MODEL, XCONV),
    "MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM": (8, MODEL, XCONV),
    "MODEL.ROI_BOX_HEAD.DILATION": (2, MODEL, XCONV),
    "MODEL.ROI_BOX_HEAD.PREDICTOR": ("FastRCNNPredictor", REFUSED, {}),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": (5, MODEL, {}),
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": (0, MODEL, {}),
    "MODEL.ROI_BOX_HEAD.POOLER_SCALES": (SCALES, MODEL, {}),
    "MODEL.ROI_BOX_HEAD.POOLER_ALIGNED": (True, MODEL, {}),
    "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM": (32, MODEL, {}),
    "MODEL.ROI_BOX_HEAD.NUM_CLASSES": (3, MODEL, {}),
    "MODEL.ROI_BOX_HEAD.USE_GN": (True, MODEL, {}),
    "MODEL.ROI_BOX_HEAD.NORM": ("BN", MODEL, XCONV),
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": (0.5, MODEL, {}),
    "MODEL.ROI_BOX_HEAD.LOSS_WEIGHT": (2.0, MODEL, {}),
    "MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR": ("ResNet50Conv5ROIFeatureExtractor", REFUSED, {}),
    "MODEL.ROI_MASK_HEAD.PREDICTOR": ("MaskRCNNConv1x1Predictor", REFUSED, {}),
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": (7, MODEL, {}),
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": (0, MODEL, {}),
    "MODEL.ROI_MASK_HEAD.POOLER_SCALES": (SCALES, MODEL, {}),
    "MODEL.ROI_MASK_HEAD.POOLER_ALIGNED": (True, MODEL, {}),
    "MODEL.ROI_MASK_HEAD.CONV_LAYERS": ((16,), MODEL, {}),
    "MODEL.ROI_MASK_HEAD.DILATION": (2, MODEL, {}),
    "MODEL.ROI_MASK_HEAD.RESOLUTION": (14, MODEL, {}),
    "MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR": (True, REFUSED, {}),
    "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS": (True, REFUSED, {}),
    "MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD": (0.7, TEST_RUN, {}),
    "MODEL.ROI_MASK_HEAD.PASTE_RULE": ("torchvision", TEST_RUN, {}),
    "MODEL.ROI_MASK_HEAD.USE_GN": (True, MODEL, {}),
    "MODEL.ROI_MASK_HEAD.NORM": ("FrozenBN", MODEL, {}),
    "MODEL.ROI_MASK_HEAD.LOSS_WEIGHT": (2.0, MODEL, {}),
    "MODEL.ROI_MASK_HEAD.TARGET_RULE": ("torchvision", MODEL, {}),
    "MODEL.ROI_MASK_HEAD.MAX_TRAIN_PER_IMAGE": (4, MODEL, {}),
    "INPUT.MIN_SIZE_TRAIN": ((64,), DATA, {}),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": ("range", DATA, {"INPUT.MIN_SIZE_TRAIN": (80, 112)}),
    "INPUT.MAX_SIZE_TRAIN": (100, DATA, {}),
    "INPUT.MIN_SIZE_TEST": (64, DATA, {}),
    "INPUT.MAX_SIZE_TEST": (100, DATA, {}),
    "INPUT.RESIZE_MODE": ("torchvision", DATA, {}),
    "INPUT.PIXEL_MEAN": ([0.4, 0.4, 0.4], MODEL, {}),
    "INPUT.PIXEL_STD": ([0.2, 0.2, 0.2], MODEL, {}),
    "INPUT.TO_BGR255": (True, MODEL, {}),
    "INPUT.HORIZONTAL_FLIP_PROB_TRAIN": (0.0, DATA, {}),
    "INPUT.BRIGHTNESS": (0.2, DATA, {}),
    "INPUT.CONTRAST": (0.2, DATA, {}),
    "INPUT.SATURATION": (0.2, DATA, {}),
    "INPUT.HUE": (0.1, DATA, {}),
    "INPUT.VERTICAL_FLIP_PROB_TRAIN": (0.5, DATA, {}),
    "DATASETS.TRAIN": (("toy_empty",), DATA, {}),
    "DATASETS.TEST": (("toy", "toy_empty"), DATA, {}),
    "DATASETS.DATA_DIR": (lambda p: p["data_dir_b"], DATA,
                          {"DATASETS.TRAIN": ("coco_2017_val",), "DATASETS.DATA_DIR": "<data_dir_a>"}),
    "DATASETS.CATALOG": (lambda p: {"toy": {"ANN_FILE": p["toy_empty"]}}, DATA, {}),
    "DATASETS.CHECK": ("annotations", DATA, {"DATASETS.TRAIN": ("toy_missing",), "DATASETS.TEST": ()}),
    "DATALOADER.NUM_WORKERS": (2, DATA, {}),
    "DATALOADER.SIZE_DIVISIBILITY": (16, MODEL, {}),
    "DATALOADER.ASPECT_RATIO_GROUPING": (False, DATA, {}),
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": (False, DATA, {"DATASETS.TRAIN": ("toy_empty",)}),
    "SOLVER.OPTIMIZER": ("AdamW", SOLVER, {}),
    "SOLVER.BETAS": ((0.8, 0.99), SOLVER, {"SOLVER.OPTIMIZER": "AdamW"}),
    "SOLVER.MAX_ITER": (8, DATA, {}),
    "SOLVER.BASE_LR": (0.02, SOLVER, {}),
    "SOLVER.BIAS_LR_FACTOR": (1, SOLVER, {}),
    "SOLVER.MOMENTUM": (0.8, SOLVER, {}),
    "SOLVER.WEIGHT_DECAY": (0.001, SOLVER, {}),
    "SOLVER.WEIGHT_DECAY_BIAS": (0.001, SOLVER, {}),
    "SOLVER.WEIGHT_DECAY_NORM": (0.001, SOLVER, {}),
    "SOLVER.LR_SCHEDULER": ("WarmupCosineLR", SOLVER, {"SOLVER.STEPS": (30000,)}),  # the default: cosine refuses others
    "SOLVER.GAMMA": (0.5, SOLVER, {}),
    "SOLVER.STEPS": ((20,), SOLVER, {}),
    "SOLVER.WARMUP_FACTOR": (0.5, SOLVER, {}),
    "SOLVER.WARMUP_ITERS": (10, SOLVER, {}),
    "SOLVER.WARMUP_METHOD": ("constant", SOLVER, {}),
    "SOLVER.COSINE_END_FACTOR": (0.1, SOLVER, {"SOLVER.LR_SCHEDULER": "WarmupCosineLR", "SOLVER.STEPS": (30000,)}),
    "SOLVER.CLIP_GRADIENTS.ENABLED": (True, HOOKS, {}),
    "SOLVER.CLIP_GRADIENTS.MAX_NORM": (5.0, HOOKS, {"SOLVER.CLIP_GRADIENTS.ENABLED": True}),
    "SOLVER.CHECKPOINT_PERIOD": (10, HOOKS, {}),
    "SOLVER.IMS_PER_BATCH": (4, DATA, {}),
    "SOLVER.REFERENCE_WORLD_SIZE": (2, SCALING, {}),
    "SOLVER.LOG_PERIOD": (5, HOOKS, {}),
    "SOLVER.MAX_NONFINITE_SKIPS": (2, HOOKS, {}),
    "SOLVER.DIVERGENCE.ENABLED": (False, HOOKS, {}),
    "SOLVER.DIVERGENCE.FACTOR": (5.0, HOOKS, {}),
    "SOLVER.DIVERGENCE.REFERENCE_ITERS": (5, HOOKS, {}),
    "SOLVER.AMP.ENABLED": (True, TRAINER, {"SOLVER.AMP.DTYPE": "bfloat16"}),
    "SOLVER.AMP.DTYPE": ("bfloat16", TRAINER, {"SOLVER.AMP.ENABLED": True}),  # float16: refused on the CPU
    "TEST.EXPECTED_RESULTS": ([["segm", "AP", 0.3, 0.01]], REFUSED, {}),
    "TEST.EXPECTED_RESULTS_SIGMA_TOL": (3, REFUSED, {}),
    "TEST.IMS_PER_BATCH": (4, DATA, {}),
    "TEST.DETECTIONS_PER_IMG": (50, REFUSED, {}),
    "TEST.EVAL_PERIOD": (5, HOOKS, {}),
    "TEST.VIS_IMAGES": (0, HOOKS, {}),
    "TEST.VIS_SCORE_THRESHOLD": (0.3, HOOKS, {}),
    "TEST.BBOX_AUG.ENABLED": (True, REFUSED, {}),
    "OUTPUT_DIR": (lambda p: p["out_b"], TEST_RUN, {}),
    "PATHS_CATALOG": ("maskrcnn_benchmark/config/paths_catalog.py", REFUSED, {}),
    "SEED": (1, DATA, {}),
    "VIS_PERIOD": (5, HOOKS, {}),
    "DIST_TIMEOUT_S": (60, LAUNCH, {}),
    "DTYPE": ("float16", REFUSED, {}),
}


def all_keys(node=None, prefix=""):
    """Every leaf key of the defaults; ``DATASETS.CATALOG`` (user entries) counts as one."""
    node = get_cfg() if node is None else node
    keys = []
    for k, v in node.items():
        full = prefix + k
        keys += all_keys(v, full + ".") if isinstance(v, CfgNode) and full != "DATASETS.CATALOG" else [full]
    return keys


ALL_KEYS = all_keys()


def test_every_key_has_a_proof():
    missing = sorted(set(ALL_KEYS) - set(PROOFS))
    assert not missing, f"keys of defaults.py with no entry in PROOFS (honour or refuse them, then add one): {missing}"
    assert not sorted(set(PROOFS) - set(ALL_KEYS)), "PROOFS names keys that no longer exist"


# ------------------------------------------------------------------------------ fixtures
def _write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    base = tmp_path_factory.mktemp("every_key")
    ann, img_dir = ensure_shapes_dataset(str(base / "data"), "train", 4, 0)
    coco = json.loads(open(ann).read())
    first = coco["images"][0]
    empty = dict(coco, annotations=[a for a in coco["annotations"] if a["image_id"] != first["id"]])
    missing = dict(coco, images=coco["images"] + [dict(first, id=10 ** 6, file_name="missing.png")])
    p = {"toy": ann, "img_dir": img_dir, "toy_empty": _write_json(base / "empty.json", empty),
         "toy_missing": _write_json(base / "missing.json", missing),
         "out_a": str(base / "out_a"), "out_b": str(base / "out_b")}
    for tag, data in (("a", coco), ("b", empty)):  # two DATA_DIRs holding a built-in COCO split
        root = base / f"data_dir_{tag}"
        (root / "coco" / "annotations").mkdir(parents=True)
        _write_json(root / "coco" / "annotations" / "instances_val2017.json", data)
        shutil.copytree(img_dir, root / "coco" / "val2017")
        p[f"data_dir_{tag}"] = str(root)
    for tag, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        p[f"weights_{tag}"] = str(base / f"weights_{tag}.pth")
        torch.save({"model": build_model(tiny_cfg()).state_dict()}, p[f"weights_{tag}"])
    return p


def base_cfg(p):
    """tiny_cfg with a 4-image dataset, short schedule, fixed seed, weights and OUTPUT_DIR."""
    cfg = tiny_cfg()
    cfg.merge_from_list([
        "DATASETS.CATALOG", {n: {"ANN_FILE": p[n], "IMG_DIR": p["img_dir"]} for n in ("toy", "toy_empty", "toy_missing")},
        "DATASETS.TRAIN", ("toy",), "DATASETS.TEST", ("toy",), "DATALOADER.NUM_WORKERS", 0,
        "INPUT.MIN_SIZE_TRAIN", (96,), "INPUT.MAX_SIZE_TRAIN", 160, "INPUT.MIN_SIZE_TEST", 96,
        "INPUT.MAX_SIZE_TEST", 160, "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 4, "SOLVER.STEPS", (3,),
        "SOLVER.WARMUP_ITERS", 2, "TEST.IMS_PER_BATCH", 2, "SEED", 0, "MODEL.WEIGHT", p["weights_a"],
        "OUTPUT_DIR", p["out_a"]])
    return cfg


def _resolve(value, p):
    value = value(p) if callable(value) else value
    if isinstance(value, str) and re.fullmatch(r"<\w+>", value):
        return p[value[1:-1]]
    return value


def with_keys(cfg, overrides, p):
    out = cfg.clone()
    out.merge_from_list([x for k, v in overrides.items() for x in (k, _resolve(v, p))])  # type-checked
    return out


# ------------------------------------------------------------------------------ proofs
def _errors_as_values(fn):
    try:
        return fn()
    except UserError as e:  # e.g. a dataset that a check level refuses
        return ("error", type(e).__name__, str(e))


def prove_model(cfg, monkeypatch):
    torch.manual_seed(0)
    return fingerprint(build_model(cfg))


def prove_data(cfg, monkeypatch):
    def build():
        dataset = build_train_dataset(cfg)
        return fingerprint((build_train_loader(cfg, dataset=dataset), build_test_loaders(cfg)))
    return _errors_as_values(build)


def prove_solver(cfg, monkeypatch):
    torch.manual_seed(0)
    optimizer = make_optimizer(cfg, build_model(cfg))
    scheduler = make_lr_scheduler(cfg, optimizer)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": len(g["params"])}
              for g in optimizer.param_groups]
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stepping the schedule without optimizer steps
        for _ in range(30):
            lrs.append(scheduler.get_last_lr())
            scheduler.step()
    return fingerprint((groups, type(scheduler).__name__, lrs))


def prove_hooks(cfg, monkeypatch):
    """The hooks ``engine/run.py`` registers, and the clipping norm it gives the Trainer."""
    hooks = run.build_hooks(cfg, None, None, [], None, lambda: {})
    return fingerprint((hooks, run._clip_norm(cfg)))


def prove_trainer(cfg, monkeypatch):
    """The Trainer ``engine/run.py`` builds (clipping, mixed precision), or the error refusing it."""
    def build():
        torch.manual_seed(0)
        model = build_model(cfg)
        optimizer = make_optimizer(cfg, model)
        trainer = run.build_trainer(cfg, model, [], optimizer, make_lr_scheduler(cfg, optimizer))
        return fingerprint((trainer.amp_dtype, trainer.grad_scaler, trainer.clip_grad_norm))
    return _errors_as_values(build)


def prove_test_run(cfg, monkeypatch):
    """``engine/run.test`` (tools/test_net.py) up to the evaluation, which is recorded instead."""
    seen = {}

    def record(model, loaders, output_dir, **kwargs):
        seen.update(model=model.state_dict(), output_dir=output_dir, **kwargs,
                    batches=[(name, loader.batch_sampler.batch_size) for name, loader in loaders])
        return {}
    monkeypatch.setattr(run, "evaluate", record)
    run.test(cfg)
    return fingerprint(seen)


def prove_launch(cfg, monkeypatch):
    """``engine/launch.setup`` (every tool's start) with the process group recorded, not made."""
    seen = {}
    monkeypatch.setattr(launch, "load_cfg", lambda *args: cfg)
    monkeypatch.setattr(launch, "init_distributed", lambda timeout_s: seen.update(timeout_s=timeout_s))
    monkeypatch.setattr(launch, "setup_logger", lambda *args: logging.getLogger("maskrcnn.test_every_key"))
    launch.setup(argparse.Namespace(local_rank=None, config_file="", opts=[]))
    return fingerprint(seen)


def prove_scaling(cfg, monkeypatch):
    return fingerprint(auto_scale_workers(cfg, 1))


PROVERS = {MODEL: prove_model, DATA: prove_data, SOLVER: prove_solver, HOOKS: prove_hooks,
           TEST_RUN: prove_test_run, LAUNCH: prove_launch, SCALING: prove_scaling, TRAINER: prove_trainer}


@pytest.mark.parametrize("kind", sorted(PROVERS))
def test_fingerprints_are_deterministic(kind, paths, monkeypatch):
    """Two builds of the same config look the same: otherwise every key would 'change' something."""
    cfg = base_cfg(paths)
    check_supported(cfg)
    assert PROVERS[kind](cfg, monkeypatch) == PROVERS[kind](cfg.clone(), monkeypatch)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_key_is_honoured_or_refused(key, paths, monkeypatch):
    assert key in PROOFS, f"{key}: no entry in PROOFS; honour the key (read it in a build file) or refuse it"
    value, kind, context = PROOFS[key]
    baseline = with_keys(base_cfg(paths), context, paths)
    changed = with_keys(baseline, {key: value}, paths)
    check_supported(baseline)
    if kind == REFUSED:
        with pytest.raises(ConfigError, match=re.escape(key)) as info:
            check_supported(changed)
        assert re.search(r"\b(remove|use|set)\b", str(info.value)), info.value  # says what to do
        return
    check_supported(changed)
    before = PROVERS[kind](baseline, monkeypatch)
    after = PROVERS[kind](changed, monkeypatch)
    assert before != after, f"{key} = {_resolve(value, paths)!r} changes nothing in the {kind} built from the config"


def test_refused_values_say_what_to_use_instead():
    cfg = get_cfg()
    cfg.merge_from_list(["TEST.DETECTIONS_PER_IMG", 50])
    with pytest.raises(ConfigError, match=r"TEST\.DETECTIONS_PER_IMG = 50 .*use MODEL\.ROI_HEADS\.DETECTIONS_PER_IMG"):
        check_supported(cfg)
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RESNETS.TRANS_FUNC", "BottleneckWithGN"])
    with pytest.raises(ConfigError, match=r"set MODEL\.RESNETS\.NORM GN"):
        check_supported(cfg)
    cfg.merge_from_list(["MODEL.RESNETS.NORM", "GN", "MODEL.RESNETS.STEM_FUNC", "StemWithGN"])
    check_supported(cfg)  # maskrcnn-benchmark's GN configs load when NORM says GN
