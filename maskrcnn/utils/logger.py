"""Logging setup for the ``maskrcnn`` package."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logger", "LOG_FORMAT"]

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
_HANDLER_TAG = "_maskrcnn_handler"


def setup_logger(
    name: str = "maskrcnn",
    output_dir: str | os.PathLike | None = None,
    distributed_rank: int = 0,
    filename: str = "log.txt",
) -> logging.Logger:
    """Configures a logger with console and optional file output.

    Rank 0 logs INFO and above to stdout and, when ``output_dir`` is given,
    appends to ``output_dir/filename``. Other ranks only print WARNING and
    above to stderr. Calling it again replaces the handlers it installed
    earlier instead of duplicating them.

    Module loggers created with ``logging.getLogger(__name__)`` inside the
    ``maskrcnn`` package propagate to the logger named ``"maskrcnn"``.

    Args:
        name: Logger name.
        output_dir: Directory for the log file (created if needed); no file
            is written when ``None`` or on non-zero ranks.
        distributed_rank: Global rank of this process.
        filename: Log file name inside ``output_dir``.

    Returns:
        The configured logger.
    """
    log = logging.getLogger(name)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, _HANDLER_TAG, False):
            log.removeHandler(h)
            h.close()

    formatter = logging.Formatter(LOG_FORMAT)
    if distributed_rank == 0:
        console = logging.StreamHandler(stream=sys.stdout)
        console.setLevel(logging.INFO)
    else:
        console = logging.StreamHandler(stream=sys.stderr)
        console.setLevel(logging.WARNING)
    console.setFormatter(formatter)
    setattr(console, _HANDLER_TAG, True)
    log.addHandler(console)

    if output_dir and distributed_rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, filename), mode="a")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(formatter)
        setattr(fh, _HANDLER_TAG, True)
        log.addHandler(fh)
    return log
