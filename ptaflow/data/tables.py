"""Tabulated spectra shipped with ptaflow: g_star(T) and the NG15 new-physics model tables.

`data/ng15_model_tables/` holds g_star.dat (Saikawa & Shirai 2020, arXiv:2005.03544) and the
NANOGrav 15-yr new-physics tables (Zenodo 8084351; provenance in `data/README.md`). The
readers are here; `ptaflow.spectra` and `ptaflow.sources` compute with what they return.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import pathlib

import h5py
import jax.numpy as jnp
import numpy as np

from .._paths import DATA_DIR
from ..errors import DataError, ParameterError, close_matches

__all__ = [
    "MODEL_TABLES_DIR",
    "g_star_table",
    "SpectrumTable",
    "load_spectrum_table",
    "model_table",
]

#: Folder of the tabulated NG15 new-physics spectra and g_star.dat shipped with the repo.
MODEL_TABLES_DIR = DATA_DIR / "ng15_model_tables"


@functools.cache
def g_star_table() -> np.ndarray:
    """g_star.dat as an (n, 4) array: T [GeV], f [Hz], g_s, g_rho (read once)."""
    path = MODEL_TABLES_DIR / "g_star.dat"
    if not path.is_file():
        raise DataError(
            f"{path} is missing; it holds g_rho(T) and g_s(T) (Saikawa & Shirai 2020). "
            "Restore it from the repository (data/ng15_model_tables/)."
        )
    table = np.loadtxt(path)
    if table.ndim != 2 or table.shape[1] != 4:
        raise DataError(f"{path}: expected 4 columns (T, f, g_s, g_rho), got shape {table.shape}")
    return table


@dataclasses.dataclass(frozen=True, eq=False)
class SpectrumTable:
    """A spectrum tabulated on a regular grid, interpolated multilinearly in JAX.

    Layout of the NG15 new-physics tables (PTArcade `fast_interpolate`): `names` are the
    grid axes, the last one being the frequency as log10(f/Hz); axis k holds the values
    `starts[k] + i * steps[k]`, i = 0..shape[k]-1; `values` is the tabulated quantity
    (log10 h^2 Omega_GW for cosmic strings, log10 of the kernel integral for SIGW).

    Interpolation is linear along each axis in the table's own coordinates (the same
    arithmetic as PTArcade's `fast_interpolate.interp`), exact on grid nodes. Inputs
    outside the grid are clamped to its edge (PTArcade does no bounds checking there).

    Attributes:
        path: file the table was read from.
        names: axis names; the last is "f".
        starts: first grid value of each axis, shape (n_axes,).
        steps: grid spacing of each axis, shape (n_axes,).
        values: tabulated values, shape (n_0, ..., n_f).
    """

    path: str
    names: tuple[str, ...]
    starts: np.ndarray
    steps: np.ndarray
    values: np.ndarray

    @property
    def param_names(self) -> tuple[str, ...]:
        """The non-frequency axes, in table order."""
        return self.names[:-1]

    def __call__(self, f, **params):
        """Interpolate the table at frequencies f [Hz] and the given parameter values.

        Args:
            f: frequencies [Hz] (the table axis is log10 f).
            **params: one value per non-frequency axis, by name.

        Returns:
            The interpolated table value, broadcast over f and the parameters.
        """
        missing = [n for n in self.param_names if n not in params]
        extra = [n for n in params if n not in self.param_names]
        if missing or extra:
            hint = close_matches(extra[0], self.param_names) if extra else ""
            raise ParameterError(
                f"table {self.path} has axes {self.param_names} (plus f); got "
                f"{tuple(params)}: missing {missing}, unexpected {extra}.{hint}"
            )
        coords = [jnp.asarray(params[n]) for n in self.param_names] + [jnp.log10(f)]
        coords = jnp.broadcast_arrays(*coords)
        shape = self.values.shape
        index, weight = [], []
        for x, x0, dx, n in zip(coords, self.starts, self.steps, shape, strict=True):
            t = jnp.clip((x - x0) / dx, 0.0, n - 1.0)
            i = jnp.clip(jnp.floor(t), 0, n - 2).astype(jnp.int32)
            index.append(i)
            weight.append(t - i)
        values = jnp.asarray(self.values)
        out = 0.0
        for corner in itertools.product((0, 1), repeat=len(shape)):
            w = 1.0
            for c, wk in zip(corner, weight, strict=True):
                w = w * (wk if c else 1.0 - wk)
            out = out + w * values[tuple(i + c for i, c in zip(index, corner, strict=True))]
        return out


@functools.cache
def load_spectrum_table(path: str | pathlib.Path) -> SpectrumTable:
    """Read an HDF5 spectrum table in the NG15 new-physics layout (cached per path).

    The file holds `parameter_names` (the last one is the frequency, log10 Hz), one dataset
    per name with (start, step) of its regular grid, and `spectrum`, the N-D array over
    (params..., frequency).

    Raises:
        DataError: the file is missing or does not have that layout.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"spectrum table {path} not found")
    try:
        with h5py.File(path, "r") as h5:
            names = tuple(h5["parameter_names"].asstr()[()])
            grid = np.array([h5[n][()] for n in names], dtype=np.float64)
            values = np.array(h5["spectrum"], dtype=np.float64)
    except (KeyError, OSError) as exc:
        raise DataError(
            f"{path}: expected datasets 'parameter_names', one (start, step) per name and "
            f"'spectrum' (NG15 model-table layout); reading failed: {exc}"
        ) from exc
    if names[-1] != "f" or grid.shape != (len(names), 2) or values.ndim != len(names):
        raise DataError(
            f"{path}: expected the last axis to be 'f' and one (start, step) per axis for a "
            f"{len(names)}-D spectrum; got names {names}, spectrum shape {values.shape}"
        )
    if np.any(np.array(values.shape) < 2):
        raise DataError(f"{path}: every axis needs at least 2 nodes, got {values.shape}")
    return SpectrumTable(str(path), names, grid[:, 0].copy(), grid[:, 1].copy(), values)


def model_table(name: str) -> SpectrumTable:
    """A shipped NG15 model table by name, e.g. "stable_c" -> data/ng15_model_tables/stable_c.h5."""
    return load_spectrum_table(MODEL_TABLES_DIR / f"{name}.h5")
