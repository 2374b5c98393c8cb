#!/usr/bin/env python
"""Draw predictions on images:

    python tools/demo.py --config-file configs/quickstart.yaml \
        --weights output/quickstart/model_final.pth --input a.jpg b.png --output demo_out/

Writes one PNG per input with masks, boxes, class names and scores.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torchvision.io import write_png  # noqa: E402
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks  # noqa: E402

from maskrcnn import Predictor  # noqa: E402
from maskrcnn.data.image_io import read_image_rgb  # noqa: E402


def render(predictor: Predictor, path: str, threshold: float) -> torch.Tensor:
    """The image at ``path`` with the predictions scoring >= threshold drawn on it, (3, H, W) uint8."""
    image = read_image_rgb(path)
    out = predictor(image)
    keep = out["scores"] >= threshold
    canvas = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    if "masks" in out and keep.any():
        canvas = draw_segmentation_masks(canvas, out["masks"][keep], alpha=0.5)
    labels = [f"{predictor.label_name(int(c))} {float(s):.2f}"
              for c, s in zip(out["labels"][keep], out["scores"][keep])]
    if keep.any():
        canvas = draw_bounding_boxes(canvas, out["boxes"][keep], labels=labels, colors="yellow", width=2)
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description="Mask R-CNN demo: draw predictions into PNG files")
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="checkpoint, e.g. OUTPUT_DIR/model_final.pth")
    parser.add_argument("--input", nargs="+", required=True, help="image files")
    parser.add_argument("--output", default="demo_output", help="folder for the PNG files")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE")
    args = parser.parse_args()
    predictor = Predictor.from_config(args.config_file, weights=args.weights,
                                      opts=args.opts + ["MODEL.DEVICE", "cuda" if torch.cuda.is_available() else "cpu"])
    os.makedirs(args.output, exist_ok=True)
    for path in args.input:
        drawn = render(predictor, path, args.confidence_threshold)
        dst = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        write_png(drawn, dst)
        print(f"{path} -> {dst}")


if __name__ == "__main__":
    main()
