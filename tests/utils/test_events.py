"""Tests for maskrcnn.utils.events."""

import subprocess
import sys

import pytest
import torch

from maskrcnn.utils import TensorboardWriter


def test_importing_utils_does_not_import_tensorboard():
    code = "import sys, maskrcnn.utils; print('torch.utils.tensorboard' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_scalars_round_trip(tmp_path):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    w = TensorboardWriter(tmp_path)
    for step in range(3):
        w.add_scalars({"loss": 1.0 / (step + 1), "lr": torch.tensor(0.01)}, step, prefix="train/")
    w.flush()
    w.close()
    acc = ea_mod.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "train/lr"}
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [0, 1, 2]
    assert [e.value for e in loss] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [e.value for e in acc.Scalars("train/lr")] == pytest.approx([0.01] * 3)
