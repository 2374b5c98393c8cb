"""Configuration: ``get_cfg()`` returns a fresh copy of the defaults (see defaults.py)."""
from __future__ import annotations

from typing import Optional, Sequence

from .cfgnode import CfgNode, ConfigError, ConfigKeyError, ConfigTypeError
from .checks import check_supported
from .defaults import _C

__all__ = ["CfgNode", "ConfigError", "ConfigKeyError", "ConfigTypeError", "get_cfg", "load_cfg", "resolve_num_classes", "check_supported"]


def get_cfg() -> CfgNode:
    """A new, independent copy of the default configuration."""
    return _C.clone()


def load_cfg(config_file: Optional[str] = None, opts: Sequence[str] = ()) -> CfgNode:
    """Defaults, then ``config_file`` (with ``_BASE_``), then ``KEY VALUE`` overrides; validated, frozen."""
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    check_supported(cfg)
    cfg.freeze()
    return cfg


def resolve_num_classes(cfg: CfgNode, num_categories: int, dataset_name: str = "the training set") -> CfgNode:
    """The one place where the number of classes is resolved (``MODEL.ROI_BOX_HEAD.NUM_CLASSES``,
    background included) from a dataset's categories.

    Args:
        cfg: the config; it is not modified.
        num_categories: categories of the dataset (background excluded).
        dataset_name: named in the error message.

    Returns:
        A frozen copy of ``cfg`` whose ``NUM_CLASSES`` is ``num_categories + 1``.

    Raises:
        ConfigError: ``NUM_CLASSES`` is set (non-zero) to another value.
    """
    wanted = num_categories + 1
    given = cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES
    if given not in (0, wanted):
        hint = (" (NUM_CLASSES counts the background: use "
                f"{wanted}, or 0 to take it from the data)")
        raise ConfigError(f"MODEL.ROI_BOX_HEAD.NUM_CLASSES is {given} but {dataset_name} has "
                          f"{num_categories} categories, i.e. {wanted} classes with background{hint}")
    out = cfg.clone()
    out.defrost()
    out.MODEL.ROI_BOX_HEAD.NUM_CLASSES = wanted
    out.freeze()
    return out
