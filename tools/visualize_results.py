#!/usr/bin/env python
"""Draw a ``coco_instances_results.json`` (what ``tools/test_net.py`` writes) over its images:

    python tools/visualize_results.py --results output/inference/mine_val/coco_instances_results.json \
        --ann-file data/val.json --img-dir data/val --output vis_results/ [--score-thr 0.5] [--side-by-side] [--num N]

Predictions scoring ``>= --score-thr`` are drawn (masks when the results have them, boxes,
class names and scores); an image without any says so, on the image and in the log. With
``--side-by-side`` each PNG shows the ground truth (not crowd regions) left of the predictions.
One ``<image file stem>.png`` per image of the annotation file (the first N with ``--num``).
"""
import argparse
import json
import logging
import os
import sys
from collections import defaultdict
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from maskrcnn.data.datasets.coco import load_coco_json  # noqa: E402
from maskrcnn.data.image_io import read_image_rgb  # noqa: E402
from maskrcnn.utils.errors import DataError, UserError, main_guard  # noqa: E402
from maskrcnn.utils.logger import setup_logger  # noqa: E402
from maskrcnn.utils.visualizer import draw_ground_truth, draw_predictions, save_png, side_by_side  # noqa: E402

logger = logging.getLogger("maskrcnn.visualize_results")


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Draw COCO-format detection results over their images")
    parser.add_argument("--results", required=True, help="coco_instances_results.json")
    parser.add_argument("--ann-file", required=True, help="the COCO annotation file the results are for")
    parser.add_argument("--img-dir", required=True, help="folder the annotation file's file_name entries are in")
    parser.add_argument("--output", required=True, help="folder for the PNG files")
    parser.add_argument("--score-thr", type=float, default=0.5, help="lowest score drawn (default 0.5)")
    parser.add_argument("--side-by-side", action="store_true", help="ground truth | predictions")
    parser.add_argument("--num", type=int, default=0, metavar="N", help="first N images only; 0: all")
    return parser.parse_args(argv)


def load_results(path: str, image_ids: set, category_ids: set) -> Dict[int, List[dict]]:
    """Results grouped by image id; ValueError naming the file and entry when one does not fit."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            results = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"results file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(results, list):
        raise ValueError(f"{path}: expected a list of results (coco_instances_results.json), "
                         f"got a {type(results).__name__}")
    by_image: Dict[int, List[dict]] = defaultdict(list)
    for k, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(r):
            raise ValueError(f"{path}: result {k} lacks image_id, category_id, bbox or score: {str(r)[:200]}")
        if r["image_id"] not in image_ids:
            raise ValueError(f"{path}: result {k} is for image id {r['image_id']}, which is not in the "
                             "annotation file: give the --ann-file the results were computed on")
        if r["category_id"] not in category_ids:
            raise ValueError(f"{path}: result {k} has category id {r['category_id']}, which is not "
                             f"among the annotation file's categories {sorted(category_ids)}")
        by_image[r["image_id"]].append(r)
    return by_image


def _xyxy(xywh: List[List[float]]) -> torch.Tensor:
    boxes = torch.tensor(xywh, dtype=torch.float32).reshape(-1, 4)
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)


def _masks(segmentations: List, h: int, w: int, where: str) -> torch.Tensor:
    """``(N, h, w)`` bool from COCO segmentations (RLE or polygons; None: empty)."""
    out = np.zeros((len(segmentations), h, w), dtype=bool)
    for i, seg in enumerate(segmentations):
        if isinstance(seg, dict) and [int(v) for v in seg.get("size", ())] != [h, w]:
            raise ValueError(f"{where}: an RLE of size {seg.get('size')} on an image of (h, w) = ({h}, {w})")
        if seg:
            rles = mask_utils.frPyObjects(seg, h, w) if isinstance(seg, list) or isinstance(
                seg.get("counts"), list) else seg
            out[i] = mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles) > 0
    return torch.from_numpy(out)


def draw_image(coco, img: dict, results: List[dict], img_dir: str, score_thr: float,
               with_gt: bool) -> torch.Tensor:
    """Predictions (and ground truth) of one image, ``(3, H, W)`` uint8."""
    image = read_image_rgb(os.path.join(img_dir, img["file_name"]))
    h, w = image.shape[:2]
    # Colours and names are keyed by integer ids; string category ids get their rank.
    key = {cid: cid if isinstance(cid, int) else k + 1 for k, cid in enumerate(sorted(coco.cats, key=str))}
    names = {key[cid]: str(c["name"]) for cid, c in coco.cats.items()}
    has_masks = any("segmentation" in r for r in results)
    pred = draw_predictions(image, _xyxy([r["bbox"] for r in results]),
                            torch.tensor([key[r["category_id"]] for r in results], dtype=torch.long),
                            torch.tensor([float(r["score"]) for r in results]), names,
                            masks=_masks([r.get("segmentation") for r in results], h, w,
                                         f"results for {img['file_name']}") if has_masks else None,
                            score_thr=score_thr, image_name=img["file_name"])
    if not with_gt:
        return pred
    anns = [a for a in coco.imgToAnns.get(img["id"], []) if not a.get("iscrowd", 0)]
    gt = draw_ground_truth(image, _xyxy([a["bbox"] for a in anns]),
                           torch.tensor([key[a["category_id"]] for a in anns], dtype=torch.long), names,
                           masks=_masks([a.get("segmentation") for a in anns], h, w,
                                         f"annotations of {img['file_name']}"))
    return side_by_side([gt, pred], ["ground truth", f"predictions (score >= {score_thr:g})"])


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    setup_logger("maskrcnn")
    try:
        coco = load_coco_json(args.ann_file, args.img_dir)
        by_image = load_results(args.results, set(coco.imgs), set(coco.cats))
        ids = sorted(coco.imgs)[: args.num] if args.num > 0 else sorted(coco.imgs)
        for img_id in ids:
            img = coco.imgs[img_id]
            drawn = draw_image(coco, img, by_image.get(img_id, []), args.img_dir, args.score_thr,
                               args.side_by_side)
            save_png(drawn, os.path.join(args.output, os.path.splitext(os.path.basename(img["file_name"]))[0] + ".png"))
    except UserError:  # DatasetError, a missing image
        raise
    except ValueError as exc:  # results that do not fit the annotation file (names the file / entry)
        raise DataError(str(exc)) from exc
    except OSError as exc:  # --output not writable
        raise UserError(f"--output {args.output}: {exc.strerror or exc}") from exc
    kept = sum(1 for i in ids for r in by_image.get(i, []) if r["score"] >= args.score_thr)
    print(f"{len(ids)} images, {kept} predictions with score >= {args.score_thr:g} -> {args.output}")
    return 0


if __name__ == "__main__":
    main_guard(lambda: main(sys.argv[1:]))
