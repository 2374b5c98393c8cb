"""How a value from a YAML file or the command line becomes a config value.

Type coercion follows the default value: ints become floats where the default is a float,
lists become tuples where it is a tuple (and back), strings that are Python literals are
parsed where it is not a string, and a bare string given for a tuple of names (a tuple of
strings, or ``()``, like ``DATASETS.TRAIN``) is a one-element tuple (``""``: empty), as
maskrcnn-benchmark users write ``TRAIN: "coco_2017_train"``. Anything else is a
:class:`~.errors.ConfigTypeError` naming the key.
"""
import ast
from collections.abc import Mapping
from typing import Any

from .errors import ConfigTypeError

__all__ = ["coerce_value", "decode_value", "to_plain", "type_error"]


def _tname(value: Any) -> str:
    return "CfgNode (mapping)" if isinstance(value, Mapping) else type(value).__name__


def _convert_seq(value: Any, kind: type) -> Any:
    """Recursively converts every list/tuple inside ``value`` to ``kind``."""
    if isinstance(value, (list, tuple)):
        return kind(_convert_seq(v, kind) for v in value)
    return value


def _holds_names(default: Any) -> bool:
    """Whether a default is a tuple of names (strings; ``()`` counts, e.g. ``DATASETS.TRAIN``),
    for which a bare string given in a file or on the command line means a one-element tuple."""
    return isinstance(default, tuple) and all(isinstance(v, str) for v in default)


def decode_value(value: Any) -> Any:
    """Parses a command-line string with ``ast.literal_eval``, keeping it raw if that fails.

    Args:
        value: a string (parsed) or anything else (returned as is).

    Returns:
        The Python literal the string spells, or ``value`` itself.
    """
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def to_plain(value: Any) -> Any:
    """Converts mappings to dicts and tuples to lists, recursively (for safe YAML)."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def type_error(full_key: str, old: Any, value: Any, source: str) -> ConfigTypeError:
    """The error for ``value`` given to ``full_key`` whose default is ``old``.

    Args:
        full_key: the dotted key, e.g. ``"SOLVER.BASE_LR"``.
        old: the current (default) value, whose type is expected.
        value: the value given.
        source: where it came from (a file name, ``"command line"``); named in the message.

    Returns:
        A :class:`~.errors.ConfigTypeError` to raise.
    """
    return ConfigTypeError(
        f"Invalid type for config key '{full_key}' (from {source}): expected "
        f"{_tname(old)}, got {_tname(value)} (value: {value!r})")


def coerce_value(value: Any, old: Any, full_key: str, source: str) -> Any:
    """Checks ``value`` against the type of the default ``old``; returns it converted.

    Args:
        value: the value given (from YAML, or decoded from the command line).
        old: the current (default) value of the key.
        full_key, source: named in the error message.

    Returns:
        ``value``, converted to ``old``'s type where the rules of this module allow it.

    Raises:
        ConfigTypeError: the types are incompatible.
    """
    if old is None or value is None:
        return value
    if isinstance(value, str) and not isinstance(old, str):
        # Like yacs: YAML strings such as "(4, 8, 16)" or "1e-4" are Python literals.
        value = decode_value(value)
    if isinstance(old, bool) or isinstance(value, bool):
        ok = isinstance(old, bool) and isinstance(value, bool)
    elif isinstance(old, float):
        if isinstance(value, int):
            return float(value)
        ok = isinstance(value, float)
    elif isinstance(old, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return _convert_seq(value, type(old))
        if isinstance(value, str) and _holds_names(old):
            return (value,) if value else ()  # a bare name, as maskrcnn-benchmark configs write
        ok = False
    else:
        ok = isinstance(value, type(old)) and not isinstance(value, Mapping)
    if not ok:
        raise type_error(full_key, old, value, source)
    return value
