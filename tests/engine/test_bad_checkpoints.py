"""tools/train_net.py given untrusted or corrupt checkpoints, as MODEL.WEIGHT and via --resume:
refused with an error naming the file (and, on resume, the intact checkpoint to use instead);
the code in a malicious pickle never runs."""
import os
import pathlib
import pickle
import subprocess
import sys

import torch

from test_train_net import ROOT, TOOLS, tiny_yaml


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _train(cfg, *opts, resume=False):
    return subprocess.run([sys.executable, os.path.join(TOOLS, "train_net.py"), "--config-file", cfg]
                          + (["--resume"] if resume else []) + ["DATASETS.TEST", "()"] + list(opts),
                          cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=300)


def test_malicious_weights_file_is_refused(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "weights.pth"
    with open(evil, "wb") as f:  # a plain pickle, not even a torch file
        pickle.dump({"model": {"backbone.body.stem.conv1.weight": Payload(str(marker))}}, f, protocol=2)
    cfg = tiny_yaml(str(tmp_path / "data"), tmp_path / "out")
    proc = _train(cfg, "MODEL.WEIGHT", str(evil))
    assert proc.returncode != 0
    assert f"{evil} is not a valid checkpoint" in proc.stderr and "refused for safety" in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_resume_from_malicious_last_checkpoint_names_the_intact_one(tmp_path):
    marker = tmp_path / "marker"
    out = tmp_path / "out"
    out.mkdir()
    # An older, intact checkpoint (only its readability matters here) ...
    torch.save({"model": {}, "optimizer": {}, "iteration": 2}, out / "model_0000002.pth")
    os.utime(out / "model_0000002.pth", (1_000_000, 1_000_000))
    # ... and a newer one that would run code if unpickled normally.
    torch.save({"model": {}, "optimizer": {}, "iteration": 4, "x": Payload(str(marker))},
               out / "model_0000004.pth")
    (out / "last_checkpoint").write_text("model_0000004.pth")
    cfg = tiny_yaml(str(tmp_path / "data"), out)
    proc = _train(cfg, resume=True)
    assert proc.returncode != 0
    err = proc.stderr
    assert "CheckpointError: cannot resume" in err
    assert "model_0000004.pth is not a valid checkpoint" in err and "refused for safety" in err
    assert "model_0000002.pth (iteration 2)" in err
    assert f"echo model_0000002.pth > {out / 'last_checkpoint'}" in err
    assert not marker.exists()
    assert (out / "last_checkpoint").read_text() == "model_0000004.pth"  # no silent roll-back
