"""A small yacs-like configuration node built on PyYAML.

``CfgNode`` is a ``dict`` with attribute access, freezing, deep cloning, YAML
(de)serialisation with ``_BASE_`` inheritance and strict, type-checked merging
from files, other configs and command-line ``KEY VALUE`` lists. How a given value is
checked against, and converted to, the type of the default is in :mod:`.values`; the errors
are in :mod:`.errors`.
"""

import copy
import difflib
import os
import warnings
from collections.abc import Mapping
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set

import yaml

from .errors import ConfigError, ConfigFileError, ConfigKeyError, ConfigTypeError
from .values import coerce_value, decode_value, to_plain, type_error

__all__ = ["CfgNode", "ConfigError", "ConfigKeyError", "ConfigTypeError", "ConfigFileError"]

BASE_KEY = "_BASE_"
_INTERNAL = ("_frozen", "_new_allowed", "_renamed_keys", "_deprecated_keys")


class CfgNode(dict):
    """A configuration tree node: a dict whose keys are also attributes.

    Args:
        init_dict: Initial content; nested mappings become ``CfgNode`` s.
        new_allowed: Whether merges may add keys absent from this node (recursive).
    """

    def __init__(self, init_dict: Optional[Mapping] = None, new_allowed: bool = False) -> None:
        super().__init__()
        self.__dict__.update(_frozen=False, _new_allowed=new_allowed,
                             _renamed_keys={}, _deprecated_keys=set())
        for key, value in (init_dict or {}).items():
            if isinstance(value, Mapping) and not isinstance(value, CfgNode):
                value = type(self)(value, new_allowed=new_allowed)
            self[key] = value

    # ------------------------------------------------------------------ access
    def __getattr__(self, name: str) -> Any:
        if name in self:
            return self[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _INTERNAL:
            self.__dict__[name] = value
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        if name not in self:
            raise AttributeError(name)
        del self[name]

    def __setitem__(self, key: str, value: Any) -> None:
        if self.__dict__.get("_frozen", False):
            raise AttributeError(
                f"Attempted to set '{key}' to {value!r}, but the CfgNode is frozen")
        if isinstance(value, Mapping) and not isinstance(value, CfgNode):
            value = type(self)(value, new_allowed=self.__dict__.get("_new_allowed", False))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        if self.__dict__.get("_frozen", False):
            raise AttributeError(f"Attempted to delete '{key}', but the CfgNode is frozen")
        super().__delitem__(key)

    def __str__(self) -> str:
        try:
            return self.dump()
        except yaml.YAMLError:
            return self.__repr__()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({super().__repr__()})"

    # ------------------------------------------------------------ state flags
    def _children(self) -> Iterable["CfgNode"]:
        return (v for v in self.values() if isinstance(v, CfgNode))

    def freeze(self) -> None:
        """Makes this node and all its descendants immutable."""
        self._set_flag("_frozen", True)

    def defrost(self) -> None:
        """Makes this node and all its descendants mutable again."""
        self._set_flag("_frozen", False)

    def is_frozen(self) -> bool:
        """Tells whether this node is frozen.

        Returns:
            True if frozen.
        """
        return self.__dict__["_frozen"]

    def set_new_allowed(self, is_new_allowed: bool) -> None:
        """Allows (or forbids) merges to add new keys to this node and its descendants.

        Args:
            is_new_allowed: The new value of the flag.
        """
        self._set_flag("_new_allowed", is_new_allowed)

    def is_new_allowed(self) -> bool:
        """Tells whether merges may add new keys to this node.

        Returns:
            True if new keys are allowed.
        """
        return self.__dict__["_new_allowed"]

    def _set_flag(self, name: str, value: bool) -> None:
        self.__dict__[name] = value
        for child in self._children():
            child._set_flag(name, value)

    def register_renamed_key(self, old_name: str, new_name: str) -> None:
        """Registers a full dotted key that was renamed; merging it raises an error.

        Args:
            old_name: Former full key, e.g. ``"MODEL.RPN.OLD_NAME"``.
            new_name: Current full key to tell the user about.
        """
        self.__dict__["_renamed_keys"][old_name] = new_name

    def register_deprecated_key(self, key: str) -> None:
        """Registers a full dotted key that is ignored (with a warning) when merged.

        Args:
            key: Full dotted key, e.g. ``"MODEL.RPN.UNUSED"``.
        """
        self.__dict__["_deprecated_keys"].add(key)

    # ------------------------------------------------------------------ copies
    def clone(self) -> "CfgNode":
        """Deep-copies the tree.

        Returns:
            A deep copy (with the same flags and renamed/deprecated key registries).
        """
        new = type(self)()
        for key, value in self.items():
            dict.__setitem__(new, key, value.clone() if isinstance(value, CfgNode)
                             else copy.deepcopy(value))
        new.__dict__.update(_frozen=self.is_frozen(), _new_allowed=self.is_new_allowed(),
                            _renamed_keys=dict(self.__dict__["_renamed_keys"]),
                            _deprecated_keys=set(self.__dict__["_deprecated_keys"]))
        return new

    def __deepcopy__(self, memo: Dict[int, Any]) -> "CfgNode":
        return self.clone()

    # ----------------------------------------------------------- serialising
    def dump(self, **kwargs: Any) -> str:
        """Serialises the tree to plain, safe YAML (tuples are written as lists).

        Args:
            **kwargs: Passed to ``yaml.safe_dump`` (e.g. ``sort_keys=True``).

        Returns:
            The YAML text.
        """
        kwargs.setdefault("default_flow_style", False)
        kwargs.setdefault("sort_keys", False)
        return yaml.safe_dump(to_plain(self), **kwargs)

    def save(self, path: str) -> None:
        """Writes :meth:`dump` to ``path``.

        Args:
            path: Destination file.
        """
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.dump())

    # ---------------------------------------------------------------- merging
    def merge_from_file(self, cfg_filename: str) -> None:
        """Merges a YAML file (and, first, the files its ``_BASE_`` key names).

        ``_BASE_`` is a path or list of paths, relative to the directory of the
        file naming it; bases are merged in order, then the file's own keys.

        Args:
            cfg_filename: Path to the YAML file.

        Raises:
            ConfigFileError: Missing/unparsable file, non-mapping content, ``_BASE_`` cycle.
            ConfigKeyError: Unknown or renamed key.
            ConfigTypeError: Value of the wrong type.
        """
        self._merge_file(str(cfg_filename), [])

    def _merge_file(self, path: str, stack: List[str]) -> None:
        real = os.path.realpath(path)
        if real in stack:
            chain = " -> ".join(stack[stack.index(real):] + [real])
            raise ConfigFileError(f"Cycle in {BASE_KEY} inheritance: {chain}")
        try:
            with open(path, "r", encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except OSError as e:
            raise ConfigFileError(f"Cannot read config file '{path}': {e}") from e
        except yaml.YAMLError as e:
            raise ConfigFileError(f"Invalid YAML in config file '{path}': {e}") from e
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigFileError(f"Config file '{path}' must contain a mapping at top level, "
                                  f"got {type(data).__name__}")
        bases = data.pop(BASE_KEY, None)
        if bases is not None:
            if isinstance(bases, str):
                bases = [bases]
            if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
                raise ConfigFileError(f"'{BASE_KEY}' in config file '{path}' must be a path "
                                      f"or a list of paths, got {bases!r}")
            for base in bases:
                base = os.path.expanduser(base)
                if not os.path.isabs(base):
                    base = os.path.join(os.path.dirname(path), base)
                self._merge_file(base, stack + [real])
        self._merge_mapping(data, self, "", path)

    def merge_from_other_cfg(self, cfg_other: Mapping) -> None:
        """Merges another config (or mapping) into this one.

        Args:
            cfg_other: The config to merge; its keys must exist here (or be new_allowed).
        """
        self._merge_mapping(cfg_other, self, "", "merge_from_other_cfg")

    def merge_from_list(self, cfg_list: Sequence[str]) -> None:
        """Merges ``[KEY, VALUE, KEY, VALUE, ...]`` pairs, e.g. from the command line.

        Keys are full dotted keys; values are parsed with ``ast.literal_eval``
        when possible and kept as raw strings otherwise.

        Args:
            cfg_list: Flat list of alternating full keys and values.

        Raises:
            ConfigKeyError: Odd-length list, unknown or renamed key.
            ConfigTypeError: Value of the wrong type.
        """
        source = "command line"
        if len(cfg_list) % 2 != 0:
            raise ConfigKeyError(
                f"Override list must have an even length (KEY VALUE pairs), got {len(cfg_list)} "
                f"items: {list(cfg_list)!r}")
        for full_key, raw in zip(cfg_list[0::2], cfg_list[1::2]):
            parts = str(full_key).split(".")
            if not all(parts):
                raise ConfigKeyError(f"Malformed config key '{full_key}' (from {source})")
            if self._check_registries(full_key, source, prefixes=True):
                continue
            node = self
            for i, part in enumerate(parts[:-1]):
                child = node.get(part)
                if isinstance(child, CfgNode):
                    node = child
                elif part not in node and node.is_new_allowed():
                    node[part] = type(self)(new_allowed=True)
                    node = node[part]
                else:
                    if part in node:  # a leaf used as a node
                        raise type_error(".".join(parts[:i + 1]), child, {}, source)
                    self._raise_unknown(".".join(parts[:i + 1]), source)
            key, value = parts[-1], decode_value(raw)
            if key in node:
                old = node[key]
                if isinstance(old, CfgNode):
                    if not isinstance(value, Mapping):
                        raise type_error(full_key, old, value, source)
                    self._merge_mapping(value, old, full_key + ".", source)
                    continue
                if isinstance(old, str) and isinstance(raw, str):
                    value = raw if not isinstance(value, str) else value
                node[key] = coerce_value(value, old, full_key, source)
            elif node.is_new_allowed():
                node[key] = value
            else:
                self._raise_unknown(full_key, source)

    def _check_registries(self, full_key: str, source: str, prefixes: bool = False) -> bool:
        """Raises for renamed keys; returns True (after warning) for deprecated ones."""
        parts = full_key.split(".")
        candidates = [".".join(parts[:i]) for i in range(1, len(parts) + 1)] if prefixes \
            else [full_key]
        renamed = self.__dict__["_renamed_keys"]
        for cand in candidates:
            if cand in renamed:
                raise ConfigKeyError(f"Config key '{cand}' (from {source}) was renamed to "
                                     f"'{renamed[cand]}'; please update your config")
            if cand in self.__dict__["_deprecated_keys"]:
                warnings.warn(f"Config key '{cand}' (from {source}) is deprecated and ignored")
                return True
        return False

    def _merge_mapping(self, src: Mapping, dst: "CfgNode", prefix: str, source: str) -> None:
        for key, value in src.items():
            if not isinstance(key, str):
                raise ConfigKeyError(f"Config keys must be strings, got {key!r} under "
                                     f"'{prefix or '<root>'}' (from {source})")
            full_key = prefix + key
            if self._check_registries(full_key, source):
                continue
            if key not in dst:
                if not dst.is_new_allowed():
                    self._raise_unknown(full_key, source)
                if isinstance(value, Mapping):
                    dst[key] = type(self)(new_allowed=True)
                    self._merge_mapping(value, dst[key], full_key + ".", source)
                else:
                    dst[key] = copy.deepcopy(value)
                continue
            old = dst[key]
            if isinstance(old, CfgNode):
                if not isinstance(value, Mapping):
                    raise type_error(full_key, old, value, source)
                self._merge_mapping(value, old, full_key + ".", source)
            else:
                dst[key] = coerce_value(copy.deepcopy(value), old, full_key, source)

    def _all_keys(self, prefix: str = "") -> List[str]:
        keys = []
        for key, value in self.items():
            keys.append(prefix + str(key))
            if isinstance(value, CfgNode):
                keys.extend(value._all_keys(prefix + str(key) + "."))
        return keys

    def _raise_unknown(self, full_key: str, source: str) -> None:
        keys = self._all_keys()
        matches = difflib.get_close_matches(full_key, keys, n=3, cutoff=0.8)
        by_last: Dict[str, List[str]] = {}
        for k in keys:
            by_last.setdefault(k.rsplit(".", 1)[-1], []).append(k)
        last = full_key.rsplit(".", 1)[-1]
        extra = [k for name in difflib.get_close_matches(last, list(by_last), n=3, cutoff=0.75)
                 for k in by_last[name]]
        extra.sort(key=lambda k: -difflib.SequenceMatcher(None, full_key, k).ratio())
        seen: Set[str] = set()
        suggestions = [k for k in matches + extra if not (k in seen or seen.add(k))][:3]
        msg = f"Unknown config key '{full_key}' (from {source})"
        if suggestions:
            msg += ". Did you mean: " + ", ".join(f"'{s}'" for s in suggestions) + "?"
        raise ConfigKeyError(msg)
