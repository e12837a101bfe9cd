"""Reduction to likelihood statistics: Fourier basis, ECORR epochs, whitening, invariants, caches.

Ground truth: hand-worked epoch assignments, an independent epoch grouping, a dense white-noise
covariance N = D + U diag(c) U^T (U the epoch quantization matrix) inverted with NumPy, the
statistics' own algebra (symmetry, positive semi-definiteness, TOA-order invariance).
"""

from __future__ import annotations

import dataclasses
import os
import re

import h5py
import numpy as np
import pytest

from ptaflow._paths import DATA_DIR
from ptaflow.constants import YEAR_S
from ptaflow.data import (
    epoch_index,
    fourier_basis,
    load_feather,
    load_noise_dict,
    load_reduced,
    reduce_pta,
    reduction,
    save_reduced,
    white_noise_values,
    whiten,
)
from ptaflow.errors import CacheMismatchError, DataError, PulsarNotFoundError

PSR_DIR = DATA_DIR / "ng15_pulsars"
NAMES = ("J0605+3757", "J0557+1551", "J1012-4235")


@pytest.fixture(scope="module")
def noisedict():
    return load_noise_dict(PSR_DIR / "noise_dict_15yr.json")


@pytest.fixture(scope="module")
def psrs():
    return [load_feather(PSR_DIR / f"{n}.feather") for n in NAMES]


def _same_partition(a, b):
    """True when labellings a and b (-1: unlabelled) group the same elements together."""
    a, b = np.asarray(a), np.asarray(b)
    if not np.array_equal(a < 0, b < 0):
        return False
    return np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


def _quantization(toas, flags, backends):
    """Epoch matrix U (n_toa, n_epoch), built independently: per backend, walk the TOAs in time
    order; a TOA >= 1 s after its epoch's first TOA opens the next epoch; keep epochs of >= 2."""
    columns = []
    for be in backends:
        idx = sorted(np.flatnonzero(flags == be), key=lambda i: toas[i])
        start = 0
        for j in range(1, len(idx) + 1):
            if j == len(idx) or toas[idx[j]] - toas[idx[start]] >= 1.0:
                if j - start >= 2:
                    col = np.zeros(toas.size)
                    col[idx[start:j]] = 1.0
                    columns.append(col)
                start = j
    return np.stack(columns, axis=1) if columns else np.zeros((toas.size, 0))


def _labels(U):
    return np.where(U.any(axis=1), U.argmax(axis=1), -1)


def _dense_white(psr, wn):
    """N = diag(efac^2 (err^2 + equad^2)) + U diag(ecorr^2) U^T, and its epoch matrix U."""
    efac = np.array([wn.efac[b] for b in psr.backend_flags])
    equad = np.array([10 ** wn.log10_t2equad[b] for b in psr.backend_flags])
    U = _quantization(psr.toas, psr.backend_flags, sorted(wn.log10_ecorr))
    be = [psr.backend_flags[np.argmax(U[:, e])] for e in range(U.shape[1])]
    c = np.array([10 ** (2 * wn.log10_ecorr[b]) for b in be])
    return np.diag(efac**2 * (psr.toaerrs**2 + equad**2)) + (U * c) @ U.T, U


# --- Fourier basis and epochs ---------------------------------------------------------------------


def test_fourier_basis_columns_and_frequencies():
    toas = np.array([0.0, 10.0, 25.0, 100.0])
    F, f = fourier_basis(toas, 3, 100.0)
    np.testing.assert_allclose(f, [0.01, 0.02, 0.03], rtol=1e-15)
    for k in range(3):
        np.testing.assert_allclose(
            F[:, 2 * k], np.sin(2 * np.pi * (k + 1) * toas / 100), atol=1e-14
        )
        np.testing.assert_allclose(
            F[:, 2 * k + 1], np.cos(2 * np.pi * (k + 1) * toas / 100), atol=1e-14
        )


def test_epoch_index_by_hand():
    # backend a: epochs are referenced to their first TOA, not chained between neighbours:
    # 0.99 - 0.0 < 1 joins, 1.0 - 0.0 >= 1 opens a new epoch although 1.0 - 0.99 < 1.
    toas = np.array([0.0, 0.5, 0.99, 1.0, 1.5, 10.0, 20.0, 20.2, 0.2, 0.4, 30.0])
    flags = np.array(["a"] * 8 + ["b", "b", "c"])
    idx = epoch_index(toas, flags, ["a", "b"])
    expected = [0, 0, 0, 1, 1, -1, 2, 2, 3, 3, -1]  # the lone TOA at 10 s and backend c: none
    assert _same_partition(idx, expected)
    assert idx.max() == 3 and sorted(set(idx.tolist())) == [-1, 0, 1, 2, 3]
    # TOA order in the input does not matter
    perm = np.random.default_rng(1).permutation(toas.size)
    assert _same_partition(
        epoch_index(toas[perm], flags[perm], ["a", "b"]), np.array(expected)[perm]
    )
    assert (epoch_index(toas, flags, []) == -1).all()


def test_epoch_index_matches_independent_grouping(psrs):
    for psr in psrs:
        backends = list(psr.backends)
        ours = epoch_index(psr.toas, psr.backend_flags, backends)
        U = _quantization(psr.toas, psr.backend_flags, backends)
        assert U.shape[1] > 30  # NG15 epochs: many TOAs (sub-bands) per observation
        assert _same_partition(ours, _labels(U)), psr.name


# --- whitening ------------------------------------------------------------------------------------


def test_whitening_against_dense_covariance(psrs, noisedict):
    psr = psrs[0]
    wn = white_noise_values(psr, noisedict)
    N, U = _dense_white(psr, wn)
    assert (U.sum(axis=0) >= 2).all() and U.shape[1] == 43  # ECORR blocks are exercised
    W = whiten(psr, wn)
    Wm = W(np.eye(psr.n_toa))
    # W^T W = N^-1 <=> W N W^T = I, a check free of the inversion's round-off; cond(N) ~1e4
    np.testing.assert_allclose(Wm @ N @ Wm.T, np.eye(psr.n_toa), atol=1e-12)
    np.testing.assert_allclose(
        Wm.T @ Wm, np.linalg.inv(N), rtol=1e-9, atol=1e-9 * np.abs(np.linalg.inv(N)).max()
    )
    sign, logdet = np.linalg.slogdet(N)
    assert sign == 1 and W.logdet_N == pytest.approx(logdet, rel=1e-13, abs=1e-9)
    # vectors and stacked columns are whitened alike
    v = psr.residuals
    np.testing.assert_allclose(W(v.copy()), Wm @ v, rtol=1e-12, atol=1e-12 * np.abs(Wm @ v).max())


def test_whitening_without_ecorr(psrs, noisedict):
    psr = psrs[0]
    nd = {k: v for k, v in noisedict.items() if not k.endswith("_log10_ecorr")}
    wn = white_noise_values(psr, nd)
    W = whiten(psr, wn)
    sigma2 = np.diag(_dense_white(psr, wn)[0])
    np.testing.assert_allclose(W(np.ones(psr.n_toa)), 1 / np.sqrt(sigma2), rtol=1e-15)
    assert W.logdet_N == pytest.approx(np.sum(np.log(sigma2)), rel=1e-14)


# --- reduction invariants -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reduced(psrs, noisedict):
    return reduce_pta(psrs, noisedict, n_freq=30)


def test_reduced_shapes_and_bookkeeping(reduced, psrs):
    assert reduced.names == NAMES and reduced.n_psr == 3 and reduced.n_freq == 30
    assert reduced.FNF.shape == (3, 60, 60) and reduced.FNr.shape == (3, 60)
    np.testing.assert_array_equal(reduced.n_toa, [p.n_toa for p in psrs])
    np.testing.assert_array_equal(reduced.n_tm, [p.Mmat.shape[1] for p in psrs])  # full rank
    assert reduced.tspan == max(p.toas.max() for p in psrs) - min(p.toas.min() for p in psrs)
    np.testing.assert_allclose(reduced.freqs, np.arange(1, 31) / reduced.tspan, rtol=1e-15)
    assert reduced.provenance["sources"]["J0605+3757"]["sha256"] == psrs[0].source_sha256


def test_fnf_symmetric_positive_semidefinite(reduced):
    for a in range(reduced.n_psr):
        FNF = reduced.FNF[a]
        np.testing.assert_array_equal(FNF, FNF.T)
        eig = np.linalg.eigvalsh(FNF)
        assert eig.min() >= -1e-12 * eig.max()  # PSD up to float64 round-off


def test_statistics_do_not_depend_on_toa_order(psrs, noisedict, reduced):
    psr = psrs[2]  # J1012-4235, 797 TOAs
    perm = np.random.default_rng(7).permutation(psr.n_toa)
    shuffled = dataclasses.replace(
        psr,
        toas=psr.toas[perm],
        toaerrs=psr.toaerrs[perm],
        residuals=psr.residuals[perm],
        backend_flags=psr.backend_flags[perm],
        freqs=psr.freqs[perm],
        Mmat=psr.Mmat[perm],
    )
    a = reduce_pta([psr], noisedict, tspan=reduced.tspan)
    b = reduce_pta([shuffled], noisedict, tspan=reduced.tspan)
    # sums in another order: float64 round-off relative to the largest entries
    np.testing.assert_allclose(b.FNF, a.FNF, rtol=0, atol=1e-10 * np.abs(a.FNF).max())
    np.testing.assert_allclose(b.FNr, a.FNr, rtol=0, atol=1e-10 * np.abs(a.FNr).max())
    np.testing.assert_allclose(b.const, a.const, rtol=1e-12)
    np.testing.assert_allclose(b.wrms, a.wrms, rtol=1e-12)
    # and the per-pulsar reduction is the same inside an array as alone
    np.testing.assert_array_equal(a.FNF[0], reduced.FNF[2])


def test_more_fourier_columns_than_toas_allow(psrs, noisedict):
    psr = psrs[0]
    keep = np.arange(60)  # the first 60 TOAs: 60 Fourier columns cannot fit with any timing model
    mm = psr.Mmat[keep]
    mm = mm[:, np.linalg.norm(mm, axis=0) > 0]  # DMX columns of epochs not kept are zero
    sub = dataclasses.replace(
        psr,
        toas=psr.toas[keep],
        toaerrs=psr.toaerrs[keep],
        residuals=psr.residuals[keep],
        backend_flags=psr.backend_flags[keep],
        freqs=psr.freqs[keep],
        Mmat=mm,
    )
    with pytest.raises(
        DataError,
        match=r"J0605\+3757: 60 Fourier columns \(30 frequencies\) but only 60 TOAs and (\d+) "
        r"timing-model parameters; expected 2 n_freq <= n_toa - n_tm = (\d+): use fewer",
    ) as info:
        reduce_pta([sub], noisedict, n_freq=30)
    rank, room = map(int, re.search(r"TOAs and (\d+) .* = (\d+):", str(info.value)).groups())
    assert 1 <= rank <= mm.shape[1] and room == 60 - rank
    assert reduce_pta([sub], noisedict, n_freq=room // 2).n_freq == room // 2
    with pytest.raises(DataError, match="use fewer frequencies"):
        reduce_pta([sub], noisedict, n_freq=room // 2 + 1)


def test_zero_design_matrix_column(psrs, noisedict):
    mm = psrs[0].Mmat.copy()
    mm[:, 4] = 0.0
    with pytest.raises(
        DataError, match=r"design-matrix column\(s\) \[4\] are all zero; remove them"
    ):
        reduce_pta([dataclasses.replace(psrs[0], Mmat=mm)], noisedict)


def test_reduce_pta_argument_errors(psrs, noisedict):
    with pytest.raises(DataError, match="reduce_pta: no pulsars given"):
        reduce_pta([], noisedict)
    with pytest.raises(DataError, match="reduce_pta: pulsar names repeat"):
        reduce_pta([psrs[0], psrs[0]], noisedict)
    with pytest.raises(DataError, match="n_freq=0: expected a positive number"):
        reduce_pta(psrs[:1], noisedict, n_freq=0)
    with pytest.raises(DataError, match=r"tspan=-1\.0 s: expected a positive span"):
        reduce_pta(psrs[:1], noisedict, tspan=-1.0)


def test_select_and_best_errors(reduced):
    with pytest.raises(
        PulsarNotFoundError,
        match=r"'J1012-4253' is not in the reduced data \(3 "
        r"pulsars\)\. Did you mean 'J1012-4235'",
    ):
        reduced.select(["J1012-4253"])
    with pytest.raises(
        DataError, match="asked for the 0 best pulsars, but the reduced data hold 3"
    ):
        reduced.best(0)


# --- HDF5 cache -----------------------------------------------------------------------------------


def _assert_same(a, b):
    assert a.names == b.names and a.tspan == b.tspan and a.provenance == b.provenance
    for key in ("pos", "freqs", "FNF", "FNr", "const", "n_toa", "n_tm", "wrms", "span"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)


def test_cache_written_then_reused(psrs, noisedict, tmp_path, monkeypatch):
    path = tmp_path / "cache" / "ng15_small.h5"
    first = reduce_pta(psrs[:2], noisedict, n_freq=10, cache=path)
    assert sorted(os.listdir(path.parent)) == ["ng15_small.h5"]  # atomic: no temp file left
    _assert_same(load_reduced(path), first)

    def no_reduction(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(reduction, "reduce_pulsar", no_reduction)
    again = reduce_pta(psrs[:2], noisedict, n_freq=10, cache=path)
    _assert_same(again, first)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"n_freq": 12}, r"n_freq: cache 10, requested 12"),
        ({"tspan": 3e8}, r"tspan_s: cache '.*', requested '300000000\.0'"),
        ({"noise": ("J0605+3757_Rcvr_800_GUPPI_efac", 1.1)}, r"J0605\+3757: white_noise differs"),
        ({"residuals": 1e-9}, r"J0605\+3757: data_sha256 differs"),
        ({"pulsars": 1}, r"pulsars: cache \[.*\], requested \['J0605\+3757'\]"),
    ],
)
def test_cache_built_from_other_inputs(psrs, noisedict, tmp_path, change, match):
    path = tmp_path / "cache.h5"
    reduce_pta(psrs[:2], noisedict, n_freq=10, cache=path)
    pulsars, nd, kwargs = list(psrs[:2]), dict(noisedict), {"n_freq": 10}
    if "n_freq" in change:
        kwargs["n_freq"] = change["n_freq"]
    if "tspan" in change:
        kwargs["tspan"] = change["tspan"]
    if "noise" in change:
        nd[change["noise"][0]] = change["noise"][1]
    if "residuals" in change:
        pulsars[0] = dataclasses.replace(
            pulsars[0], residuals=pulsars[0].residuals + change["residuals"]
        )
    if "pulsars" in change:
        pulsars = pulsars[: change["pulsars"]]
    with pytest.raises(
        CacheMismatchError,
        match=r"reduced-data cache .*cache\.h5 was built from "
        r"other inputs \(.*" + match + r".*\); delete it or choose another cache path",
    ):
        reduce_pta(pulsars, nd, cache=path, **kwargs)


def test_failed_write_leaves_nothing_behind(reduced, tmp_path):
    bad = dataclasses.replace(reduced, provenance={**reduced.provenance, "oops": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        save_reduced(bad, tmp_path / "r.h5")
    assert os.listdir(tmp_path) == []
    # an existing file is not clobbered by a failed write
    save_reduced(reduced, tmp_path / "r.h5")
    with pytest.raises(TypeError):
        save_reduced(bad, tmp_path / "r.h5")
    assert os.listdir(tmp_path) == ["r.h5"]
    _assert_same(load_reduced(tmp_path / "r.h5"), reduced)


def test_load_reduced_errors(reduced, tmp_path):
    with pytest.raises(DataError, match=r"reduced-data file .*none\.h5 does not exist"):
        load_reduced(tmp_path / "none.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an HDF5 file at all" * 100)
    with pytest.raises(DataError, match=r"garbage\.h5 is not a readable HDF5 file"):
        load_reduced(garbage)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("FNF", data=np.zeros((2, 2)))
    with pytest.raises(
        DataError, match=r"other\.h5 is not a ptaflow reduced-data file \(no format"
    ):
        load_reduced(other)
    old = tmp_path / "old.h5"
    save_reduced(reduced, old)
    with h5py.File(old, "r+") as f:
        f.attrs["ptaflow_reduced_format"] = 99
    with pytest.raises(
        CacheMismatchError, match=r"has reduced-data format 99, this ptaflow writes 1"
    ):
        load_reduced(old)
    partial = tmp_path / "partial.h5"
    save_reduced(reduced, partial)
    with h5py.File(partial, "r+") as f:
        del f["FNr"]
    with pytest.raises(DataError, match=r"partial\.h5: reduced-data file lacks .*FNr.*rebuild it"):
        load_reduced(partial)


# --- arguments of `ptaflow reduce` ---------------------------------------------------------------


def test_tspan_shorter_than_the_data_span(psrs, noisedict):
    span = float(max(p.toas.max() for p in psrs[:2]) - min(p.toas.min() for p in psrs[:2]))
    with pytest.raises(
        DataError,
        match=r"tspan=1\.0 s is shorter than the span of the pulsars' TOAs, "
        + re.escape(f"{span!r} s ({span / YEAR_S:.2f} yr)")
        + r"; expected T >= the data span",
    ):
        reduce_pta(psrs[:2], noisedict, tspan=1.0)
    with pytest.raises(DataError, match=r"tspan=.* s is shorter than the span"):
        reduce_pta(psrs[:2], noisedict, tspan=span * 0.999)


def test_repeated_pulsars_are_named(psrs, noisedict, reduced):
    with pytest.raises(
        DataError, match=r"reduce_pta: pulsar names repeat: 'J0605\+3757' is given twice; give each"
    ):
        reduce_pta([psrs[0], psrs[1], psrs[0]], noisedict)
    with pytest.raises(
        DataError, match=r"pulsar names repeat: 'J1012-4235' is given twice; select each"
    ):
        reduced.select(["J1012-4235", "J0605+3757", "J1012-4235"])


def test_reduce_command_checks_its_arguments(tmp_path, capsys):
    from ptaflow.cli import main

    out = tmp_path / "r.h5"
    source = str(PSR_DIR)
    base = [
        "reduce",
        source,
        "--out",
        str(out),
        "--noise-dict",
        str(PSR_DIR / "noise_dict_15yr.json"),
    ]
    assert main([*base, "--names", "J0605+3757", "--tspan", "1"]) == 1
    assert "tspan=1.0 s is shorter than the span of the pulsars' TOAs" in capsys.readouterr().err
    assert main([*base, "--names", "J0605+3757", "J1012-4235", "J0605+3757"]) == 1
    assert "pulsar names repeat: 'J0605+3757' is given twice in --names" in capsys.readouterr().err
    listed = tmp_path / "pulsars.txt"
    listed.write_text("J0605+3757\nJ1012-4235  # best\nJ1012-4235\n")
    assert main([*base, "--list-file", str(listed)]) == 1
    assert (
        f"pulsar names repeat: 'J1012-4235' is given twice in {listed}" in capsys.readouterr().err
    )
    assert not out.exists()
