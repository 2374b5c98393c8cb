"""Errors that are the user's, and how the command-line tools report them.

A mistake in a config, a dataset, a weights file or a training recipe is not a bug: the tools
print ONE block (what went wrong, which key / file / id, what to do) without a traceback, write
it to ``OUTPUT_DIR/log.txt`` once that log exists, and exit with a status that says which kind
of mistake it was:

====  =====================================================================================
code  meaning
====  =====================================================================================
0     success
1     a bug (with its traceback), or a tool's own "found problems" result (check_dataset)
2     config or command line: unknown key, bad value, unusable OUTPUT_DIR (:class:`ConfigError`)
3     data: unknown dataset, missing files, broken annotations (:class:`DataError`)
4     weights or checkpoint: missing, corrupt, unsafe, wrong format (:class:`WeightsError`)
5     training stopped: non-finite loss or divergence (:class:`TrainingStoppedError`)
====  =====================================================================================

Every other exception is a bug and keeps its traceback. With the environment variable
``MASKRCNN_DEBUG=1`` user errors show their traceback too (above the block; same exit status).

This module imports nothing from the package, so that every layer can raise these errors.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import traceback
from typing import Callable, NoReturn, Optional

__all__ = ["DEBUG_ENV", "EXIT_BUG", "EXIT_CONFIG", "EXIT_DATA", "EXIT_STOPPED", "EXIT_WEIGHTS",
           "DataError", "TrainingStoppedError", "UserError", "WeightsError", "debug_enabled",
           "format_user_error", "main_guard"]

EXIT_BUG = 1
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_WEIGHTS = 4
EXIT_STOPPED = 5
DEBUG_ENV = "MASKRCNN_DEBUG"
LOGGER_NAME = "maskrcnn"  # the logger whose file handler writes OUTPUT_DIR/log.txt


class UserError(Exception):
    """Base of the errors that are the user's to fix; the message says what, where and what to do.

    Subclasses set ``exit_code`` (the tool's exit status) and ``kind`` (the block's headline).
    ``ConfigError`` (maskrcnn.config) is one, with status 2.
    """

    exit_code: int = EXIT_CONFIG
    kind: str = "usage error"

    def __str__(self) -> str:  # a KeyError mixed in would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(UserError):
    """A dataset cannot be used: unknown name, missing or broken files, invalid annotations."""

    exit_code = EXIT_DATA
    kind = "data error"


class WeightsError(UserError):
    """A weights file or checkpoint cannot be used: missing, corrupt, unsafe or of an unknown format."""

    exit_code = EXIT_WEIGHTS
    kind = "weights / checkpoint error"


class TrainingStoppedError(UserError):
    """Training was stopped by a guard (non-finite loss, divergence) before the bad step was applied."""

    exit_code = EXIT_STOPPED
    kind = "training stopped"


def debug_enabled() -> bool:
    """Whether ``MASKRCNN_DEBUG`` asks for tracebacks of user errors too (any value but "", 0, false)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def format_user_error(error: UserError) -> str:
    """The block a tool prints for ``error``.

    Args:
        error: the user error.

    Returns:
        Several lines: a headline with the kind and exit status, ``ErrorClass: message`` (the
        message names the key / file / id and what to do), and how to see the traceback.
    """
    rank = os.environ.get("RANK")
    where = f" on rank {rank}" if rank not in (None, "", "0") else ""
    return (f"ERROR ({error.kind}, exit status {error.exit_code}){where}:\n"
            f"{type(error).__name__}: {str(error).rstrip()}\n"
            f"(No traceback: this is not a bug in maskrcnn. {DEBUG_ENV}=1 shows where it was raised.)")


def _write_to_log_files(block: str) -> None:
    """Appends ``block`` to the log files of the ``maskrcnn`` logger (``OUTPUT_DIR/log.txt``), if any."""
    log = logging.getLogger(LOGGER_NAME)
    record = log.makeRecord(LOGGER_NAME, logging.ERROR, __file__, 0, block, None, None)
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            try:
                handler.handle(record)
                handler.flush()
            except (OSError, ValueError):  # a full disk must not hide the message on stderr
                pass


def report_user_error(error: UserError) -> int:
    """Prints the block of ``error`` to stderr (with the traceback in debug mode) and to the log file.

    Must be called while handling ``error`` (inside ``except``) for the traceback to show.

    Returns:
        The exit status for ``error``.
    """
    if debug_enabled():
        traceback.print_exc()
    block = format_user_error(error)
    sys.stdout.flush()
    print(block, file=sys.stderr, flush=True)
    _write_to_log_files(block)
    return error.exit_code


def main_guard(main: Callable[[], Optional[int]]) -> NoReturn:
    """Runs a tool's ``main`` and exits: its return value (None: 0), or the status of a user error.

    A :class:`UserError` prints one block without traceback (see :func:`report_user_error`);
    anything else propagates with its traceback (exit status 1). Every tool's
    ``if __name__ == "__main__":`` is ``main_guard(main)`` (or ``main_guard(lambda: main(argv))``).

    Args:
        main: the tool's entry point; returns an exit status or None.
    """
    try:
        status = main()
    except UserError as e:
        sys.exit(report_user_error(e))
    # Everything left is freed at exit anyway: frozen, it is spared the cyclic GC's passes over
    # the interpreter's teardown (about 1 s with torch and torchvision loaded).
    gc.freeze()
    sys.exit(int(status or 0))
