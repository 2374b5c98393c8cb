"""Configuration: ``get_cfg()`` returns a fresh copy of the defaults (see defaults.py)."""
from __future__ import annotations

from typing import Optional, Sequence

from .cfgnode import CfgNode, ConfigError, ConfigKeyError, ConfigTypeError
from .defaults import UNSUPPORTED_VALUES, _C

__all__ = ["CfgNode", "ConfigError", "ConfigKeyError", "ConfigTypeError", "get_cfg", "load_cfg", "resolve_num_classes", "check_supported"]


def get_cfg() -> CfgNode:
    """A new, independent copy of the default configuration."""
    return _C.clone()


def check_supported(cfg: CfgNode) -> None:
    """Keys kept only for maskrcnn-benchmark compatibility must keep their only supported value."""
    for key, allowed in UNSUPPORTED_VALUES.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        if node != allowed:
            raise ConfigError(f"config key {key} = {node!r} is not supported by this project "
                              f"(only {allowed!r}); remove it from your config")
    if cfg.SOLVER.WARMUP_METHOD not in ("linear", "constant"):
        raise ConfigError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {cfg.SOLVER.WARMUP_METHOD!r}")
    if list(cfg.SOLVER.STEPS) != sorted(cfg.SOLVER.STEPS):
        raise ConfigError(f"SOLVER.STEPS must be increasing, got {tuple(cfg.SOLVER.STEPS)}")


def load_cfg(config_file: Optional[str] = None, opts: Sequence[str] = ()) -> CfgNode:
    """Defaults, then ``config_file`` (with ``_BASE_``), then ``KEY VALUE`` overrides; validated, frozen."""
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    check_supported(cfg)
    cfg.freeze()
    return cfg


def resolve_num_classes(cfg: CfgNode, num_categories: int, dataset_name: str = "the training set") -> int:
    """Check or fill ``MODEL.ROI_BOX_HEAD.NUM_CLASSES`` (background included) from a dataset.

    Args:
        cfg: the config; if frozen it is defrosted and frozen again.
        num_categories: categories of the dataset (background excluded).

    Returns:
        The number of classes, background included.
    """
    wanted = num_categories + 1
    given = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    if given not in (0, wanted):
        hint = (" (NUM_CLASSES counts the background: use "
                f"{wanted}, or 0 to take it from the data)")
        raise ConfigError(f"MODEL.ROI_BOX_HEAD.NUM_CLASSES is {given} but {dataset_name} has "
                          f"{num_categories} categories, i.e. {wanted} classes with background{hint}")
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = wanted
    if frozen:
        cfg.freeze()
    return wanted
