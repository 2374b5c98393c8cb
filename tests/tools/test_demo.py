"""tools/demo.py draws through the shared visualizer, prints no warning, and says when an image has
no detections above the threshold (a seeded, untrained tiny model: its scores are low)."""
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from conftest import tiny_cfg, write_tiny_config
from maskrcnn.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 7, "name": "triangle"}]


def _demo(tmp_path, image, threshold):
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    if not weights.exists():
        torch.save({"model": build_model(tiny_cfg()).state_dict(), "categories": CATEGORIES}, weights)
    cfg = write_tiny_config(tmp_path / "cfg.yaml", {}, [], [], tmp_path / "out")
    out = tmp_path / f"demo_{threshold}"
    proc = subprocess.run(
        [sys.executable, "-W", "error", os.path.join(ROOT, "tools", "demo.py"), "--config-file", cfg,
         "--weights", str(weights), "--input", str(image), "--output", str(out), "--confidence-threshold",
         str(threshold), "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "0", "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "3",
         "MODEL.ROI_HEADS.SCORE_THRESH", "0.0"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Warning" not in proc.stderr and "warn" not in proc.stderr.lower()
    return proc, np.array(Image.open(out / (image.stem + ".png")).convert("RGB"))


def test_demo_draws_detections_and_says_when_there_are_none(tmp_path):
    rng = np.random.default_rng(0)
    photo = (rng.integers(90, 110, (600, 800, 3))).astype(np.uint8)  # a flat, slightly noisy photo
    image = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(image, quality=95)
    original = np.array(Image.open(image).convert("RGB"))

    proc, drawn = _demo(tmp_path, image, 0.0)
    assert drawn.shape == original.shape
    assert (np.abs(drawn.astype(int) - original).sum(-1) > 60).mean() > 0.001  # masks, boxes, labels

    proc, drawn = _demo(tmp_path, image, 1.01)
    assert "photo.jpg: no detections with score >= 1.01" in proc.stdout
    corner = drawn[:12, :120].reshape(-1, 3)
    assert ((corner == (40, 40, 40)).all(-1)).any()  # the message's box
    assert (drawn[300:] == original[300:]).all()  # nothing else drawn
