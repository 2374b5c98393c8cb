"""A config file for a ~1M-parameter model that trains in seconds on the CPU (tool tests)."""
import os

import yaml


def write_tiny_config(path, catalog, train, test, output_dir, mask_on=True, **solver):
    """Write the YAML to ``path`` and return it.

    Args:
        catalog: ``{name: (ann_file, img_dir)}``.
        train, test: dataset names.
        output_dir: ``OUTPUT_DIR``.
        mask_on: Mask R-CNN (True) or Faster R-CNN.
        solver: ``SOLVER`` overrides (e.g. ``MAX_ITER=2``).
    """
    cfg = {
        "MODEL": {"DEVICE": "cpu", "MASK_ON": mask_on,
                  "BACKBONE": {"CONV_BODY": "R-18-FPN", "FREEZE_CONV_BODY_AT": 0, "OUT_CHANNELS": 32},
                  "RESNETS": {"NORM": "GN", "STEM_OUT_CHANNELS": 16, "RES2_OUT_CHANNELS": 16},
                  "GROUP_NORM": {"NUM_GROUPS": 4},
                  "RPN": {"ANCHOR_SIZES": "(16, 32, 64, 128, 256)", "PRE_NMS_TOP_N_TRAIN": 300,
                          "FPN_POST_NMS_TOP_N_TRAIN": 100, "PRE_NMS_TOP_N_TEST": 300,
                          "FPN_POST_NMS_TOP_N_TEST": 100},
                  "ROI_HEADS": {"BATCH_SIZE_PER_IMAGE": 64},
                  "ROI_BOX_HEAD": {"MLP_HEAD_DIM": 64},
                  "ROI_MASK_HEAD": {"CONV_LAYERS": [32, 32]}},
        "INPUT": {"MIN_SIZE_TRAIN": [96], "MAX_SIZE_TRAIN": 160, "MIN_SIZE_TEST": 96, "MAX_SIZE_TEST": 160,
                  "TO_BGR255": False, "PIXEL_MEAN": [0.5, 0.5, 0.5], "PIXEL_STD": [0.25, 0.25, 0.25]},
        "DATASETS": {"CATALOG": {n: {"ANN_FILE": str(a), "IMG_DIR": str(d)} for n, (a, d) in catalog.items()},
                     "TRAIN": list(train), "TEST": list(test)},
        "DATALOADER": {"NUM_WORKERS": 0},
        "SOLVER": {"BASE_LR": 0.01, "IMS_PER_BATCH": 2, "MAX_ITER": 2, "STEPS": [1], "WARMUP_ITERS": 1,
                   "CHECKPOINT_PERIOD": 100, "LOG_PERIOD": 1, **solver},
        "TEST": {"IMS_PER_BATCH": 2},
        "OUTPUT_DIR": str(output_dir),
        "SEED": 0,
    }
    os.makedirs(os.path.dirname(os.path.abspath(str(path))), exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return str(path)
