"""Checks of the keys and values of a batch job file's TOML tables.

Each check raises `ptaflow.errors.ParameterError` naming the offending key as TABLE.KEY and
returns the value it accepted. A TOML true/false is no number and "300" no integer; strings
that end up in scripts and file names must be single lines, and names (jobs, data sets,
variants) are restricted to characters that are safe in both.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ParameterError, close_matches
from ..settings import Rule, _check


def _check_keys(table: Mapping, allowed: Sequence[str], where: str) -> None:
    for k in table:
        if k not in allowed:
            hint = close_matches(str(k), allowed)
            raise ParameterError(
                f"{where}: unknown key {k!r}; expected one of {', '.join(allowed)}.{hint}"
            )


def _expect(value: Any, kinds: type | tuple[type, ...], where: str, what: str) -> Any:
    """value if it is of `kinds` (a TOML true/false is no number), else ParameterError."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ParameterError(f"{where}: expected {what}, got {value!r}")
    return value


#: Job, data-set and variant names: they become file names, Slurm job names and report
#: groups (separated by '/'), so letters, digits and '_.+-', starting with a letter or digit.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def _safe_name(text: str) -> str:
    """`text` with every run of characters a name may not hold replaced by '_'."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_.+-")[:64] or "job"


def _check_name(value: Any, where: str) -> str:
    """A job, data-set or variant name (see `_NAME`), else ParameterError naming `where`."""
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        example = _safe_name(value) if isinstance(value, str) else "my-job"
        raise ParameterError(
            f"{where} = {value!r}: expected a name of letters, digits and '_.+-' that starts "
            f"with a letter or digit (at most 64 characters), e.g. {example!r}"
        )
    return value


def _one_line(value: str, where: str) -> str:
    """A string without line breaks or other control characters (it goes into scripts)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ParameterError(f"{where} = {value!r}: expected one line without control characters")
    return value


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _check_value(value: Any, hint: Any, where: str) -> Any:
    """`value` if it has the type `hint` (a settings field's annotation), else ParameterError.

    An integer is a number too; true/false is neither; TOML has no null, so None is never
    given. Strings must be single lines; `list[str]` is a list of them.
    """
    if typing.get_origin(hint) is list:
        _expect(value, list, where, "a list of strings")
        for item in value:
            _one_line(_expect(item, str, where, "a list of strings"), where)
        return value
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = [t for t in (typing.get_args(hint) if union else (hint,)) if t is not type(None)]
    ok = any(
        (t is bool and isinstance(value, bool))
        or (not isinstance(value, bool) and t is float and isinstance(value, (int, float)))
        or (not isinstance(value, bool) and t in (int, str) and isinstance(value, t))
        for t in kinds
    )
    if not ok:
        what = " or ".join(_TYPE_WORDS.get(t, getattr(t, "__name__", str(t))) for t in kinds)
        raise ParameterError(f"{where} = {value!r}: expected {what}")
    if isinstance(value, str):
        _one_line(value, where)
    return value


def _check_workers(value: Any, where: str) -> int | str:
    """A number of local workers: an integer >= 1 or "gpus" (`where` names the option)."""
    if value != "gpus" and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    ):
        raise ParameterError(f"{where}{value!r}: expected an integer N >= 1 or 'gpus'")
    return value


def _check_retries(value: Any, where: str) -> int:
    """A number of extra attempts: an integer >= 0 (`where` names the option)."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise ParameterError(f"{where}{value!r}: expected an integer >= 0")
    return value


def _settings_table(
    raw: Any, where: str, fields: Mapping[str, Any], rules: Mapping[str, Rule]
) -> dict:
    """A table of settings: known keys (`fields`: name -> type), values of their type that
    pass their `rules` (those of the settings class the table fills)."""
    _expect(raw, dict, where, "a table")
    _check_keys(raw, tuple(fields), where)
    for key, value in raw.items():
        _check_value(value, fields[key], f"{where}.{key}")
        if key in rules:
            _check(f"{where}.{key}", value, rules[key], sep=" = ")
    return dict(raw)
