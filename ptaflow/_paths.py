"""Where ptaflow finds its shipped data and its built-in SGWB models.

In a source checkout (and an editable install, `pip install -e .`) they are the repository's
top-level `data/` and `models/` folders, beside the `ptaflow/` package. A wheel carries the
same files inside the package, as `ptaflow/_data` and `ptaflow/_models` (see
`[tool.setuptools]` in pyproject.toml); those are used when present. The files are read by
path (HDF5, NumPy, Feather, model files executed by `ptaflow.models.load_model`), so an
installation must unpack them on disk, as pip does.
"""

from __future__ import annotations

import pathlib

_PACKAGE = pathlib.Path(__file__).resolve().parent


def _shipped(installed: str, repository: str) -> pathlib.Path:
    """The folder `installed` inside the package if it exists, else the repository's folder."""
    inside = _PACKAGE / installed
    return inside if inside.is_dir() else _PACKAGE.parent / repository


#: The shipped data: reduced NG15 data, free-spectrum densities, model tables, pulsar files.
DATA_DIR = _shipped("_data", "data")

#: The built-in SGWB model files (`ptaflow.models.list_models`).
MODELS_DIR = _shipped("_models", "models")
