#!/usr/bin/env python
"""Evaluate a checkpoint on DATASETS.TEST with COCO bbox / segm AP:

    python tools/test_net.py --config-file configs/X.yaml MODEL.WEIGHT output/model_final.pth

Writes OUTPUT_DIR/inference/<dataset>/coco_instances_results.json and metrics.json.
User errors exit with status 2 (config), 3 (data) or 4 (weights) (README: "When something is wrong").
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maskrcnn.engine.launch import default_argument_parser, setup  # noqa: E402
from maskrcnn.engine.run import test  # noqa: E402
from maskrcnn.utils.errors import main_guard  # noqa: E402


def main() -> None:
    args = default_argument_parser("Evaluate a Mask R-CNN / Faster R-CNN checkpoint").parse_args()
    cfg = setup(args)
    test(cfg)


if __name__ == "__main__":
    main_guard(main)
