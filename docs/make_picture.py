#!/usr/bin/env python
"""Make the README's picture: ground truth | predictions on one shapes validation image.

    python docs/make_picture.py --config-file configs/quickstart.yaml \
        --weights output/quickstart/model_final.pth --out docs/shapes_gt_vs_predictions.png

The image is enlarged (``--scale``, bicubic) before prediction so that the picture is large
enough to read in a browser; the Predictor resizes its input to ``INPUT.MIN_SIZE_TEST`` as
for any image, and the ground truth is scaled with it. The drawing is the demo's; the file is saved with a
256-colour palette to stay small.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from maskrcnn import Predictor  # noqa: E402
from maskrcnn.config import load_cfg  # noqa: E402
from maskrcnn.data.build import build_dataset  # noqa: E402
from maskrcnn.utils.visualizer import (draw_ground_truth, draw_predictions, rasterize_instance_masks,  # noqa: E402
                                       side_by_side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="shapes_val")
    parser.add_argument("--index", type=int, default=0, help="image of the dataset")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--score-thr", type=float, default=0.5)
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE")
    args = parser.parse_args()
    opts = list(args.opts) + ["MODEL.DEVICE", "cpu"]
    cfg = load_cfg(args.config_file, opts)
    dataset = build_dataset(cfg, args.dataset, is_train=False)
    image = dataset.load_image(args.index).permute(1, 2, 0).numpy()
    h, w = image.shape[0] * args.scale, image.shape[1] * args.scale
    big = np.array(Image.fromarray(image).resize((w, h), Image.BICUBIC))
    target = dataset.get_target(args.index).resize((h, w))
    names = {int(c): str(dataset.class_names[k]) for k, c in dataset.contiguous_to_category_id.items()}
    labels = target.get_field("labels").clone().apply_(lambda k: dataset.contiguous_to_category_id[k])
    gt = draw_ground_truth(big, target.bbox, labels, names,
                           rasterize_instance_masks(target.get_field("masks"), target.bbox))
    predictor = Predictor.from_config(args.config_file, weights=args.weights, opts=opts)
    out = predictor(big)
    pred = draw_predictions(big, out["boxes"], out["labels"], out["scores"], names, out.get("masks"),
                            score_thr=args.score_thr)
    picture = side_by_side([gt, pred], ["ground truth", f"predictions (score >= {args.score_thr:g})"])
    # 256 colours without dithering keep the README light (< 200 KB); the tools write full RGB.
    rgb = Image.fromarray(picture.permute(1, 2, 0).numpy())
    rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"{args.out}: {picture.shape[2]}x{picture.shape[1]}, {os.path.getsize(args.out) // 1024} KB")


if __name__ == "__main__":
    main()
