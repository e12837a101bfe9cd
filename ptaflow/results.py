"""Result files with provenance: posterior samples (HDF5), comparison tables (JSON, CSV).

Every file is written atomically: the content goes to a temporary file in the destination
folder, which is then renamed over the destination (`os.replace`, atomic on POSIX and
Windows). A crash or an exception mid-write leaves the previous file untouched and no
partial or temporary file behind. New files get the permissions `open()` would give them
(0666 less the process umask). JSON is strict (RFC 8259): NaN and infinities are written as
null, which readers of numbers turn back into NaN.

A `PosteriorResult` keeps the posterior samples of one model together with what is needed to
trust and reuse them: ln L and ln prior at every sample, importance weights of flow samples,
diagnostics, the run's settings, its provenance (`provenance()`: versions, device, git
revision, time) and optionally the trained flow itself (`ptaflow.flows.flow_to_bytes`;
read it back with `ptaflow.flows.result_flow`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import functools
import importlib.metadata
import io
import json
import math
import os
import pathlib
import platform
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from . import __version__
from .data.pulsars import file_sha256
from .errors import DataError, ParameterError, close_matches

__all__ = [
    "POSTERIOR_FORMAT",
    "PosteriorResult",
    "provenance",
    "file_record",
    "save_posterior",
    "load_posterior",
    "json_text",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_csv_atomic",
]

#: Format version of posterior HDF5 files; bump when the layout changes. Files of another
#: version are refused by `load_posterior`.
POSTERIOR_FORMAT = 1
_FORMAT_ATTR = "ptaflow_posterior_format"
_VERSIONED = ("jax", "jaxlib", "flowjax", "numpy", "equinox")


# --- atomic writers ----------------------------------------------------------------------------


@contextlib.contextmanager
def _atomic_target(path: str | pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside `path`; rename it over `path` if the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary file is removed and `path`
    keeps its previous content. Parent folders are created.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, _new_file_mode())  # mkstemp creates 0600
        yield pathlib.Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def _new_file_mode() -> int:
    """Permissions `open()` gives a new file: 0o666 less the umask (read once per process:
    reading the umask means setting it, which other threads would see meanwhile)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str | pathlib.Path, data: bytes) -> pathlib.Path:
    """Write bytes to `path` atomically (flushed to disk before the rename).

    Args:
        path: destination file; its folder is created if needed.
        data: the complete file content.

    Returns:
        The destination path.
    """
    path = pathlib.Path(path)
    with _atomic_target(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _json_ready(obj: Any) -> Any:
    """`obj` with NumPy/JAX scalars and arrays as Python numbers and lists, paths as strings,
    tuples as lists, and NaN and infinities as None (JSON null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray, jax.Array)):
        return _json_ready(np.asarray(obj).tolist())
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    return obj


def json_text(obj: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """Strict JSON text of `obj` (RFC 8259, readable by any JSON parser).

    NumPy and JAX scalars/arrays become numbers and lists, paths strings, and NaN and
    infinities null (JSON has no literal for them).

    Raises:
        TypeError: `obj` holds a value JSON cannot represent (e.g. an arbitrary object).
    """
    return json.dumps(_json_ready(obj), allow_nan=False, indent=indent, sort_keys=sort_keys)


def _to_json(obj: Any, what: str) -> str:
    try:
        return json_text(obj)
    except (TypeError, ValueError) as exc:
        raise ParameterError(
            f"{what} must hold only JSON-serialisable values (numbers, strings, lists, dicts, "
            f"NumPy scalars/arrays); got: {exc}"
        ) from exc


def _json_normalised(obj: Any, what: str) -> Any:
    """`obj` as it reads back from JSON (tuples become lists, NumPy scalars Python numbers,
    NaN and infinities None)."""
    return json.loads(_to_json(obj, what))


def write_json_atomic(path: str | pathlib.Path, obj: Any, *, indent: int = 2) -> pathlib.Path:
    """Write `obj` as a strict JSON file atomically (`json_text`: NaN and infinities as null).

    Raises:
        ParameterError: `obj` holds values JSON cannot represent (nothing is written).
    """
    try:
        text = json_text(obj, indent=indent)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{path}: object is not JSON-serialisable: {exc}") from exc
    return write_bytes_atomic(path, (text + "\n").encode())


def write_csv_atomic(
    path: str | pathlib.Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> pathlib.Path:
    """Write a table as CSV (header line + one line per row) atomically.

    Floats are written with `str`, i.e. the shortest text that reads back to the same float.

    Args:
        path: destination file.
        rows: one mapping per row; a missing key gives an empty cell.
        columns: column order (the header).

    Raises:
        ParameterError: a row has a key that is not a column, or columns repeat.
    """
    columns = list(columns)
    if len(set(columns)) != len(columns) or not columns:
        raise ParameterError(f"columns must be distinct and non-empty; got {columns}")
    for i, row in enumerate(rows):
        extra = [k for k in row if k not in columns]
        if extra:
            raise ParameterError(
                f"{path}: row {i} has key {extra[0]!r}, expected only the columns {columns}."
                + close_matches(str(extra[0]), columns)
            )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_bytes_atomic(path, buf.getvalue().encode())


# --- provenance --------------------------------------------------------------------------------


def _git_revision() -> tuple[str | None, bool | None]:
    """(HEAD revision, dirty flag) of the ptaflow checkout, or (None, None) if there is none.

    Only a git work tree whose top level holds the `ptaflow` package counts (an installed copy
    inside some other repository does not). Untracked files do not make it dirty.
    """
    root = pathlib.Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or pathlib.Path(top).resolve() != root:
        return None, None
    rev = git("rev-parse", "HEAD")
    if rev is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return rev, (None if status is None else bool(status))


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(**extra: Any) -> dict[str, Any]:
    """Where and with what a result was computed, as a JSON-serialisable dict.

    Keys: `ptaflow`, `jax`, `jaxlib`, `flowjax`, `numpy`, `equinox` (versions, None when not
    installed), `python`, `platform`, `hostname`, `jax_backend` ("cpu", "gpu", ...),
    `device_kind` (e.g. "NVIDIA H100 80GB HBM3"), `device_count`, `x64` (whether JAX float64
    is on), `time_utc` (ISO 8601), `git_revision` and `git_dirty` (None when ptaflow does not
    run from a git checkout), then the `extra` items (e.g. `seed=0, config=...`).

    Raises:
        ParameterError: an `extra` key repeats a standard key, or a value is not JSON-able.
    """
    clash = sorted(set(extra) & _PROVENANCE_KEYS)
    if clash:
        raise ParameterError(
            f"provenance: extra key {clash[0]!r} would overwrite the standard key of that "
            "name; choose another name"
        )
    rev, dirty = _git_revision()
    devices = jax.devices()
    out: dict[str, Any] = {"ptaflow": __version__}
    out.update({name: _package_version(name) for name in _VERSIONED})
    out.update(
        python=platform.python_version(),
        platform=platform.platform(),
        hostname=socket.gethostname(),
        jax_backend=jax.default_backend(),
        device_kind=devices[0].device_kind,
        device_count=len(devices),
        x64=bool(jax.config.jax_enable_x64),
        time_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        git_revision=rev,
        git_dirty=dirty,
    )
    out.update(_json_normalised(extra, "provenance extra items"))
    return out


_PROVENANCE_KEYS = frozenset(
    ("ptaflow", *_VERSIONED, "python", "platform", "hostname", "jax_backend", "device_kind")
    + ("device_count", "x64", "time_utc", "git_revision", "git_dirty")
)


def file_record(path: str | pathlib.Path) -> dict[str, Any]:
    """Provenance of an input file: absolute path, size [bytes] and sha256.

    Raises:
        DataError: the file does not exist.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"input file {path} does not exist")
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


# --- posterior results -------------------------------------------------------------------------


def _weighted_quantile(x: np.ndarray, q: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Quantiles q in [0, 1] of samples x (n,) with non-negative weights w (n,) or None.

    Weighted: linear interpolation of the sorted samples against their cumulative weight,
    cdf_i = sum_{j<i} w_j / sum_{j<n-1} w_j (the rule of `corner.quantile`), which reduces to
    `np.quantile(x, q)` (linear method) for equal weights.
    """
    if w is None:
        return np.quantile(x, q)
    order = np.argsort(x)
    sw = w[order]
    cdf = np.cumsum(sw)[:-1]
    cdf = np.append(0.0, cdf / cdf[-1])
    return np.interp(q, cdf, x[order])


def _float_array(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)  # a copy: the result owns its arrays
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name}: expected a float array, got {type(value).__name__}") from exc
    arr.setflags(write=False)
    return arr


@dataclasses.dataclass(frozen=True, eq=False)
class PosteriorResult:
    """Posterior samples of one model with their ln L, ln prior, weights and provenance.

    Arrays are float64 read-only copies; dicts are stored as they read back from JSON
    (tuples become lists, NumPy scalars Python numbers, NaN and infinities None), so that
    saving and loading gives an equal object.

    Attributes:
        param_names: names of the n_dim parameters, in column order.
        samples: (n_samples, n_dim) physical parameter values theta (the prior's units).
        log_likelihood: (n_samples,) ln L(theta).
        log_prior: (n_samples,) ln pi(theta), normalised prior density.
        log_weights: (n_samples,) unnormalised ln importance weights of flow samples,
            ln w = ln L + ln pi - ln q (-inf allowed), or None for equally weighted samples.
            For a fit with a defensive component (noise-only posterior or prior,
            `ptaflow.inference.fit_posterior`) q is
            the mixture's density, and only the first diagnostics["n_flow_draws"] samples
            are the flow's own draws.
        diagnostics: JSON-able scalars (ESS, Pareto k, acceptance rate, ...).
        settings: the run's settings (flow, training, sampler options, seed).
        provenance: see `provenance()`.
        flow_bytes: a trained flow serialised with `ptaflow.flows.flow_to_bytes`, or None
            (`ptaflow.flows.result_flow` rebuilds it).
        flow_config: what rebuilds the flow's skeleton (architecture, sizes), or None.
        latex_labels: LaTeX axis labels by parameter name, or None.
    """

    param_names: tuple[str, ...]
    samples: np.ndarray
    log_likelihood: np.ndarray
    log_prior: np.ndarray
    log_weights: np.ndarray | None = None
    diagnostics: dict = dataclasses.field(default_factory=dict)
    settings: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)
    flow_bytes: bytes | None = None
    flow_config: dict | None = None
    latex_labels: dict | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        names = tuple(self.param_names)
        if len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise ParameterError(f"param_names must be distinct strings; got {names}")
        put("param_names", names)
        samples = _float_array(self.samples, "samples")
        if samples.ndim != 2 or samples.shape[1] != len(names):
            raise ParameterError(
                f"samples: expected shape (n_samples, n_dim={len(names)}) for {names}; "
                f"got {samples.shape}"
            )
        put("samples", samples)
        n = samples.shape[0]
        for name in ("log_likelihood", "log_prior", "log_weights"):
            value = getattr(self, name)
            if value is None and name == "log_weights":
                continue
            arr = _float_array(value, name)
            if arr.shape != (n,):
                raise ParameterError(f"{name}: expected shape (n_samples={n},); got {arr.shape}")
            put(name, arr)
        if self.log_weights is not None:
            lw = self.log_weights
            if np.isnan(lw).any() or (lw == np.inf).any() or not np.isfinite(lw).any():
                raise ParameterError(
                    "log_weights: expected finite values or -inf (zero weight), at least one "
                    f"finite; got {int(np.isnan(lw).sum())} NaN, {int((lw == np.inf).sum())} "
                    f"+inf, {int(np.isfinite(lw).sum())} finite"
                )
        for name in ("diagnostics", "settings", "provenance"):
            put(name, _json_normalised(dict(getattr(self, name)), name))
        if self.flow_config is not None:
            put("flow_config", _json_normalised(dict(self.flow_config), "flow_config"))
        if self.flow_bytes is not None:
            if not isinstance(self.flow_bytes, (bytes, bytearray, memoryview)):
                raise ParameterError(
                    f"flow_bytes: expected bytes (see ptaflow.flows.flow_to_bytes), got "
                    f"{type(self.flow_bytes).__name__}"
                )
            put("flow_bytes", bytes(self.flow_bytes))
        if self.latex_labels is not None:
            labels = {str(k): str(v) for k, v in dict(self.latex_labels).items()}
            for key in labels:
                if key not in names:
                    raise ParameterError(
                        f"latex_labels: {key!r} is not a parameter; expected keys among "
                        f"{names}." + close_matches(key, names)
                    )
            put("latex_labels", labels)

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.samples.shape[0])

    @property
    def n_dim(self) -> int:
        """Number of parameters."""
        return len(self.param_names)

    @property
    def weights(self) -> np.ndarray | None:
        """Normalised importance weights (n_samples,) summing to 1, or None if unweighted."""
        if self.log_weights is None:
            return None
        w = np.exp(self.log_weights - np.max(self.log_weights))
        return w / np.sum(w)

    @property
    def ess(self) -> float:
        """Kish effective sample size (sum w)^2 / sum w^2 (n_samples when unweighted)."""
        w = self.weights
        return float(self.n_samples) if w is None else float(1.0 / np.sum(w**2))

    def to_dict(self, theta: Any) -> dict[str, Any]:
        """Name the entries of a parameter vector (n_dim,) or the columns of (n, n_dim).

        Returns:
            {name: float} for one vector, {name: (n,) array} for several.
        """
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim not in (1, 2) or theta.shape[-1] != self.n_dim:
            raise ParameterError(
                f"theta: expected shape (n_dim={self.n_dim},) or (n, {self.n_dim}) for "
                f"{self.param_names}; got {theta.shape}"
            )
        if theta.ndim == 1:
            return {name: float(v) for name, v in zip(self.param_names, theta, strict=True)}
        return {name: theta[:, i] for i, name in enumerate(self.param_names)}

    def summary(self, *, interval: float = 0.68) -> dict[str, dict[str, float]]:
        """Per-parameter median and central credible interval (weighted if weights are set).

        Args:
            interval: probability mass of the central interval (0.68: 16th to 84th percentile).

        Returns:
            {name: {"median": ..., "lower": ..., "upper": ...}} in the parameters' units.
        """
        if not 0.0 < interval < 1.0:
            raise ParameterError(f"interval={interval}: expected a probability in (0, 1)")
        q = np.array([0.5 * (1.0 - interval), 0.5, 0.5 * (1.0 + interval)])
        w = self.weights
        out = {}
        for i, name in enumerate(self.param_names):
            lo, med, hi = _weighted_quantile(self.samples[:, i], q, w)
            out[name] = {"median": float(med), "lower": float(lo), "upper": float(hi)}
        return out

    def resampled(self, key: jax.Array, n: int | None = None) -> PosteriorResult:
        """Importance-resample the samples into an equally weighted set (with replacement).

        Args:
            key: JAX PRNG key.
            n: number of draws; default n_samples.

        Returns:
            A new result without weights; `diagnostics` gains `resampled_from` (the original
            sample count) and `ess_before_resampling`. Without weights, a bootstrap draw.
        """
        n = self.n_samples if n is None else int(n)
        if n < 1:
            raise ParameterError(f"n={n}: expected a positive number of draws")
        w = self.weights
        p = None if w is None else jax.numpy.asarray(w)
        idx = np.asarray(jax.random.choice(key, self.n_samples, shape=(n,), replace=True, p=p))
        diagnostics = {
            **self.diagnostics,
            "resampled_from": self.n_samples,
            "ess_before_resampling": self.ess,
        }
        return dataclasses.replace(
            self,
            samples=self.samples[idx],
            log_likelihood=self.log_likelihood[idx],
            log_prior=self.log_prior[idx],
            log_weights=None,
            diagnostics=diagnostics,
        )


_JSON_ATTRS = ("diagnostics", "settings", "provenance", "flow_config", "latex_labels")
_ARRAYS = ("samples", "log_likelihood", "log_prior", "log_weights")


def save_posterior(result: PosteriorResult, path: str | pathlib.Path) -> pathlib.Path:
    """Write a posterior result to HDF5 atomically.

    Layout: datasets `samples`, `log_likelihood`, `log_prior`, `log_weights` (if any),
    `flow_bytes` (uint8, if any); attributes `ptaflow_posterior_format`, `ptaflow_version`,
    `param_names` and the dicts as JSON text.

    Returns:
        The destination path.
    """
    import h5py

    path = pathlib.Path(path)
    with _atomic_target(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs[_FORMAT_ATTR] = POSTERIOR_FORMAT
        f.attrs["ptaflow_version"] = __version__
        f.attrs["param_names"] = json.dumps(list(result.param_names))
        for name in _JSON_ATTRS:
            f.attrs[name] = _to_json(getattr(result, name), name)
        for name in _ARRAYS:
            value = getattr(result, name)
            if value is not None:
                f.create_dataset(name, data=value)
        if result.flow_bytes is not None:
            f.create_dataset("flow_bytes", data=np.frombuffer(result.flow_bytes, dtype=np.uint8))
    return path


def load_posterior(path: str | pathlib.Path) -> PosteriorResult:
    """Read a posterior result written by `save_posterior`.

    Raises:
        DataError: the file is missing, not HDF5, not a ptaflow posterior file, of another
            format version, or incomplete.
    """
    import h5py

    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"posterior file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            if _FORMAT_ATTR not in f.attrs:
                raise DataError(
                    f"{path} is not a ptaflow posterior file (no {_FORMAT_ATTR} attribute)"
                )
            fmt = int(f.attrs[_FORMAT_ATTR])
            if fmt != POSTERIOR_FORMAT:
                raise DataError(
                    f"{path} has posterior format {fmt}; this ptaflow "
                    f"({__version__}) reads format {POSTERIOR_FORMAT}"
                )
            fields: dict[str, Any] = {"param_names": tuple(json.loads(f.attrs["param_names"]))}
            for name in _JSON_ATTRS:
                fields[name] = json.loads(f.attrs[name])
            for name in _ARRAYS:
                optional = name == "log_weights"
                fields[name] = f[name][()] if name in f or not optional else None
            fields["flow_bytes"] = f["flow_bytes"][()].tobytes() if "flow_bytes" in f else None
    except OSError as exc:
        raise DataError(f"{path} is not a readable HDF5 file: {exc}") from exc
    except KeyError as exc:
        raise DataError(f"posterior file {path} lacks {exc}; it is incomplete") from exc
    try:
        return PosteriorResult(**fields)
    except ParameterError as exc:
        raise DataError(f"posterior file {path} is inconsistent: {exc}") from exc
