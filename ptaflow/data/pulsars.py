"""Pulsar timing data: our own Feather reader, enterprise adapters, noise dictionaries, selection.

The NANOGrav 15-yr Feather files (one per pulsar, as distributed by nanograv/discovery) hold
the TOAs, residuals, TOA uncertainties, backend flags and the timing design matrix as columns,
and the pulsar's name, sky position and white-noise dictionary in the schema metadata key
`json`. This module reads them with pyarrow alone, so that the core runtime never needs
enterprise. Users with par/tim files can come in through enterprise's `Pulsar` classes
(`PintPulsar`, `Tempo2Pulsar`, `FeatherPulsar`) via `from_enterprise`.

Units: times in s (TOAs are MJD x 86400), radio frequencies in MHz.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..constants import YEAR_S
from ..errors import DataError, NoiseDictError, PulsarNotFoundError, close_matches

__all__ = [
    "Pulsar",
    "load_feather",
    "load_pulsars",
    "from_enterprise",
    "load_noise_dict",
    "white_noise_values",
    "select_pulsars",
    "rank_pulsars",
    "array_span",
    "file_sha256",
]

_REQUIRED_COLUMNS = ("toas", "toaerrs", "residuals", "backend_flags")


@dataclasses.dataclass(frozen=True, eq=False)
class Pulsar:
    """Timing data of one pulsar, as NumPy arrays (host side; reduced once, never on device).

    Attributes:
        name: pulsar name, e.g. "J1012-4235".
        toas: barycentric TOAs [s], shape (n_toa,).
        toaerrs: TOA uncertainties [s], shape (n_toa,).
        residuals: post-fit timing residuals [s], shape (n_toa,).
        backend_flags: receiver/backend system of each TOA, shape (n_toa,).
        Mmat: timing-model design matrix, shape (n_toa, n_tm).
        pos: unit vector to the pulsar (equatorial), shape (3,).
        freqs: radio frequency of each TOA [MHz], shape (n_toa,).
        noisedict: white-noise values shipped with the data (enterprise names), or None.
        source: file the data came from (or a description), for provenance.
        source_sha256: sha256 of the source file ('' when not read from a file).
    """

    name: str
    toas: np.ndarray
    toaerrs: np.ndarray
    residuals: np.ndarray
    backend_flags: np.ndarray
    Mmat: np.ndarray
    pos: np.ndarray
    freqs: np.ndarray
    noisedict: Mapping[str, float] | None = None
    source: str = ""
    source_sha256: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_toa(self) -> int:
        return int(self.toas.shape[0])

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.backend_flags.tolist())))

    @property
    def span(self) -> float:
        """Time span of this pulsar's TOAs [s]."""
        return float(self.toas.max() - self.toas.min())

    def __repr__(self) -> str:
        return (
            f"Pulsar({self.name!r}, n_toa={self.n_toa}, n_tm={self.Mmat.shape[1]}, "
            f"span={self.span / YEAR_S:.2f} yr, backends={len(self.backends)})"
        )


def _validate(psr: Pulsar) -> None:
    where = f"pulsar {psr.name}" + (f" ({psr.source})" if psr.source else "")
    n = psr.toas.shape[0] if psr.toas.ndim == 1 else -1
    if n <= 0:
        raise DataError(
            f"{where}: expected a non-empty 1-D array of TOAs, got shape {psr.toas.shape}"
        )
    for field in ("toaerrs", "residuals", "backend_flags", "freqs"):
        arr = getattr(psr, field)
        if arr.shape != (n,):
            raise DataError(
                f"{where}: '{field}' has shape {arr.shape}, expected ({n},) like the TOAs"
            )
    if psr.Mmat.ndim != 2 or psr.Mmat.shape[0] != n:
        raise DataError(f"{where}: design matrix has shape {psr.Mmat.shape}, expected ({n}, n_tm)")
    for field in ("toas", "toaerrs", "residuals", "Mmat"):
        arr = getattr(psr, field)
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = np.argwhere(bad)[0]
            raise DataError(
                f"{where}: '{field}' holds {int(bad.sum())} NaN or infinite value(s) (first at "
                f"index {tuple(int(i) for i in idx)}); expected finite numbers"
            )
    if (psr.toaerrs <= 0).any():
        i = int(np.argmax(psr.toaerrs <= 0))
        raise DataError(
            f"{where}: TOA uncertainty {float(psr.toaerrs[i])!r} s at index {i}; expected > 0"
        )
    if psr.pos.shape != (3,) or not np.isfinite(psr.pos).all():
        raise DataError(f"{where}: sky position {psr.pos!r}; expected a finite 3-vector")


def file_sha256(path: str | pathlib.Path) -> str:
    """sha256 hex digest of a file (used as provenance of reduced data)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_feather(path: str | pathlib.Path) -> Pulsar:
    """Read one pulsar from an NG15-style Arrow Feather file with pyarrow.

    Args:
        path: `PSRNAME.feather` file (columns toas, toaerrs, residuals, freqs, backend_flags,
            Mmat_0..Mmat_k; schema metadata `json` with name, pos and noisedict).

    Raises:
        DataError: the file is missing, not a Feather file, or lacks required columns/metadata.
    """
    import pyarrow as pa
    import pyarrow.feather as feather

    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"pulsar file {path} does not exist")
    try:
        table = feather.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a readable Arrow Feather file: {exc}") from exc
    cols = set(table.column_names)
    missing = [c for c in _REQUIRED_COLUMNS if c not in cols]
    mcols = sorted((c for c in cols if c.startswith("Mmat_")), key=lambda c: int(c[5:]))
    if missing or not mcols:
        what = missing + ([] if mcols else ["Mmat_0..Mmat_k"])
        raise DataError(f"{path}: missing column(s) {what}; expected an NG15-style Feather pulsar")
    meta = (table.schema.metadata or {}).get(b"json")
    if meta is None:
        raise DataError(f"{path}: no 'json' schema metadata (name, pos, noisedict) found")
    try:
        info = json.loads(meta)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: the 'json' schema metadata is not valid JSON: {exc}") from exc
    for key in ("name", "pos"):
        if key not in info:
            raise DataError(f"{path}: metadata lacks '{key}'")

    def col(name: str) -> np.ndarray:
        return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

    n = table.num_rows
    freqs = col("freqs") if "freqs" in cols else np.full(n, np.nan)
    noisedict = info.get("noisedict")
    if isinstance(noisedict, str):  # some writers store it as a JSON string
        noisedict = json.loads(noisedict)
    return Pulsar(
        name=str(info["name"]),
        toas=col("toas"),
        toaerrs=col("toaerrs"),
        residuals=col("residuals"),
        backend_flags=np.asarray(table.column("backend_flags").to_pylist(), dtype=str),
        Mmat=np.column_stack([col(c) for c in mcols]),
        pos=np.asarray(info["pos"], dtype=np.float64),
        freqs=np.nan_to_num(freqs, nan=0.0),
        noisedict=dict(noisedict) if noisedict else None,
        source=str(path),
        source_sha256=file_sha256(path),
    )


def load_pulsars(
    source: str | pathlib.Path | Sequence[str | pathlib.Path],
    names: Iterable[str] | None = None,
) -> list[Pulsar]:
    """Read pulsars from a directory of `*.feather` files or from a list of files.

    Args:
        source: a directory, or a sequence of Feather file paths.
        names: optional pulsar names to keep (in this order); unknown names raise with the
            closest available names.
    """
    if isinstance(source, (str, pathlib.Path)):
        directory = pathlib.Path(source)
        if not directory.is_dir():
            raise DataError(f"pulsar directory {directory} does not exist")
        files = {p.stem: p for p in sorted(directory.glob("*.feather"))}
        if not files:
            raise DataError(f"no *.feather pulsar files in {directory}")
    else:
        files = {pathlib.Path(p).stem: pathlib.Path(p) for p in source}
    if names is not None:
        chosen = []
        for name in names:
            if name not in files:
                raise PulsarNotFoundError(
                    f"pulsar {name!r} is not among the {len(files)} pulsars in "
                    f"{source if isinstance(source, (str, pathlib.Path)) else 'the given files'}."
                    + close_matches(name, files)
                )
            chosen.append(files[name])
    else:
        chosen = list(files.values())
    return [load_feather(p) for p in chosen]


def from_enterprise(psr) -> Pulsar:
    """Convert an enterprise `Pulsar` (FeatherPulsar, PintPulsar, Tempo2Pulsar) to a `Pulsar`.

    enterprise is not imported here: any object with its attributes (name, toas, toaerrs,
    residuals, backend_flags, Mmat, pos) works. Its own noise dictionary, if it carries one as
    `noisedict`, is kept.
    """
    missing = [
        a
        for a in ("name", "toas", "toaerrs", "residuals", "backend_flags", "Mmat", "pos")
        if not hasattr(psr, a)
    ]
    if missing:
        raise DataError(f"object {psr!r} lacks enterprise Pulsar attribute(s) {missing}")
    n = len(psr.toas)
    freqs = getattr(psr, "freqs", None)
    return Pulsar(
        name=str(psr.name),
        toas=np.asarray(psr.toas, dtype=np.float64),
        toaerrs=np.asarray(psr.toaerrs, dtype=np.float64),
        residuals=np.asarray(psr.residuals, dtype=np.float64),
        backend_flags=np.asarray(psr.backend_flags, dtype=str),
        Mmat=np.asarray(psr.Mmat, dtype=np.float64),
        pos=np.asarray(psr.pos, dtype=np.float64),
        freqs=np.zeros(n) if freqs is None else np.asarray(freqs, dtype=np.float64),
        noisedict=getattr(psr, "noisedict", None) or None,
        source=f"enterprise {type(psr).__name__}",
    )


def load_noise_dict(path: str | pathlib.Path) -> dict[str, float]:
    """Read a white-noise dictionary (enterprise parameter names -> values) from JSON."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"noise dictionary {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"noise dictionary {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"noise dictionary {path}: expected a JSON object of name -> value")
    bad = [k for k, v in data.items() if not isinstance(v, (int, float)) or not np.isfinite(v)]
    if bad:
        raise DataError(
            f"noise dictionary {path}: non-numeric or non-finite value(s) for {bad[:5]}"
        )
    return {str(k): float(v) for k, v in data.items()}


@dataclasses.dataclass(frozen=True)
class WhiteNoise:
    """Fixed white-noise values of one pulsar, per backend (enterprise conventions).

    EFAC and EQUAD combine as sigma^2 = efac^2 (sigma_toa^2 + 10^(2 log10_t2equad)) (the
    'tempo2' EQUAD convention of NG15); ECORR adds 10^(2 log10_ecorr) to every pair of TOAs of
    one backend within one observing epoch. Backends without an ECORR entry get none.
    """

    efac: Mapping[str, float]
    log10_t2equad: Mapping[str, float]
    log10_ecorr: Mapping[str, float]

    def as_dict(self, psrname: str) -> dict[str, float]:
        out = {}
        for be in sorted(self.efac):
            out[f"{psrname}_{be}_efac"] = self.efac[be]
            out[f"{psrname}_{be}_log10_t2equad"] = self.log10_t2equad[be]
            if be in self.log10_ecorr:
                out[f"{psrname}_{be}_log10_ecorr"] = self.log10_ecorr[be]
        return out


def white_noise_values(psr: Pulsar, noisedict: Mapping[str, float] | None = None) -> WhiteNoise:
    """Look up the EFAC, t2EQUAD and ECORR of each of a pulsar's backends.

    Args:
        psr: the pulsar.
        noisedict: enterprise-style dictionary; defaults to the one stored with the pulsar.

    Raises:
        NoiseDictError: no dictionary, or a backend without EFAC/EQUAD.
    """
    nd = psr.noisedict if noisedict is None else noisedict
    if not nd:
        raise NoiseDictError(
            f"pulsar {psr.name}: no white-noise dictionary; pass one (e.g. "
            "load_noise_dict('noise_dict_15yr.json'))"
        )
    efac, equad, ecorr = {}, {}, {}
    for be in psr.backends:
        key = f"{psr.name}_{be}"
        missing = [f"{key}_{s}" for s in ("efac", "log10_t2equad") if f"{key}_{s}" not in nd]
        if missing:
            have = [k for k in nd if k.startswith(psr.name + "_")]
            raise NoiseDictError(
                f"pulsar {psr.name}: the noise dictionary has no {missing} for backend {be!r} "
                f"({int((psr.backend_flags == be).sum())} TOAs); it holds {len(have)} entries for "
                f"this pulsar." + close_matches(missing[0], have)
            )
        efac[be] = float(nd[f"{key}_efac"])
        equad[be] = float(nd[f"{key}_log10_t2equad"])
        if f"{key}_log10_ecorr" in nd:
            ecorr[be] = float(nd[f"{key}_log10_ecorr"])
    return WhiteNoise(efac, equad, ecorr)


def white_noise_sigma(psr: Pulsar, wn: WhiteNoise) -> np.ndarray:
    """Per-TOA white-noise standard deviation [s] from EFAC and t2EQUAD (ECORR excluded)."""
    efac = np.array([wn.efac[b] for b in psr.backend_flags])
    equad = np.array([wn.log10_t2equad[b] for b in psr.backend_flags])
    return efac * np.sqrt(psr.toaerrs**2 + 10.0 ** (2.0 * equad))


def _repeated_name(names: Iterable[str]) -> str | None:
    """The first name that occurs a second time in `names`, or None when all are distinct."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def array_span(pulsars: Sequence[Pulsar]) -> float:
    """Span of the whole array, max(TOA) - min(TOA) over all pulsars [s] (enterprise's Tspan)."""
    if not pulsars:
        raise DataError("array_span: no pulsars given")
    return float(max(p.toas.max() for p in pulsars) - min(p.toas.min() for p in pulsars))


def ranking_score(wrms: float, span: float) -> float:
    """Ranking figure of merit: weighted RMS residual [s] over span [yr]; lower is better."""
    return wrms / (span / YEAR_S)


def weighted_rms(psr: Pulsar, wn: WhiteNoise) -> float:
    """White-noise-weighted RMS of the residuals [s], weights 1/sigma^2 (EFAC, t2EQUAD applied)."""
    sigma = white_noise_sigma(psr, wn)
    w = 1.0 / sigma**2
    return float(np.sqrt(np.sum(w * psr.residuals**2) / np.sum(w)))


def rank_pulsars(
    pulsars: Sequence[Pulsar], noisedict: Mapping[str, float] | None = None
) -> list[tuple[str, float]]:
    """Rank pulsars for a GW search: smallest residual level over the longest span first.

    The rule: score = WRMS / span, with WRMS the white-noise-weighted RMS residual [s]
    (weights 1/sigma^2, sigma from EFAC and t2EQUAD) and span the pulsar's own TOA span [yr].
    Ties are broken by name. Returns (name, score [s/yr]) pairs, best first.
    """
    scores = [
        (p.name, ranking_score(weighted_rms(p, white_noise_values(p, noisedict)), p.span))
        for p in pulsars
    ]
    return sorted(scores, key=lambda t: (t[1], t[0]))


def select_pulsars(
    available: Sequence[str],
    *,
    names: Iterable[str] | None = None,
    list_file: str | pathlib.Path | None = None,
    n_best: int | None = None,
    scores: Mapping[str, float] | None = None,
) -> list[str]:
    """Choose pulsar names by explicit names, a list file, or the documented ranking rule.

    Exactly one of `names`, `list_file` (one name per line, '#' comments) or `n_best` (the
    n_best lowest `scores`, see `rank_pulsars`) must be given.

    Raises:
        PulsarNotFoundError: a requested name is not available (close matches suggested).
        DataError: bad combination of arguments, unreadable list file, or n_best too large.
    """
    given = sum(x is not None for x in (names, list_file, n_best))
    if given != 1:
        raise DataError("select_pulsars: give exactly one of names=, list_file= or n_best=")
    avail = list(available)
    if list_file is not None:
        path = pathlib.Path(list_file)
        if not path.is_file():
            raise DataError(f"pulsar list file {path} does not exist")
        names = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
        names = [n for n in names if n]
        if not names:
            raise DataError(f"pulsar list file {path} names no pulsars")
    if names is not None:
        names = list(names)
        for name in names:
            if name not in avail:
                raise PulsarNotFoundError(
                    f"pulsar {name!r} is not available ({len(avail)} pulsars)."
                    + close_matches(name, avail)
                )
        if (twice := _repeated_name(names)) is not None:
            where = path if list_file is not None else "names"
            raise DataError(f"pulsar names repeat: {twice!r} is given twice in {where}")
        return names
    if scores is None:
        raise DataError("select_pulsars(n_best=...) needs the per-pulsar scores (see rank_pulsars)")
    if not 1 <= n_best <= len(avail):
        raise DataError(
            f"n_best={n_best}: expected between 1 and the {len(avail)} available pulsars"
        )
    ranked = sorted(avail, key=lambda n: (scores[n], n))
    return ranked[:n_best]
