#!/usr/bin/env python
"""Train a detector: python tools/train_net.py --config-file configs/X.yaml [--resume] [KEY VALUE ...]

Multi-GPU: torchrun --nproc_per_node=N tools/train_net.py ...
       or: python -m torch.distributed.launch --nproc_per_node=N tools/train_net.py ...

Killed or crashed? Run the same command with --resume: the run continues from
OUTPUT_DIR/last_checkpoint and, with a fixed SEED, ends with the same weights as an
uninterrupted run (README: "Surviving kills and bad checkpoints").

An OUTPUT_DIR that holds another run's checkpoints is never overwritten silently: without
--resume the run stops before writing anything; --overwrite deletes that run's checkpoints,
config.yaml and TensorBoard files first (README: "Resume versus fine-tune").

A mistake in the config, data or weights, or a diverging run, stops with one message and exit
status 2, 3, 4 or 5 (README: "When something is wrong"; MASKRCNN_DEBUG=1 adds the traceback).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maskrcnn.engine.launch import default_argument_parser, setup  # noqa: E402
from maskrcnn.engine.run import train  # noqa: E402
from maskrcnn.utils.errors import main_guard  # noqa: E402


def main() -> None:
    args = default_argument_parser("Train a Mask R-CNN / Faster R-CNN model", training=True).parse_args()
    cfg = setup(args, training=True)
    train(cfg, resume=args.resume)


if __name__ == "__main__":
    main_guard(main)
