#!/usr/bin/env python
"""``tools/train_net.py``, run in this process with test-only patches, for the tests that need a
real training process with a fault injected or its losses recorded:

    python tests/engine/patched_train.py [--nan-at 3,4] [--record-losses FILE] -- <train_net args>

``--nan-at``: the detector's losses of these iterations are multiplied by NaN (the model is
patched here; nothing in the package exists for tests). ``--record-losses``: one JSON line per
iteration that ran to its end: ``{"iter", "loss", "lr", "skipped"}``.
"""
import argparse
import json
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from maskrcnn.engine.trainer import Trainer  # noqa: E402
from maskrcnn.modeling.detector import GeneralizedRCNN  # noqa: E402


def _patch(nan_at, record_path):
    current = {"iter": 0}
    run_step, loss = Trainer.run_step, GeneralizedRCNN.loss

    def patched_run_step(self):
        current["iter"] = self.iter
        run_step(self)
        if record_path:
            with open(record_path, "a") as f:
                f.write(json.dumps({"iter": self.iter, "loss": self.loss, "lr": self.lr,
                                    "skipped": self.skip_update}) + "\n")

    def patched_loss(self, images, targets):
        losses = loss(self, images, targets)
        if current["iter"] in nan_at:
            losses = {k: v * float("nan") for k, v in losses.items()}
        return losses

    Trainer.run_step = patched_run_step
    GeneralizedRCNN.loss = patched_loss


def main():
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nan-at", default="", help="comma-separated iterations")
    parser.add_argument("--record-losses", default="", metavar="FILE")
    args = parser.parse_args(argv[:split])
    _patch({int(i) for i in args.nan_at.split(",") if i.strip()}, args.record_losses)
    train_net = os.path.join(ROOT, "tools", "train_net.py")
    sys.argv = [train_net] + argv[split + 1:]
    runpy.run_path(train_net, run_name="__main__")


if __name__ == "__main__":
    main()
