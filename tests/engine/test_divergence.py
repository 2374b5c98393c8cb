"""SOLVER.DIVERGENCE in real runs of tools/train_net.py with configs/quickstart.yaml: a huge LR
with gradient clipping on (as the quickstart ships it) stops before the step is applied, with the
advice and a non-zero exit; the quickstart as shipped does not trip it."""
import json
import os
import re
import statistics
import subprocess
import sys

import pytest
import torch
import yaml

from maskrcnn.checkpoint import read_checkpoint
from maskrcnn.config import get_cfg
from test_train_net import ROOT, TOOLS

QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "patched_train.py")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """DATASETS.DATA_DIR: the quickstart's shapes dataset is generated there on first use."""
    return str(tmp_path_factory.mktemp("data"))


def _train(cmd, data_dir, out, *opts):
    cmd = [sys.executable] + cmd + ["--config-file", QUICKSTART, "DATASETS.TEST", "()",
                                    "DATASETS.DATA_DIR", data_dir, "OUTPUT_DIR", str(out)] + list(opts)
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_huge_lr_with_clipping_stops_before_the_step_with_advice(data_dir, tmp_path):
    out = tmp_path / "out"
    proc = _train([os.path.join(TOOLS, "train_net.py")], data_dir, out, "SOLVER.BASE_LR", "50",
                  "SOLVER.MAX_ITER", "10", "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.IMS_PER_BATCH", "2",
                  "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "DATALOADER.NUM_WORKERS", "0")
    assert proc.returncode != 0, proc.stdout[-3000:]
    saved = yaml.safe_load((out / "config.yaml").read_text())["SOLVER"]
    assert saved["CLIP_GRADIENTS"]["ENABLED"] is True and saved["DIVERGENCE"]["ENABLED"] is True
    err = proc.stderr
    found = re.search(r"The loss diverges at iteration (\d+): (\S+) is more than SOLVER\.DIVERGENCE\.FACTOR "
                      r"10 times (\S+), the median loss", err)
    assert found, err[-3000:]
    iteration, loss, median = int(found.group(1)), float(found.group(2)), float(found.group(3))
    assert loss > 10 * median and 1 < median < 10  # a detector's usual first loss
    for advice in ("Training stopped before this step was applied", "Gradient clipping is on",
                   "SOLVER.BASE_LR is 50", f"SOLVER.OPTIMIZER {saved['OPTIMIZER']}",
                   "not scaled linearly" if saved["OPTIMIZER"] == "AdamW" else "scale the LR linearly",
                   "does not bound the step" if saved["OPTIMIZER"] == "AdamW" else "it bounds each step",
                   f"SOLVER.WARMUP_ITERS (now {saved['WARMUP_ITERS']})"):
        assert advice in err, advice
    # Nothing after the last good iteration was applied or saved.
    assert not (out / "model_final.pth").exists()
    last = read_checkpoint(out / (out / "last_checkpoint").read_text().strip())
    assert last["iteration"] == iteration - 1 and last["scheduler"]["last_epoch"] == iteration - 1
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_the_quickstart_as_shipped_does_not_trip_it(data_dir, tmp_path):
    """The shipped config, only shorter (and without its test set): the guard is on, gets its
    reference, never trips; the losses it saw stay far below the limit."""
    out, record = tmp_path / "out", tmp_path / "losses.jsonl"
    iters = 30
    proc = _train([LAUNCHER, "--record-losses", str(record), "--"], data_dir, out, "SOLVER.MAX_ITER", str(iters))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert [r["iter"] for r in rows] == list(range(1, iters + 1)) and not any(r["skipped"] for r in rows)
    div = get_cfg().SOLVER.DIVERGENCE
    final = read_checkpoint(out / "model_final.pth")
    losses = [r["loss"] for r in rows]
    assert final["divergence_reference"] == pytest.approx(losses[:div.REFERENCE_ITERS])
    # The same rule as the guard, replayed: how close did the run come to the limit?
    worst = max(loss / statistics.median(losses[:min(i, div.REFERENCE_ITERS)])
                for i, loss in enumerate(losses) if i > 0)
    assert worst < div.FACTOR / 3, worst
