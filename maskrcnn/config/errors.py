"""The config errors: each names the key (or file) and what to use instead."""
from ..utils.errors import UserError

__all__ = ["ConfigError", "ConfigKeyError", "ConfigTypeError", "ConfigFileError"]


class ConfigError(UserError, KeyError, ValueError):
    """Base class of all config errors (a ``UserError`` with exit status 2, and both a ``KeyError``
    and a ``ValueError``); the message names the key and what to use instead."""

    kind = "configuration error"


class ConfigKeyError(ConfigError):
    """Unknown, renamed or malformed config key."""


class ConfigTypeError(ConfigError):
    """A value whose type is incompatible with the default value's type."""


class ConfigFileError(ConfigError):
    """A config file that is missing, unparsable, malformed or part of a ``_BASE_`` cycle."""
