"""Typed exceptions raised by ptaflow.

Library code raises these; only the command line turns them into exit codes. Every message
names the offending file, pulsar or parameter, says what was expected and, where it helps,
suggests a fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "PtaflowError",
    "DataError",
    "PulsarNotFoundError",
    "NoiseDictError",
    "CacheMismatchError",
    "ModelError",
    "PriorError",
    "ParameterError",
    "close_matches",
]


class PtaflowError(Exception):
    """Base class of every error ptaflow raises on purpose."""


class DataError(PtaflowError, ValueError):
    """A data file is missing, unreadable, or holds values that cannot be used."""


class PulsarNotFoundError(DataError, KeyError):
    """A pulsar name was asked for that the data set does not hold."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0]) if self.args else ""


class NoiseDictError(DataError):
    """A white-noise dictionary lacks a value that a pulsar's backends need."""


class CacheMismatchError(DataError):
    """A reduced-data cache was built from other inputs than the ones asked for."""


class ModelError(PtaflowError, ValueError):
    """An SGWB model file is invalid (missing fields, bad spectrum, bad priors)."""


class PriorError(PtaflowError, ValueError):
    """A prior was declared with invalid bounds or arguments."""


class ParameterError(PtaflowError, ValueError):
    """Parameter values or names do not match what a function expects."""


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return a ' Did you mean ...?' hint for an unknown name, or '' when nothing is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"
