#!/usr/bin/env python
"""Train a detector: python tools/train_net.py --config-file configs/X.yaml [--resume] [KEY VALUE ...]

Multi-GPU: torchrun --nproc_per_node=N tools/train_net.py ...
       or: python -m torch.distributed.launch --nproc_per_node=N tools/train_net.py ...

Killed or crashed? Run the same command with --resume: the run continues from
OUTPUT_DIR/last_checkpoint and, with a fixed SEED, ends with the same weights as an
uninterrupted run (README: "Surviving kills and bad checkpoints").
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maskrcnn.engine.launch import default_argument_parser, setup  # noqa: E402
from maskrcnn.engine.run import train  # noqa: E402


def main() -> None:
    args = default_argument_parser("Train a Mask R-CNN / Faster R-CNN model").parse_args()
    cfg = setup(args)
    cfg.defrost()  # NUM_CLASSES may be filled from the training set
    train(cfg, resume=args.resume)


if __name__ == "__main__":
    main()
