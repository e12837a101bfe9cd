"""What identifies a result, and the seeds derived from it.

A model's result (a comparison's record, a batch task's result) is keyed by a hash of
everything it depends on: the model file's bytes, the data identity, the settings and the
ptaflow version, with a format number that changes when the scheme does. A re-run with the
same key may reuse the stored result; any changed input gives a new key. A model's seed derives
from a base seed and a name (a comparison's model name, a batch task's key), so each model
gets its own random numbers that do not depend on which other models run, or in what order.

Standard library only, as `ptaflow.settings`: a batch planner keys and seeds its tasks without
importing JAX.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from .settings import CompareSettings

__all__ = ["file_digest", "settings_identity", "result_key", "derived_seed"]


def file_digest(path: str | pathlib.Path) -> str:
    """SHA-256 (hex) of a file's bytes, e.g. a model file's."""
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def settings_identity(settings: CompareSettings) -> dict:
    """The settings that results depend on, as a dict: all but the training device count
    (sharding the training batch over devices gives the same numbers)."""
    d = settings.to_dict()
    if d["train"] is not None:
        d["train"].pop("devices", None)
    return d


def result_key(
    model_file: str, model: str, data: Any, settings: dict, *, fmt: int, **extra: Any
) -> str:
    """Hash (20 hex digits) of everything a model's result depends on.

    Args:
        model_file: `file_digest` of the model file.
        model: the model's name.
        data: the data identity (`ptaflow.compare.data_identity`), JSON-able.
        settings: `settings_identity` of the settings.
        fmt: format number of the stored result that the key names.
        **extra: further inputs, JSON-able (a batch task's base seed and replicate number).
    """
    inputs = {
        "model_file": model_file,
        "model": model,
        "data": data,
        "settings": settings,
        "version": __version__,
        "format": fmt,
        **extra,
    }
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def derived_seed(base: int, name: str) -> int:
    """A seed in [0, 2**32) for `name` (a model name or a result key) from a base seed: the
    first four bytes of SHA-256("base:name"), little-endian."""
    return int.from_bytes(hashlib.sha256(f"{base}:{name}".encode()).digest()[:4], "little")
