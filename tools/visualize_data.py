#!/usr/bin/env python
"""Draw a dataset's ground truth: the first thing to run on a new dataset.

    python tools/visualize_data.py --config-file configs/X.yaml [--source annotation|dataloader] \
        [--datasets NAME ...] [--output DIR] [--num N] [KEY VALUE ...]

``--source annotation`` (default) draws each image at its original size with the masks,
boxes and class names that training uses as targets (after the dataset checks: crowd
regions and dropped annotations are not drawn), for every dataset of ``DATASETS.TRAIN``
and ``DATASETS.TEST`` (or those named). ``--source dataloader`` draws what the model is
trained on: the batches of the training loader of ``DATASETS.TRAIN`` (or the named sets),
after resizing and random flipping, in the order training reads them (same ``SEED``).

PNG files go to ``--output`` (default ``OUTPUT_DIR/visualize_data``):
``<dataset>/<image file stem>.png``, or ``dataloader/<k>_<image file stem>.png``.
"""
import argparse
import math
import os
import sys
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from maskrcnn.config import load_cfg  # noqa: E402
from maskrcnn.data.build import build_dataset, build_train_dataset, build_train_loader  # noqa: E402
from maskrcnn.engine.launch import dataset_argument_parser, dataset_names, parse_dataset_args  # noqa: E402
from maskrcnn.utils.errors import DataError, UserError, main_guard  # noqa: E402
from maskrcnn.utils.logger import setup_logger  # noqa: E402
from maskrcnn.utils.visualizer import (draw_ground_truth, rasterize_instance_masks, save_png,  # noqa: E402
                                       side_by_side)



def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = dataset_argument_parser(
        "Draw the ground truth of the datasets of a config",
        datasets_help="datasets to draw (default: DATASETS.TRAIN and DATASETS.TEST; "
                      "with --source dataloader, DATASETS.TRAIN)",
        opts_help="config overrides as KEY VALUE pairs, e.g. INPUT.MIN_SIZE_TRAIN (640,)")
    parser.add_argument("--source", choices=("annotation", "dataloader"), default="annotation",
                        help="annotation: original images; dataloader: training batches after resize and flip")
    parser.add_argument("--output", default="", metavar="DIR",
                        help="folder of the PNG files (default: OUTPUT_DIR/visualize_data)")
    parser.add_argument("--num", type=int, default=20, metavar="N",
                        help="images per dataset (annotation) or in all (dataloader); 0: all")
    return parse_dataset_args(parser, argv)


def _names_by_category(dataset) -> Dict[int, str]:
    """Category id -> name of a COCODataset (or a CategoryConcatDataset)."""
    return {int(cid): str(dataset.class_names[k]) for k, cid in dataset.contiguous_to_category_id.items()}


def _draw_target(image: torch.Tensor, target, dataset, title: str) -> torch.Tensor:
    """``image`` with ``target``'s masks, boxes and names, under ``title``; labels mapped to category ids
    so that a class has the same colour here as in the predictions."""
    to_id = dataset.contiguous_to_category_id
    labels = torch.tensor([to_id[int(c)] for c in target.get_field("labels")], dtype=torch.long)
    masks = rasterize_instance_masks(target.get_field("masks"), target.bbox) if target.has_field("masks") else None
    drawn = draw_ground_truth(image, target.bbox, labels, _names_by_category(dataset), masks)
    return side_by_side([drawn], [title])


def _png_name(file_name: str) -> str:
    return os.path.splitext(os.path.basename(file_name))[0] + ".png"


def draw_annotations(cfg, names: List[str], output: str, num: int) -> List[Tuple[str, int]]:
    """Original images of each dataset with their targets; returns ``(name, images written)``."""
    done = []
    for name in names:
        dataset = build_dataset(cfg, name, is_train=False)
        count = len(dataset) if num <= 0 else min(num, len(dataset))
        for i in range(count):
            info = dataset.get_img_info(i)
            target = dataset.get_target(i)
            title = f"{name}: {info['file_name']} (id {info['id']}), {len(target)} instances"
            save_png(_draw_target(dataset.load_image(i), target, dataset, title),
                     os.path.join(output, name, _png_name(info["file_name"])))
        done.append((name, count))
    return done


def draw_dataloader(cfg, output: str, num: int) -> int:
    """The first ``num`` training samples, as the model receives them; returns their number."""
    dataset = build_train_dataset(cfg)
    loader = build_train_loader(cfg, dataset=dataset)
    total = len(dataset) if num <= 0 else num
    written = 0
    for images, targets, infos in loader:
        for image, target, info in zip(images, targets, infos):
            h, w = image.shape[-2:]
            title = (f"{info['file_name']} (id {info['image_id']}): {info['height']}x{info['width']} -> "
                     f"{h}x{w}, {len(target)} instances")
            save_png(_draw_target(image, target, dataset, title),
                     os.path.join(output, "dataloader", f"{written:04d}_{_png_name(info['file_name'])}"))
            written += 1
            if written >= total:
                return written
    return written


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    opts = list(args.opts)
    if args.source == "dataloader":
        if args.datasets:
            opts += ["DATASETS.TRAIN", repr(tuple(args.datasets))]
        # Enough iterations for N images; the samples' seeds do not depend on MAX_ITER.
        per_batch = max(1, int(load_cfg(args.config_file or None, opts).SOLVER.IMS_PER_BATCH))
        iters = math.ceil(args.num / per_batch) if args.num > 0 else 10 ** 9
        opts += ["SOLVER.MAX_ITER", str(iters)]
    cfg = load_cfg(args.config_file or None, opts)
    setup_logger("maskrcnn")
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "visualize_data")
    try:
        if args.source == "dataloader":
            n = draw_dataloader(cfg, output, args.num)
            print(f"{'+'.join(cfg.DATASETS.TRAIN)} (training loader): {n} images -> "
                  f"{os.path.join(output, 'dataloader')}")
            return 0
        names = dataset_names(args, cfg)
        if not names:
            print("no datasets to draw: set DATASETS.TRAIN / DATASETS.TEST or pass --datasets NAME ...")
            return 1
        for name, count in draw_annotations(cfg, names, output, args.num):
            print(f"{name}: {count} images -> {os.path.join(output, name)}")
    except UserError:  # unknown dataset, missing file, DatasetError, ConfigError
        raise
    except ValueError as exc:  # an image that does not decode, a mask that does not fit
        raise DataError(f"{exc}\n(tools/check_dataset.py lists every problem of a dataset)") from exc
    except OSError as exc:  # the output folder is not writable
        raise UserError(f"--output {output}: {exc.strerror or exc}") from exc
    return 0


if __name__ == "__main__":
    main_guard(lambda: main(sys.argv[1:]))
