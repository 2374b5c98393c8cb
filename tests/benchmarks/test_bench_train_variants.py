"""``benchmarks/bench_train_variants.py`` builds each variant, times them in turns and prints one
line per variant with its ratio to the first; a checkpoint is loaded where it fits."""
import os
import re
import subprocess
import sys

import torch

from conftest import tiny_cfg
from maskrcnn.data.datasets.shapes import ensure_shapes_dataset
from maskrcnn.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_train_variants.py")


def test_prints_a_ratio_per_variant(tmp_path):
    cfg = tiny_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 4  # the shapes dataset: 3 categories + background
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    config = tmp_path / "tiny.yaml"
    ann, img_dir = ensure_shapes_dataset(str(tmp_path / "data"), "train", 4, 0)
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 0
    cfg.merge_from_list(["DATASETS.CATALOG", {"toy": {"ANN_FILE": ann, "IMG_DIR": img_dir}},
                         "DATASETS.TRAIN", ("toy",), "DATASETS.TEST", (), "DATALOADER.NUM_WORKERS", 0,
                         "INPUT.MIN_SIZE_TRAIN", (96,), "INPUT.MAX_SIZE_TRAIN", 160, "SOLVER.IMS_PER_BATCH", 2])
    config.write_text(cfg.dump())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--config-file", str(config), "--weights", str(weights), "--rounds", "2",
         "--steps", "1", "--variant", "",
         "--variant", "MODEL.ROI_MASK_HEAD.MAX_TRAIN_PER_IMAGE 1"],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = re.findall(r"^  (.+?)\s+median\s+([\d.]+) ms / step\s+ratio ([\d.]+)"
                       r"\s+\((\d+) of (\d+) tensors loaded\)$", proc.stdout, re.M)
    assert [line[0] for line in lines] == ["(as configured)", "MODEL.ROI_MASK_HEAD.MAX_TRAIN_PER_IMAGE 1"]
    assert float(lines[0][2]) == 1.0 and all(float(line[1]) > 0 for line in lines)
    assert all(line[3] == line[4] != "0" for line in lines)  # the same architecture: every tensor
    assert "weights: " + str(weights) in proc.stdout


def test_a_missing_weights_file_is_one_message(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--config-file", os.path.join(ROOT, "configs", "quickstart.yaml"),
                           "--weights", str(tmp_path / "nope.pth"), "--variant", ""],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "nope.pth" in proc.stderr and "Traceback" not in proc.stderr
