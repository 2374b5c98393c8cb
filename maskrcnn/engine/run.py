"""What ``tools/train_net.py`` and ``tools/test_net.py`` do, as functions: wiring only.

The step is :mod:`.trainer`, what happens around it :mod:`.hooks`, the resume policy (seed, RNG
states, data position) :mod:`.resume`.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import Checkpointer
from ..checkpoint.weights import convention_of
from ..config import CfgNode, ConfigError, resolve_num_classes
from ..solver.scaling import auto_scale_workers
from ..data.build import build_test_loaders, build_train_dataset, build_train_loader, dataset_categories
from ..data.prefetch import DevicePrefetcher
from ..modeling import build_model
from ..solver import make_lr_scheduler, make_optimizer
from ..utils.comm import get_rank, get_world_size, is_main_process, synchronize
from ..utils.events import TensorboardWriter
from .hooks import (DivergenceError, DivergenceGuard, EvalHook, IterationTimer, MetricsWriter,
                    NonFiniteGuard, PeriodicCheckpointer)
from .proposal_visualizer import ProposalVisualizer
from .inference import evaluate, evaluate_datasets
from .resume import (check_data_position, data_state, restore_rng_states, resumed_seed, seed_all,
                     training_state, with_seed)
from .trainer import HookBase, NonFiniteLossError, Trainer

logger = logging.getLogger("maskrcnn.engine")


def _rpn_only_skip(cfg: CfgNode) -> bool:
    if cfg.MODEL.RPN_ONLY:
        logger.warning("MODEL.RPN_ONLY: proposals have no classes, and proposal-recall evaluation is "
                       "not implemented; DATASETS.TEST is not evaluated")
    return bool(cfg.MODEL.RPN_ONLY)


def warn_random_init(cfg: CfgNode) -> List[str]:
    """Warns (and returns the warnings) when a run starts without weights (``MODEL.WEIGHT`` "", no
    resume) in a way that cannot train from scratch: the stem and first stages frozen at their
    random values (``MODEL.BACKBONE.FREEZE_CONV_BODY_AT`` > 0), or a frozen BatchNorm, which only
    has the identity to offer without pretrained statistics. Both are maskrcnn-benchmark's
    defaults, made for ImageNet weights; a recipe from scratch sets 0 and GN or BN (the quickstart)."""
    warnings = []
    freeze, norm = cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT, cfg.MODEL.RESNETS.NORM
    if freeze > 0:
        stages = {1: "", 2: " and res2"}.get(freeze, f" and res2..res{freeze}")
        warnings.append(f"MODEL.BACKBONE.FREEZE_CONV_BODY_AT is {freeze}: the stem{stages} "
                        f"{'stays' if freeze == 1 else 'stay'} at random values (set it to 0 to train "
                        f"{'it' if freeze == 1 else 'them'})")
    if norm == "FrozenBN":
        warnings.append("MODEL.RESNETS.NORM is FrozenBN, which does not learn: set GN or BN to train from scratch")
    if warnings:
        logger.warning("MODEL.WEIGHT is empty, so the model starts from random weights, and %s. Give "
                       "pretrained weights (e.g. MODEL.WEIGHT torchvision://resnet50) or fix these.",
                       "; ".join(warnings))
    return warnings


def _write_config(cfg: CfgNode) -> None:
    if is_main_process() and cfg.OUTPUT_DIR:
        path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
        cfg.save(path)
        logger.info("Saved the merged config to %s", path)


def _evaluate(cfg: CfgNode, model: nn.Module, loaders, details: bool = False) -> Dict[str, dict]:
    """Metrics per dataset; with ``details``, the whole DatasetEvaluation (for the EvalHook)."""
    head = cfg.MODEL.ROI_MASK_HEAD
    fn = evaluate_datasets if details else evaluate
    return fn(model, loaders, cfg.OUTPUT_DIR, paste_rule=head.PASTE_RULE,
              mask_threshold=head.POSTPROCESS_MASKS_THRESHOLD)


def _explain_failure(cfg: CfgNode, error: BaseException) -> None:
    """With several processes, say that a dead or hung peer is the likely cause, and what to do."""
    if get_world_size() < 2 or isinstance(error, (NonFiniteLossError, DivergenceError, KeyboardInterrupt)):
        return
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    logger.error("Training stopped on rank %d: %s: %s. In a run of %d processes this usually means "
                 "another process died or hung (collectives give up after DIST_TIMEOUT_S = %g s). "
                 "Restart all processes with --resume to continue from %s.", get_rank(),
                 type(error).__name__, first[:300], get_world_size(), cfg.DIST_TIMEOUT_S,
                 os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))


def _clip_norm(cfg: CfgNode) -> Optional[float]:
    clip = cfg.SOLVER.CLIP_GRADIENTS
    return float(clip.MAX_NORM) if clip.ENABLED else None


def amp_settings(cfg: CfgNode) -> Tuple[Optional[torch.dtype], Optional[torch.amp.GradScaler]]:
    """``(autocast dtype, gradient scaler)`` of ``SOLVER.AMP``: ``(None, None)`` when off,
    ``(bfloat16, None)``, or ``(float16, GradScaler)``, which needs CUDA (refused on the CPU)."""
    amp = cfg.SOLVER.AMP
    if not amp.ENABLED:
        return None, None
    if amp.DTYPE == "bfloat16":
        return torch.bfloat16, None
    if not (str(cfg.MODEL.DEVICE).startswith("cuda") and torch.cuda.is_available()):
        where = "" if str(cfg.MODEL.DEVICE).startswith("cpu") else " (CUDA is not available here)"
        raise ConfigError(f"SOLVER.AMP.DTYPE float16 needs a CUDA device, but MODEL.DEVICE "
                          f"'{cfg.MODEL.DEVICE}' runs on the CPU{where}, where float16 autocast is many "
                          "times slower than float32: use SOLVER.AMP.DTYPE bfloat16 on the CPU, or "
                          "set SOLVER.AMP.ENABLED False")
    return torch.float16, torch.amp.GradScaler("cuda")


def build_trainer(cfg: CfgNode, model: nn.Module, loader, optimizer: torch.optim.Optimizer,
                  scheduler) -> Trainer:
    """The Trainer of ``model`` (DDP-wrapped with several processes): ``SOLVER.CLIP_GRADIENTS``,
    ``SOLVER.AMP``, and the batches copied to the model's device ahead of each step."""
    dtype, scaler = amp_settings(cfg)
    device = next(model.parameters()).device
    return Trainer(_ddp(model), DevicePrefetcher(loader, device), optimizer, scheduler,
                   clip_grad_norm=_clip_norm(cfg), amp_dtype=dtype, grad_scaler=scaler)


def build_hooks(cfg: CfgNode, checkpointer: Optional[Checkpointer], loader, categories: list,
                writer: Optional[TensorboardWriter],
                eval_fn: Optional[Callable[[], Dict[str, dict]]]) -> List[HookBase]:
    """The hooks of a training run, from ``SOLVER.*``, ``VIS_PERIOD`` and ``TEST.*``.

    Guards first: they decide before the step is applied; then timing, logs, saves, the
    proposal pictures (``VIS_PERIOD > 0``), and the evaluation (an :class:`EvalHook` of
    ``eval_fn``, when given).
    """
    s = cfg.SOLVER
    advice = dict(base_lr=s.BASE_LR, ims_per_batch=s.IMS_PER_BATCH, warmup_iters=s.WARMUP_ITERS,
                  optimizer=s.OPTIMIZER)
    divergence = (DivergenceGuard(s.DIVERGENCE.FACTOR, s.DIVERGENCE.REFERENCE_ITERS,
                                  clip_grad_norm=_clip_norm(cfg), **advice)
                  if s.DIVERGENCE.ENABLED else None)
    return [NonFiniteGuard(s.MAX_NONFINITE_SKIPS, **advice), divergence, IterationTimer(),
            MetricsWriter(s.LOG_PERIOD, writer),
            PeriodicCheckpointer(checkpointer, s.CHECKPOINT_PERIOD, state_fn=training_state(loader),
                                 extra={"categories": categories, "seed": cfg.SEED,
                                        "recommended_config": convention_of(cfg)}),
            ProposalVisualizer(cfg.VIS_PERIOD, writer, categories) if cfg.VIS_PERIOD > 0 else None,
            EvalHook(cfg.TEST.EVAL_PERIOD, eval_fn, writer, vis_images=cfg.TEST.VIS_IMAGES,
                     vis_score_threshold=cfg.TEST.VIS_SCORE_THRESHOLD) if eval_fn is not None else None]


def _continue(cfg: CfgNode, run_cfg: CfgNode, seed: int, extra: dict) -> CfgNode:
    """A resumed run: its seed (see ``resumed_seed``; a change is recorded) and RNG states."""
    resumed = resumed_seed(cfg.SEED, seed, extra)
    if resumed != seed:
        run_cfg = with_seed(run_cfg, resumed)
        _write_config(run_cfg)
    restore_rng_states(extra)
    return run_cfg


def _ddp(model: nn.Module) -> nn.Module:
    """DDP-wrapped whenever a process group exists: from 2 processes, or a group of one that the
    caller made (``benchmarks/gpu_check.py`` checks DDP on nccl that way)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return model
    device_ids = [torch.cuda.current_device()] if model.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False,
                                   find_unused_parameters=False)


def train(cfg: CfgNode, resume: bool = False) -> Dict[str, dict]:
    """Train per ``cfg``, evaluate on ``DATASETS.TEST`` at the end; returns the metrics (rank 0).

    ``cfg`` is not modified: the run's own config (drawn ``SEED``, resolved ``NUM_CLASSES``) is
    a frozen copy, saved as ``OUTPUT_DIR/config.yaml``. With ``resume``, everything needed to
    continue exactly is restored from the checkpoint: model, optimizer, scheduler, iteration,
    every rank's RNG states, the data seed and the hooks' state (skipped non-finite iterations,
    the divergence reference). A killed run resumed this way ends with the same weights, bit for
    bit, as an uninterrupted one (given the same processes and threads).
    """
    amp_settings(cfg)  # a refused AMP setting stops the run before the data is read
    cfg = auto_scale_workers(cfg, get_world_size())  # SOLVER.REFERENCE_WORLD_SIZE (0: unchanged)
    seed = seed_all(cfg.SEED)
    dataset = build_train_dataset(cfg)
    categories = dataset_categories(dataset)
    run_cfg = resolve_num_classes(with_seed(cfg, seed), len(categories),
                                  getattr(dataset, "name", "the training set"))
    model = build_model(run_cfg)
    optimizer = make_optimizer(run_cfg, model)
    scheduler = make_lr_scheduler(run_cfg, optimizer)
    checkpointer = Checkpointer(model, optimizer, scheduler, cfg.OUTPUT_DIR, save_to_disk=is_main_process(),
                                cfg=run_cfg)
    extra = checkpointer.resume_or_load(cfg.MODEL.WEIGHT, resume=resume)
    if not extra and not cfg.MODEL.WEIGHT:
        warn_random_init(cfg)
    _write_config(run_cfg)  # after the checkpoint or weights loaded: a refused one leaves the folder as it was
    start_iter, max_iter = int(extra.get("iteration", 0)), cfg.SOLVER.MAX_ITER
    if start_iter >= max_iter:
        logger.info("Checkpoint is at iteration %d >= SOLVER.MAX_ITER %d: nothing to train", start_iter, max_iter)
    if extra:
        run_cfg = _continue(cfg, run_cfg, seed, extra)
    loader = build_train_loader(run_cfg, start_iter=start_iter, dataset=dataset)
    if extra and start_iter < max_iter:
        check_data_position(extra, data_state(loader, start_iter))
    trainer = build_trainer(run_cfg, model, loader, optimizer, scheduler)
    writer = TensorboardWriter(cfg.OUTPUT_DIR) if is_main_process() and cfg.OUTPUT_DIR else None
    test_loaders = build_test_loaders(run_cfg) if cfg.DATASETS.TEST and not _rpn_only_skip(cfg) else []
    eval_fn = (lambda: _evaluate(run_cfg, model, test_loaders, details=True)) if test_loaders else None
    hooks = build_hooks(run_cfg, checkpointer, loader, categories, writer, eval_fn)
    eval_hook = next((h for h in hooks if isinstance(h, EvalHook)), None)
    trainer.register_hooks(hooks)
    trainer.load_state_dict(extra)
    try:
        if start_iter < max_iter:
            trainer.train(start_iter, max_iter)
        elif eval_hook is not None:
            eval_hook.evaluate(max_iter)
    except BaseException as e:
        _explain_failure(cfg, e)
        raise
    finally:
        if writer is not None:
            writer.close()
    synchronize()
    return eval_hook.results if eval_hook is not None else {}


def test(cfg: CfgNode) -> Dict[str, dict]:
    """Evaluate ``MODEL.WEIGHT`` on ``DATASETS.TEST``; writes ``OUTPUT_DIR/inference/<name>/``."""
    if _rpn_only_skip(cfg):
        return {}
    loaders = build_test_loaders(cfg)
    if not loaders:
        raise ConfigError("DATASETS.TEST is empty: name at least one dataset to evaluate on")
    if cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 0:
        dataset = loaders[0][1].dataset
        cfg = resolve_num_classes(cfg, len(dataset_categories(dataset)), getattr(dataset, "name", "DATASETS.TEST"))
    model = build_model(cfg)
    if not cfg.MODEL.WEIGHT:
        raise ConfigError("MODEL.WEIGHT is empty: give the checkpoint to evaluate, e.g. "
                         "MODEL.WEIGHT output/model_final.pth")
    Checkpointer(model, save_to_disk=False, cfg=cfg).load(cfg.MODEL.WEIGHT, model_only=True)
    return _evaluate(cfg, model, loaders)
