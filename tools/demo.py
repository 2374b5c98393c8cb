#!/usr/bin/env python
"""Draw predictions on images:

    python tools/demo.py --config-file configs/quickstart.yaml \
        --weights output/quickstart/model_final.pth --input a.jpg b.png --output demo_out/

Writes one PNG per input with masks, boxes, class names and scores (maskrcnn/utils/visualizer.py).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from maskrcnn import Predictor  # noqa: E402
from maskrcnn.data.image_io import read_image_rgb  # noqa: E402
from maskrcnn.utils.errors import DataError, UserError, main_guard  # noqa: E402
from maskrcnn.utils.logger import setup_logger  # noqa: E402
from maskrcnn.utils.visualizer import draw_predictions, save_png  # noqa: E402


def render(predictor: Predictor, path: str, threshold: float) -> torch.Tensor:
    """The image at ``path`` with the predictions scoring >= threshold drawn on it, (3, H, W) uint8.

    Drawn by :mod:`maskrcnn.utils.visualizer`: masks, boxes, ``"name score"`` labels in the
    colour of each class; an image without such predictions says so (and so does the log).
    """
    try:
        image = read_image_rgb(path)
    except UserError:  # a missing file
        raise
    except ValueError as e:  # not an image
        raise DataError(f"--input {e}") from e
    out = predictor(image)
    names = {int(c): predictor.label_name(int(c)) for c in out["labels"].unique()}
    return draw_predictions(image, out["boxes"], out["labels"], out["scores"], names,
                            masks=out.get("masks"), score_thr=threshold, image_name=path)


def main() -> None:
    parser = argparse.ArgumentParser(description="Mask R-CNN demo: draw predictions into PNG files")
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="checkpoint, e.g. OUTPUT_DIR/model_final.pth")
    parser.add_argument("--input", nargs="+", required=True, help="image files")
    parser.add_argument("--output", default="demo_output", help="folder for the PNG files")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE")
    args = parser.parse_args()
    setup_logger("maskrcnn")  # INFO to stdout: the "no detections" lines among them
    predictor = Predictor.from_config(args.config_file, weights=args.weights,
                                      opts=args.opts + ["MODEL.DEVICE", "cuda" if torch.cuda.is_available() else "cpu"])
    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output {args.output} cannot be created: {e.strerror or e}") from e
    for path in args.input:
        drawn = render(predictor, path, args.confidence_threshold)
        dst = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        save_png(drawn, dst)
        print(f"{path} -> {dst}")


if __name__ == "__main__":
    main_guard(main)
