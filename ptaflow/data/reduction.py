"""Reduce each pulsar once to the sufficient statistics of the Fourier-GP likelihood.

With white noise fixed and the timing model marginalised under a flat prior, everything the
likelihood needs from a pulsar's n_toa TOAs is (docs/design.md, section 3; van Haasteren &
Vallisneri 2014, arXiv:1407.1838):

    FNF = F^T P F,  FNr = F^T P r,  rNr = r^T P r,
    P = N^-1 - N^-1 M (M^T N^-1 M)^-1 M^T N^-1,

plus the constant c = -1/2 [rNr + ln det N + ln det(M^T N^-1 M) + (n_toa - n_tm) ln 2 pi], so that

    ln L = c + 1/2 FNr^T S^-1 FNr - 1/2 [ln det Phi + ln det S],   S = Phi^-1 + FNF.

Numerics: N (EFAC, t2EQUAD, ECORR) is whitened exactly with a symmetric square root per
observing epoch (a rank-one update of a diagonal matrix), the whitened design matrix (columns
normalised as in enterprise) is decomposed by SVD, and P is applied as a projection onto the
orthogonal complement of its column space. Nothing is inverted explicitly, so badly conditioned
design matrices (DMX, JUMPs) are harmless. The flat timing-model prior has unit density on the
coefficients of the column-normalised design matrix (enterprise's default normalisation).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

from .. import __version__
from .._paths import DATA_DIR
from ..constants import YEAR_S
from ..errors import (
    CacheMismatchError,
    DataError,
    ParameterError,
    PulsarNotFoundError,
    close_matches,
)
from .pulsars import (
    Pulsar,
    WhiteNoise,
    _repeated_name,
    array_span,
    ranking_score,
    weighted_rms,
    white_noise_sigma,
    white_noise_values,
)

__all__ = [
    "fourier_basis",
    "epoch_index",
    "whiten",
    "ReducedPTA",
    "reduce_pulsar",
    "reduce_pta",
    "save_reduced",
    "load_reduced",
    "DEFAULT_REDUCED",
    "select_reduced",
]

#: Bump when the reduction algorithm or the cache layout changes: caches of another format
#: version are not reused.
REDUCTION_FORMAT = 1
#: TOAs of one backend closer than this to the first TOA of an epoch share the epoch [s]
#: (enterprise `create_quantization_matrix(dt=1)`).
EPOCH_DT_S = 1.0


def fourier_basis(toas: np.ndarray, n_freq: int, tspan: float) -> tuple[np.ndarray, np.ndarray]:
    """Fourier design matrix with columns sin, cos at f_k = k / T, k = 1..n_freq.

    Column order [sin f_1, cos f_1, sin f_2, ...] as enterprise's
    `createfourierdesignmatrix_red`.

    Returns:
        F of shape (n_toa, 2 n_freq) and the frequencies f_k [Hz], shape (n_freq,).
    """
    freqs = np.arange(1, n_freq + 1) / tspan
    arg = 2.0 * np.pi * toas[:, None] * freqs[None, :]
    F = np.empty((toas.shape[0], 2 * n_freq))
    F[:, 0::2] = np.sin(arg)
    F[:, 1::2] = np.cos(arg)
    return F, freqs


def epoch_index(toas: np.ndarray, backend_flags: np.ndarray, backends: Sequence[str]) -> np.ndarray:
    """Observing-epoch index of every TOA for ECORR (-1: the TOA has no ECORR).

    Per backend in `backends`, TOAs sorted in time open a new epoch when they are EPOCH_DT_S or
    more after the epoch's first TOA; epochs with a single TOA get no ECORR (enterprise
    `create_quantization_matrix(nmin=2)`).
    """
    idx = np.full(toas.shape[0], -1, dtype=np.int64)
    n_epoch = 0
    for be in sorted(backends):
        sel = np.flatnonzero(backend_flags == be)
        if sel.size == 0:
            continue
        order = sel[np.argsort(toas[sel], kind="stable")]
        t = toas[order]
        # Greedy buckets referenced to their first TOA (not chained by neighbour gaps).
        labels = np.empty(t.size, dtype=np.int64)
        ref, lab = t[0], 0
        for i, ti in enumerate(t):
            if ti - ref >= EPOCH_DT_S:
                ref, lab = ti, lab + 1
            labels[i] = lab
        counts = np.bincount(labels)
        keep = counts[labels] >= 2
        _, dense = np.unique(labels[keep], return_inverse=True)
        idx[order[keep]] = n_epoch + dense
        n_epoch += int(dense.max()) + 1 if dense.size else 0
    return idx


@dataclasses.dataclass(frozen=True)
class _Whitener:
    """Symmetric square root W of N^-1 (W^T W = N^-1) for diagonal + per-epoch rank-one N."""

    inv_sqrt_d: np.ndarray  # (n_toa,)
    epoch: np.ndarray  # (n_toa,), -1 for none
    w_hat: np.ndarray  # (n_toa,), unit vector of D^-1/2 1 within each epoch
    alpha: np.ndarray  # (n_epoch,)
    logdet_N: float

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = X * self.inv_sqrt_d.reshape((-1,) + (1,) * (X.ndim - 1))
        if self.alpha.size == 0:
            return X
        in_ep = self.epoch >= 0
        e = self.epoch[in_ep]
        w = self.w_hat[in_ep].reshape((-1,) + (1,) * (X.ndim - 1))
        proj = np.zeros((self.alpha.size,) + X.shape[1:])
        np.add.at(proj, e, w * X[in_ep])
        X[in_ep] += w * (self.alpha[e].reshape(w.shape) * proj[e])
        return X


def whiten(psr: Pulsar, wn: WhiteNoise) -> _Whitener:
    """Build the whitening operator of the fixed white-noise covariance N of a pulsar.

    N = D + sum_e c_e 1_e 1_e^T with D = sigma^2 (EFAC, t2EQUAD) and c_e = 10^(2 log10_ecorr).
    Per epoch, with w = D^-1/2 1_e, s = |w|^2: W = (I + alpha w w^T / s) D^-1/2 and
    alpha = (1 + c s)^-1/2 - 1, so that W^T W = N^-1 and ln det N = sum ln D + sum ln(1 + c s).
    """
    sigma2 = white_noise_sigma(psr, wn) ** 2
    inv_sqrt_d = 1.0 / np.sqrt(sigma2)
    epoch = epoch_index(psr.toas, psr.backend_flags, list(wn.log10_ecorr))
    logdet = float(np.sum(np.log(sigma2)))
    n_epoch = int(epoch.max()) + 1 if (epoch >= 0).any() else 0
    w_hat = np.zeros_like(sigma2)
    alpha = np.zeros(n_epoch)
    if n_epoch:
        in_ep = epoch >= 0
        s = np.bincount(epoch[in_ep], weights=1.0 / sigma2[in_ep], minlength=n_epoch)
        be_of_epoch = np.empty(n_epoch, dtype=object)
        be_of_epoch[epoch[in_ep]] = psr.backend_flags[in_ep]
        c = np.array([10.0 ** (2.0 * wn.log10_ecorr[b]) for b in be_of_epoch])
        alpha = 1.0 / np.sqrt(1.0 + c * s) - 1.0
        w_hat[in_ep] = inv_sqrt_d[in_ep] / np.sqrt(s[epoch[in_ep]])
        logdet += float(np.sum(np.log1p(c * s)))
    return _Whitener(inv_sqrt_d, epoch, w_hat, alpha, logdet)


def _data_sha256(psr: Pulsar) -> str:
    """Hash of the numbers the reduction uses (independent of the file format)."""
    import hashlib

    h = hashlib.sha256()
    for arr in (psr.toas, psr.toaerrs, psr.residuals, psr.Mmat, psr.pos):
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    h.update("\n".join(psr.backend_flags.tolist()).encode())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class ReducedPTA:
    """Sufficient statistics of a pulsar array for Fourier-GP likelihoods (host NumPy arrays).

    Attributes:
        names: pulsar names, length n_psr.
        pos: unit vectors to the pulsars, (n_psr, 3).
        freqs: Fourier frequencies k/T [Hz], (n_freq,).
        tspan: array span T [s].
        FNF: (n_psr, 2 n_freq, 2 n_freq) F^T P F [s^-2].
        FNr: (n_psr, 2 n_freq) F^T P r [s^-1].
        const: (n_psr,) constant part of ln L (see module docstring).
        n_toa, n_tm: TOAs and timing-model parameters used, (n_psr,).
        wrms: white-noise-weighted RMS residual [s], (n_psr,); span: per-pulsar span [s].
        provenance: JSON-serialisable dict (inputs, versions); `inputs` decides cache reuse.
    """

    names: tuple[str, ...]
    pos: np.ndarray
    freqs: np.ndarray
    tspan: float
    FNF: np.ndarray
    FNr: np.ndarray
    const: np.ndarray
    n_toa: np.ndarray
    n_tm: np.ndarray
    wrms: np.ndarray
    span: np.ndarray
    provenance: Mapping

    @property
    def n_psr(self) -> int:
        return len(self.names)

    @property
    def n_freq(self) -> int:
        return int(self.freqs.shape[0])

    def ranking(self) -> list[tuple[str, float]]:
        """Pulsars ranked by the rule of `ptaflow.data.rank_pulsars` (best first)."""
        rows = zip(self.names, self.wrms, self.span, strict=True)
        scores = [(n, ranking_score(w, s)) for n, w, s in rows]
        return sorted(scores, key=lambda t: (t[1], t[0]))

    def select(self, names: Sequence[str]) -> ReducedPTA:
        """Subset of pulsars (same T and frequencies), in the given order."""
        if (twice := _repeated_name(names)) is not None:
            raise DataError(
                f"pulsar names repeat: {twice!r} is given twice; select each pulsar once"
            )
        index = []
        for n in names:
            if n not in self.names:
                raise PulsarNotFoundError(
                    f"pulsar {n!r} is not in the reduced data ({self.n_psr} pulsars)."
                    + close_matches(n, self.names)
                )
            index.append(self.names.index(n))
        idx = np.asarray(index)
        prov = dict(self.provenance)
        inputs = dict(prov["inputs"])
        inputs["pulsars"] = {n: inputs["pulsars"][n] for n in names}
        prov["inputs"] = inputs
        return dataclasses.replace(
            self,
            names=tuple(names),
            pos=self.pos[idx],
            FNF=self.FNF[idx],
            FNr=self.FNr[idx],
            const=self.const[idx],
            n_toa=self.n_toa[idx],
            n_tm=self.n_tm[idx],
            wrms=self.wrms[idx],
            span=self.span[idx],
            provenance=prov,
        )

    def best(self, n: int) -> ReducedPTA:
        """The n best pulsars by the documented ranking rule (see `rank_pulsars`)."""
        if not 1 <= n <= self.n_psr:
            raise DataError(
                f"asked for the {n} best pulsars, but the reduced data hold {self.n_psr}"
            )
        return self.select([name for name, _ in self.ranking()[:n]])


def reduce_pulsar(psr: Pulsar, wn: WhiteNoise, tspan: float, n_freq: int) -> dict:
    """Sufficient statistics of one pulsar (see the module docstring). Host NumPy, float64."""
    W = whiten(psr, wn)
    norms = np.linalg.norm(psr.Mmat, axis=0)
    if (norms == 0).any():
        raise DataError(
            f"pulsar {psr.name}: design-matrix column(s) {np.flatnonzero(norms == 0).tolist()} "
            "are all zero; remove them"
        )
    M = W(psr.Mmat / norms)
    U, s, _ = np.linalg.svd(M, full_matrices=False)
    rank = int(np.sum(s > s[0] * max(M.shape) * np.finfo(float).eps))
    U, s = U[:, :rank], s[:rank]
    if 2 * n_freq > psr.n_toa - rank:
        raise DataError(
            f"pulsar {psr.name}: {2 * n_freq} Fourier columns ({n_freq} frequencies) but only "
            f"{psr.n_toa} TOAs and {rank} timing-model parameters; expected 2 n_freq <= "
            f"n_toa - n_tm = {psr.n_toa - rank}: use fewer frequencies"
        )
    F, _ = fourier_basis(psr.toas, n_freq, tspan)
    X = W(np.column_stack([F, psr.residuals]))
    X -= U @ (U.T @ X)
    G = X.T @ X
    FNF, FNr, rNr = G[:-1, :-1], G[:-1, -1], float(G[-1, -1])
    logdet_MNM = float(2.0 * np.sum(np.log(s)))
    const = -0.5 * (rNr + W.logdet_N + logdet_MNM + (psr.n_toa - rank) * np.log(2.0 * np.pi))
    return {
        "FNF": 0.5 * (FNF + FNF.T),
        "FNr": FNr,
        "const": const,
        "n_toa": psr.n_toa,
        "n_tm": rank,
        "wrms": weighted_rms(psr, wn),
        "span": psr.span,
    }


def _inputs(
    pulsars: Sequence[Pulsar], wns: Sequence[WhiteNoise], tspan: float, n_freq: int
) -> dict:
    return {
        "format": REDUCTION_FORMAT,
        "n_freq": int(n_freq),
        "tspan_s": repr(float(tspan)),
        "pulsars": {
            p.name: {"data_sha256": _data_sha256(p), "white_noise": wn.as_dict(p.name)}
            for p, wn in zip(pulsars, wns, strict=True)
        },
    }


def reduce_pta(
    pulsars: Sequence[Pulsar],
    noisedict: Mapping[str, float] | None = None,
    *,
    n_freq: int = 30,
    tspan: float | None = None,
    cache: str | pathlib.Path | None = None,
) -> ReducedPTA:
    """Reduce pulsars to likelihood statistics, optionally through an HDF5 cache.

    Args:
        pulsars: the pulsars (any order; kept).
        noisedict: white-noise dictionary; default: each pulsar's own (Feather metadata).
        n_freq: Fourier frequencies k/T, k = 1..n_freq (the largest of K_rn and K_gw used later).
        tspan: T [s], at least the span of these pulsars' TOAs (the default, enterprise's
            `get_tspan`); a longer T, e.g. that of a larger array, puts f_1 lower.
        cache: HDF5 path. If it exists, it is reused when it was built from exactly these inputs
            (data hashes, white noise, n_freq, T, format) and CacheMismatchError is raised
            otherwise; if absent, it is written atomically.
    """
    if not pulsars:
        raise DataError("reduce_pta: no pulsars given")
    names = [p.name for p in pulsars]
    if (twice := _repeated_name(names)) is not None:
        raise DataError(
            f"reduce_pta: pulsar names repeat: {twice!r} is given twice; give each pulsar once"
        )
    if n_freq < 1:
        raise DataError(f"n_freq={n_freq}: expected a positive number of frequencies")
    span = array_span(pulsars)
    tspan = span if tspan is None else float(tspan)
    if not np.isfinite(tspan) or tspan <= 0:
        raise DataError(f"tspan={tspan!r} s: expected a positive span")
    if tspan < span:  # f_1 = 1/T would then lie above the lowest frequency the data resolve
        raise DataError(
            f"tspan={tspan!r} s is shorter than the span of the pulsars' TOAs, {span!r} s "
            f"({span / YEAR_S:.2f} yr); expected T >= the data span (the default), e.g. the "
            "span of a larger array that these pulsars belong to"
        )
    wns = [white_noise_values(p, noisedict) for p in pulsars]
    inputs = _inputs(pulsars, wns, tspan, n_freq)
    if cache is not None and pathlib.Path(cache).exists():
        reduced = load_reduced(cache)
        _check_inputs(cache, reduced.provenance["inputs"], inputs)
        return reduced.select(names)  # the cache may list the same pulsars in another order
    stats = [reduce_pulsar(p, wn, tspan, n_freq) for p, wn in zip(pulsars, wns, strict=True)]
    reduced = ReducedPTA(
        names=tuple(names),
        pos=np.stack([p.pos for p in pulsars]),
        freqs=np.arange(1, n_freq + 1) / tspan,
        tspan=tspan,
        FNF=np.stack([s["FNF"] for s in stats]),
        FNr=np.stack([s["FNr"] for s in stats]),
        const=np.array([s["const"] for s in stats]),
        n_toa=np.array([s["n_toa"] for s in stats]),
        n_tm=np.array([s["n_tm"] for s in stats]),
        wrms=np.array([s["wrms"] for s in stats]),
        span=np.array([s["span"] for s in stats]),
        provenance={
            "inputs": inputs,
            "ptaflow_version": __version__,
            "sources": {p.name: {"file": p.source, "sha256": p.source_sha256} for p in pulsars},
        },
    )
    if cache is not None:
        save_reduced(reduced, cache)
    return reduced


def _check_inputs(path, cached: Mapping, wanted: Mapping) -> None:
    if cached == wanted:
        return
    diffs = []
    for key in ("format", "n_freq", "tspan_s"):
        if cached.get(key) != wanted.get(key):
            diffs.append(f"{key}: cache {cached.get(key)!r}, requested {wanted.get(key)!r}")
    cp, wp = cached.get("pulsars", {}), wanted.get("pulsars", {})
    if set(cp) != set(wp):
        diffs.append(f"pulsars: cache {sorted(cp)}, requested {sorted(wp)}")
    for name in set(cp) & set(wp):
        for field in ("data_sha256", "white_noise"):
            if cp[name].get(field) != wp[name].get(field):
                diffs.append(f"{name}: {field} differs")
    raise CacheMismatchError(
        f"reduced-data cache {path} was built from other inputs ({'; '.join(diffs[:6])}); "
        "delete it or choose another cache path"
    )


_ARRAYS = ("pos", "freqs", "FNF", "FNr", "const", "n_toa", "n_tm", "wrms", "span")


def save_reduced(reduced: ReducedPTA, path: str | pathlib.Path) -> None:
    """Write reduced statistics to HDF5 atomically (temporary file + rename)."""
    import h5py

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["ptaflow_reduced_format"] = REDUCTION_FORMAT
            f.attrs["tspan_s"] = reduced.tspan
            f.attrs["provenance"] = json.dumps(reduced.provenance, sort_keys=True)
            f.create_dataset("names", data=np.array(reduced.names, dtype="S"))
            for key in _ARRAYS:
                f.create_dataset(key, data=getattr(reduced, key))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_reduced(path: str | pathlib.Path) -> ReducedPTA:
    """Read reduced statistics written by `save_reduced`, and check them.

    Raises:
        DataError: missing or unreadable file, not a ptaflow reduced-data file, provenance
            that is not JSON, arrays whose shapes disagree, or NaN/infinite statistics.
    """
    import h5py

    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"reduced-data file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            if "ptaflow_reduced_format" not in f.attrs:
                raise DataError(f"{path} is not a ptaflow reduced-data file (no format attribute)")
            fmt = int(f.attrs["ptaflow_reduced_format"])
            if fmt != REDUCTION_FORMAT:
                raise CacheMismatchError(
                    f"{path} has reduced-data format {fmt}, this ptaflow writes "
                    f"{REDUCTION_FORMAT}; rebuild it with reduce_pta"
                )
            arrays = {key: f[key][()] for key in _ARRAYS}
            names = tuple(n.decode() for n in np.atleast_1d(f["names"][()]))
            tspan = float(f.attrs["tspan_s"])
            provenance = f.attrs["provenance"]
    except OSError as exc:
        raise DataError(f"{path} is not a readable HDF5 file: {exc}") from exc
    except KeyError as exc:
        raise DataError(
            f"{path}: reduced-data file lacks {exc}; rebuild it with reduce_pta"
        ) from exc
    try:
        provenance = json.loads(provenance)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{path}: the 'provenance' attribute is not readable JSON ({exc}); rebuild the "
            "file with reduce_pta (`ptaflow reduce`)"
        ) from exc
    _check_reduced(path, names, tspan, arrays, provenance)
    return ReducedPTA(names=names, tspan=tspan, provenance=provenance, **arrays)


def _check_reduced(path, names, tspan: float, arrays: Mapping, provenance) -> None:
    """Shapes, finite values and provenance of a reduced-data file's contents (DataError)."""
    rebuild = "rebuild the file with reduce_pta (`ptaflow reduce`)"
    n, k = len(names), int(np.size(arrays["freqs"]))
    if n == 0 or len(set(names)) != n:
        raise DataError(f"{path}: expected distinct pulsar names, got {names}; {rebuild}")
    expected = {
        "pos": (n, 3),
        "freqs": (k,),
        "FNF": (n, 2 * k, 2 * k),
        "FNr": (n, 2 * k),
        **{key: (n,) for key in ("const", "n_toa", "n_tm", "wrms", "span")},
    }
    for key, shape in expected.items():
        got = np.shape(arrays[key])
        if got != shape:
            raise DataError(
                f"{path}: '{key}' has shape {got}, expected {shape} for {n} pulsars and {k} "
                f"frequencies; the file is inconsistent: {rebuild}"
            )
        values = np.asarray(arrays[key], dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(
                f"{path}: '{key}' holds {int(bad.sum())} NaN or infinite value(s) (first at "
                f"index {first}); {rebuild}"
            )
    if not (np.isfinite(tspan) and tspan > 0) or k == 0 or not np.all(arrays["freqs"] > 0):
        raise DataError(
            f"{path}: expected a positive span T and k/T frequencies, got T = {tspan} s and "
            f"{k} frequencies; {rebuild}"
        )
    inputs = provenance.get("inputs") if isinstance(provenance, dict) else None
    pulsars = inputs.get("pulsars") if isinstance(inputs, dict) else None
    missing = [name for name in names if not isinstance(pulsars, dict) or name not in pulsars]
    if missing:
        raise DataError(
            f"{path}: the provenance lacks the inputs of pulsar(s) {missing[:3]}; {rebuild}"
        )


#: The shipped reduced statistics of the NG15 48-pulsar subset (K = 30 frequencies).
DEFAULT_REDUCED = "ng15_48psr_reduced_k30.h5"


def select_reduced(
    data: ReducedPTA | str | pathlib.Path | None = None,
    pulsars: int | Sequence[str] | None = None,
) -> ReducedPTA:
    """The reduced statistics to fit: a `ReducedPTA`, an HDF5 cache path or the shipped NG15 set.

    Args:
        data: reduced statistics or a path written by `ptaflow.data.save_reduced`; default the
            shipped NG15 48-pulsar subset.
        pulsars: None (all), an int N (the N best by the documented ranking rule, see
            `ptaflow.data.rank_pulsars`) or a sequence of pulsar names.
    """
    if data is None:
        data = DATA_DIR / DEFAULT_REDUCED
    reduced = data if isinstance(data, ReducedPTA) else load_reduced(data)
    if pulsars is None:
        return reduced
    if isinstance(pulsars, int):
        return reduced.best(pulsars)
    if isinstance(pulsars, str):
        raise ParameterError(
            f"pulsars={pulsars!r}: expected an int or a list of names, e.g. [{pulsars!r}]"
        )
    return reduced.select(list(pulsars))
