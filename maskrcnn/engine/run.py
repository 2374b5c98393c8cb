"""What ``tools/train_net.py`` and ``tools/test_net.py`` do, as functions."""
from __future__ import annotations

import logging
import os
from typing import Dict

import torch
from torch.nn.parallel import DistributedDataParallel

from ..config import CfgNode, resolve_num_classes
from ..data.build import build_test_loaders, build_train_dataset, build_train_loader, dataset_categories
from ..modeling import build_model
from ..solver import make_lr_scheduler, make_optimizer
from ..utils.checkpoint import Checkpointer
from ..utils.comm import get_world_size, is_main_process, synchronize
from ..utils.events import TensorboardWriter
from .inference import evaluate
from .launch import seed_all
from .trainer import Trainer

logger = logging.getLogger("maskrcnn.engine")


def _resolve_classes_from(cfg: CfgNode, dataset) -> list:
    cats = dataset_categories(dataset)
    resolve_num_classes(cfg, len(cats), getattr(dataset, "name", "the training set"))
    return cats


def _rpn_only_skip(cfg: CfgNode) -> bool:
    if cfg.MODEL.RPN_ONLY:
        logger.warning("MODEL.RPN_ONLY: proposals have no classes, and proposal-recall evaluation is "
                       "not implemented; DATASETS.TEST is not evaluated")
    return bool(cfg.MODEL.RPN_ONLY)


def _write_config(cfg: CfgNode) -> None:
    if is_main_process() and cfg.OUTPUT_DIR:
        path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
        cfg.save(path)
        logger.info("Saved the merged config to %s", path)


def train(cfg: CfgNode, resume: bool = False) -> Dict[str, dict]:
    """Train per ``cfg``, evaluate on ``DATASETS.TEST`` at the end; returns the metrics (rank 0)."""
    seed = seed_all(cfg.SEED)
    cfg.SEED = seed  # a drawn seed is recorded in config.yaml and used by the data loader too
    dataset = build_train_dataset(cfg)
    categories = _resolve_classes_from(cfg, dataset)
    _write_config(cfg)
    model = build_model(cfg)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(model, optimizer, scheduler, cfg.OUTPUT_DIR, save_to_disk=is_main_process())
    extra = checkpointer.resume_or_load(cfg.MODEL.WEIGHT, resume=resume)
    start_iter = int(extra.get("iteration", 0))
    if start_iter >= cfg.SOLVER.MAX_ITER:
        logger.info("Checkpoint is at iteration %d >= SOLVER.MAX_ITER %d: nothing to train",
                    start_iter, cfg.SOLVER.MAX_ITER)
    loader = build_train_loader(cfg, start_iter=start_iter, dataset=dataset)
    if get_world_size() > 1:
        device_ids = [torch.cuda.current_device()] if model.device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False,
                                              find_unused_parameters=False)
    else:
        train_model = model
    writer = TensorboardWriter(cfg.OUTPUT_DIR) if is_main_process() and cfg.OUTPUT_DIR else None
    test_loaders = build_test_loaders(cfg) if cfg.DATASETS.TEST and not _rpn_only_skip(cfg) else []

    def eval_fn(iteration: int) -> dict:
        return evaluate(model, test_loaders, cfg.OUTPUT_DIR)

    trainer = Trainer(
        model=train_model, data_loader=loader, optimizer=optimizer, scheduler=scheduler,
        checkpointer=checkpointer, max_iter=cfg.SOLVER.MAX_ITER, checkpoint_period=cfg.SOLVER.CHECKPOINT_PERIOD,
        log_period=cfg.SOLVER.LOG_PERIOD, writer=writer, eval_fn=eval_fn if test_loaders else None,
        eval_period=cfg.TEST.EVAL_PERIOD,
        clip_grad_norm=cfg.SOLVER.CLIP_GRADIENTS.MAX_NORM if cfg.SOLVER.CLIP_GRADIENTS.ENABLED else None,
        checkpoint_extra={"categories": categories, "seed": seed},
        solver_hint=(cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.WARMUP_ITERS))
    try:
        if start_iter < cfg.SOLVER.MAX_ITER:
            trainer.train(start_iter)
        results = trainer.evaluate(cfg.SOLVER.MAX_ITER) if test_loaders else {}
    finally:
        if writer is not None:
            writer.close()
    synchronize()
    return results


def test(cfg: CfgNode) -> Dict[str, dict]:
    """Evaluate ``MODEL.WEIGHT`` on ``DATASETS.TEST``; writes ``OUTPUT_DIR/inference/<name>/``."""
    if _rpn_only_skip(cfg):
        return {}
    loaders = build_test_loaders(cfg)
    if not loaders:
        raise ValueError("DATASETS.TEST is empty: name at least one dataset to evaluate on")
    if cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 0:
        _resolve_classes_from(cfg, loaders[0][1].dataset)
    model = build_model(cfg)
    if not cfg.MODEL.WEIGHT:
        raise ValueError("MODEL.WEIGHT is empty: give the checkpoint to evaluate, e.g. "
                         "MODEL.WEIGHT output/model_final.pth")
    Checkpointer(model, save_to_disk=False).load(cfg.MODEL.WEIGHT, model_only=True)
    return evaluate(model, loaders, cfg.OUTPUT_DIR)
