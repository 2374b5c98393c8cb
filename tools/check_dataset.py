#!/usr/bin/env python
"""Check the datasets of a config before training:

    python tools/check_dataset.py --config-file configs/X.yaml [--datasets NAME ...] [--full-decode] [KEY VALUE ...]

Checks every dataset of DATASETS.TRAIN and DATASETS.TEST (or those named with --datasets):
the annotation JSON and every image file's header (with --full-decode, every image is
decoded, which also finds truncated files). Prints one summary line per dataset, then each
error, repair and conversion with its annotation / image id and file. Training runs the
same checks (at DATASETS.CHECK, header-only by default) and refuses to start on errors.

Exit status: 0 when every dataset is clean or only repaired / converted, 1 on errors; a config
or command-line mistake is one message with status 2 (README: "When something is wrong").
"""
import argparse
import os
import sys
from typing import List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maskrcnn.config import load_cfg  # noqa: E402
from maskrcnn.data.datasets.catalog import resolve_dataset  # noqa: E402
from maskrcnn.data.datasets.check import check_dataset  # noqa: E402
from maskrcnn.data.datasets.report import CONVERTED, ERROR, REPAIRED  # noqa: E402
from maskrcnn.engine.launch import dataset_argument_parser, dataset_names, parse_dataset_args  # noqa: E402
from maskrcnn.utils.errors import main_guard  # noqa: E402



def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = dataset_argument_parser(
        "Check COCO-format datasets named in a config",
        datasets_help="datasets to check (default: DATASETS.TRAIN and DATASETS.TEST)",
        opts_help="config overrides as KEY VALUE pairs, e.g. DATASETS.CATALOG.x.ANN_FILE a.json")
    parser.add_argument("--full-decode", action="store_true",
                        help="decode every image (finds truncated files; much slower than headers)")
    parser.add_argument("--max-details", type=int, default=100, metavar="N",
                        help="repaired / converted findings listed per dataset (errors: all); 0: none")
    return parse_dataset_args(parser, argv)


def check_one(name: str, cfg, full_decode: bool, max_details: int) -> bool:
    """Print the report of dataset ``name``; True when it has errors."""
    try:
        spec = resolve_dataset(name, cfg.DATASETS)
    except (KeyError, ValueError) as exc:  # unknown name, incomplete CATALOG entry, missing file
        print(f"{name}: error: {exc}")
        return True
    report = check_dataset(spec["ann_file"], spec["img_dir"], name,
                           images="full" if full_decode else "header").report
    print(report.summary())
    lines = report.details(ERROR)
    for level in (REPAIRED, CONVERTED):
        lines += report.details(level, limit=max_details) if max_details > 0 else []
    for line in lines:
        print(f"  {line}")
    return bool(report.errors)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    cfg = load_cfg(args.config_file or None, args.opts)
    names = dataset_names(args, cfg)
    if not names:
        print("no datasets to check: set DATASETS.TRAIN / DATASETS.TEST or pass --datasets NAME ...")
        return 1
    failed = [name for name in names if check_one(name, cfg, args.full_decode, args.max_details)]
    if failed:
        print(f"{len(failed)} of {len(names)} datasets have errors ({', '.join(failed)}): fix them "
              "before training; training refuses to start on them.")
        return 1
    print(f"{len(names)} dataset{'s' if len(names) != 1 else ''} checked: no errors.")
    return 0


if __name__ == "__main__":
    main_guard(lambda: main(sys.argv[1:]))
