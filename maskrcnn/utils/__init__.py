"""Utilities: distributed helpers, logging, metrics and events.

TensorBoard is only imported when :class:`TensorboardWriter` is instantiated.
"""

from .comm import (
    all_gather,
    gather_to_main,
    get_local_rank,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    local_rank_from_env_or_arg,
    reduce_dict,
    synchronize,
)
from .events import TensorboardWriter
from .logger import setup_logger
from .metric_logger import MetricLogger, SmoothedValue, eta_string

__all__ = [
    "all_gather",
    "gather_to_main",
    "get_local_rank",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "local_rank_from_env_or_arg",
    "reduce_dict",
    "synchronize",
    "TensorboardWriter",
    "setup_logger",
    "MetricLogger",
    "SmoothedValue",
    "eta_string",
]
