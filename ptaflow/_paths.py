"""Where ptaflow finds its shipped data: the repository's top-level `data/` folder."""

from __future__ import annotations

import pathlib

#: The repository's `data/` folder (sibling of the `ptaflow/` package).
DATA_DIR = pathlib.Path(__file__).resolve().parents[1] / "data"
