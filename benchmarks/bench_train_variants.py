"""Training-step time of config variants, side by side in one process, as ratios.

Small CPU machines are noisy: two runs of one config minutes apart can differ by 20%. So every
variant is built in the same process, and the variants take turns, a few steps each, on the same
batches, each turn starting with the next variant; the median step time of each is printed with
its ratio to the first variant.

A step is the model's forward with targets, the backward of the summed losses and the optimizer
step, as in training (data loading is not timed: the batches are made first).

    python benchmarks/bench_train_variants.py --config-file configs/quickstart.yaml \\
        --weights output/quickstart/model_final.pth \\
        --variant "" --variant "MODEL.ROI_MASK_HEAD.MAX_TRAIN_PER_IMAGE 0"

The batches come from the first variant's data settings. ``--weights`` matters for what depends
on the number of positive proposals (the mask head): a random model's proposals are poor, so few
of them are positives, while a trained model's are good. They are loaded as ``MODEL.WEIGHT`` is
(``load_weights``: any supported format, tensors of another shape skipped), so a variant with
another head gets that head at random; each line says how many tensors it loaded. Each
``--variant`` is a string of ``KEY VALUE`` overrides ("" for the config as it is). A bad key,
value or weights file ends in one message, as with the tools.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from maskrcnn.checkpoint.io import safe_load  # noqa: E402
from maskrcnn.checkpoint.weights import load_weights, resolve_weights  # noqa: E402
from maskrcnn.config import load_cfg, resolve_num_classes  # noqa: E402
from maskrcnn.data.build import build_train_dataset, build_train_loader, dataset_categories  # noqa: E402
from maskrcnn.modeling import build_model  # noqa: E402
from maskrcnn.solver import make_optimizer  # noqa: E402
from maskrcnn.utils.errors import main_guard  # noqa: E402


def _cfg(config_file: str, overrides: list, data_dir: str):
    return load_cfg(config_file, ["DATASETS.DATA_DIR", data_dir, "MODEL.DEVICE", "cpu", "MODEL.WEIGHT", "",
                                  "SEED", "0"] + overrides)


def _build(cfg, num_categories: int, weights: str):
    """The variant's model (and how many tensors came from ``weights``) and optimizer."""
    cfg = resolve_num_classes(cfg, num_categories)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    loaded = len(load_weights(model, weights, cfg=cfg)["loaded"]) if weights else 0
    return model, make_optimizer(cfg, model), loaded


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--variant", action="append", required=True,
                   help='"KEY VALUE ..." overrides of one variant; "" for the config as it is')
    p.add_argument("--weights", default="", help="checkpoint loaded into every variant where it fits")
    p.add_argument("--rounds", type=int, default=12, help="turns of each variant (the first is warm-up)")
    p.add_argument("--steps", type=int, default=3, help="steps per turn")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--data-dir", default="", help="DATASETS.DATA_DIR (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or tmp
        cfgs = [_cfg(args.config_file, shlex.split(v), data_dir) for v in args.variant]
        if args.weights:
            safe_load(resolve_weights(args.weights))  # a missing or broken file fails before the data
        cfg = cfgs[0]
        dataset = build_train_dataset(cfg)  # the variants share the first one's data
        loader = iter(build_train_loader(cfg, dataset=dataset))
        built = [_build(c, len(dataset_categories(dataset)), args.weights) for c in cfgs]
        times = [[] for _ in built]
        for rnd in range(args.rounds):
            batches = [next(loader)[:2] for _ in range(args.steps)]
            # Each turn starts with another variant: with a fixed order, the variant that always ran
            # first, right after the batches were made, came out 5-20% slower than it was.
            order = [(i + rnd) % len(built) for i in range(len(built))]
            for (model, optimizer, _), t in ((built[i], times[i]) for i in order):
                for images, targets in batches:
                    start = time.perf_counter()
                    loss = sum(model(images, targets).values())
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if rnd > 0:
                        t.append(time.perf_counter() - start)
    first = statistics.median(times[0])
    print(f"{torch.get_num_threads()} threads, {args.rounds - 1} timed turns of {args.steps} steps "
          f"(batch {cfg.SOLVER.IMS_PER_BATCH}), weights: {args.weights or 'random'}")
    for v, t, (model, _, loaded) in zip(args.variant, times, built):
        med = statistics.median(t)
        of = f"   ({loaded} of {len(model.state_dict())} tensors loaded)" if args.weights else ""
        print(f"  {v or '(as configured)':60s} median {med * 1e3:7.1f} ms / step   ratio {med / first:.2f}{of}")
    return 0


if __name__ == "__main__":
    main_guard(main)
