"""SOLVER.MAX_NONFINITE_SKIPS in real training processes. The losses of chosen iterations are
made NaN by patched_train.py, which patches the detector's loss in the training process; the
default (stop at the first non-finite loss) is tested with a real cause in test_train_net.py."""
import glob
import os
import subprocess
import sys

import torch

from test_train_net import ROOT, tiny_yaml

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "patched_train.py")

OPTS = ["DATASETS.TEST", "()", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96"]


def _train(cfg, nan_iters, *opts, resume=False):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, LAUNCHER, "--nan-at", nan_iters, "--", "--config-file", cfg]
    cmd += (["--resume"] if resume else []) + OPTS + list(opts)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _ckpt(out, name):
    return torch.load(out / f"{name}.pth", map_location="cpu", weights_only=True)


def _same_tensors(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _scalars(out, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for f in glob.glob(str(out / "events.out.tfevents.*")):
        acc = EventAccumulator(f)
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            values.update({e.step: e.value for e in acc.Scalars(tag)})
    return values


def test_skips_are_bounded_counted_logged_and_survive_resume(tmp_path):
    out = tmp_path / "out"
    cfg = tiny_yaml(str(tmp_path / "data"), out, MAX_ITER=6, CHECKPOINT_PERIOD=1, STEPS=[100],
                    WARMUP_ITERS=0, MAX_NONFINITE_SKIPS=2)
    proc = _train(cfg, "3,4")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    for it in (3, 4):
        assert f"Non-finite loss at iteration {it} (loss_" in log
    assert "iteration skipped, no update applied (2 of SOLVER.MAX_NONFINITE_SKIPS 2)" in log
    assert "nonfinite skips: 2" in log  # in the periodic log line

    c2, c3, c4, c5 = (_ckpt(out, f"model_{i:07d}") for i in (2, 3, 4, 5))
    # Skipped iterations change nothing: weights and momentum stay as after iteration 2 ...
    assert _same_tensors(c2["model"], c3["model"]) and _same_tensors(c3["model"], c4["model"])
    for s2, s4 in zip(c2["optimizer"]["state"].values(), c4["optimizer"]["state"].values()):
        assert torch.equal(s2["momentum_buffer"], s4["momentum_buffer"])
    # ... but they count: the schedule advanced, and updates resume at iteration 5.
    assert (c2["scheduler"]["last_epoch"], c4["scheduler"]["last_epoch"]) == (2, 4)
    assert not _same_tensors(c4["model"], c5["model"])
    assert (c2["nonfinite_skips"], c3["nonfinite_skips"], c4["nonfinite_skips"]) == (0, 1, 2)
    assert all(torch.isfinite(v).all() for v in _ckpt(out, "model_final")["model"].values())
    tb = _scalars(out, "train/nonfinite_skips")
    assert tb[3] == 1 and tb[4] == 2 and tb[6] == 2

    # The count is part of the training state: a resumed run may not skip a third time.
    proc = _train(cfg, "8", "SOLVER.MAX_ITER", "9", resume=True)
    assert proc.returncode != 0
    assert "Start training from iteration 6 to 9" in proc.stdout + proc.stderr
    assert "Non-finite loss at iteration 8" in proc.stderr
    assert "non-finite iteration 3 of the run; SOLVER.MAX_NONFINITE_SKIPS is 2" in proc.stderr
    assert "SOLVER.BASE_LR" in proc.stderr  # the usual advice
    assert _ckpt(out, "model_final")["iteration"] == 6  # untouched
    assert (out / "model_0000007.pth").exists() and not (out / "model_0000008.pth").exists()
