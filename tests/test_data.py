"""Pulsar data: the Feather reader, noise dictionaries, selection and ranking, bad input.

Ground truth: the Feather files read column by column with pyarrow, the NANOGrav
`noise_dict_15yr.json`, and the ranking rule (WRMS / span) recomputed by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pyarrow.feather as feather
import pytest

from ptaflow._paths import DATA_DIR
from ptaflow.data import (
    array_span,
    from_enterprise,
    load_feather,
    load_noise_dict,
    load_pulsars,
    rank_pulsars,
    select_pulsars,
    white_noise_values,
)
from ptaflow.errors import DataError, NoiseDictError, PulsarNotFoundError

PSR_DIR = DATA_DIR / "ng15_pulsars"
NAMES = ("J0557+1551", "J0605+3757", "J1012-4235")
YEAR_S = 365.25 * 86400.0


@pytest.fixture(scope="module")
def psrs():
    return load_pulsars(PSR_DIR)


@pytest.fixture(scope="module")
def noisedict():
    return load_noise_dict(PSR_DIR / "noise_dict_15yr.json")


# --- the Feather reader ---------------------------------------------------------------------------


def test_feather_reader_fields():
    path = PSR_DIR / "J0605+3757.feather"
    psr = load_feather(path)
    table = feather.read_table(path)
    meta = json.loads(table.schema.metadata[b"json"])
    assert psr.name == meta["name"] == "J0605+3757"
    assert psr.n_toa == table.num_rows == 554
    for field in ("toas", "toaerrs", "residuals", "freqs"):
        np.testing.assert_array_equal(getattr(psr, field), table.column(field).to_numpy())
    assert psr.backend_flags.tolist() == table.column("backend_flags").to_pylist()
    assert psr.backends == ("Rcvr1_2_GUPPI", "Rcvr_800_GUPPI")
    n_tm = sum(c.startswith("Mmat_") for c in table.column_names)
    assert psr.Mmat.shape == (554, n_tm) == (554, 40)
    np.testing.assert_array_equal(psr.Mmat[:, 12], table.column("Mmat_12").to_numpy())
    np.testing.assert_array_equal(psr.pos, meta["pos"])
    assert np.linalg.norm(psr.pos) == pytest.approx(1.0, abs=1e-15)
    # units: TOAs in s (MJD 57000-59000), uncertainties in s (0.1-100 us), radio freq in MHz
    assert 57000 * 86400 < psr.toas.min() < psr.toas.max() < 59500 * 86400
    assert 1e-7 < psr.toaerrs.min() and psr.toaerrs.max() < 1e-4
    assert 300 < psr.freqs.min() and psr.freqs.max() < 2000
    assert psr.span == pytest.approx(psr.toas.max() - psr.toas.min(), rel=0)
    assert psr.span / YEAR_S == pytest.approx(3.37, abs=0.01)
    assert psr.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert repr(psr).startswith("Pulsar('J0605+3757', n_toa=554, n_tm=40, span=3.37 yr")


def test_from_enterprise_takes_any_pulsar_like_object(psrs):
    psr = psrs[0]

    @dataclasses.dataclass
    class Like:
        name: str
        toas: np.ndarray
        toaerrs: np.ndarray
        residuals: np.ndarray
        backend_flags: list
        Mmat: np.ndarray
        pos: np.ndarray

    obj = Like(
        psr.name, psr.toas, psr.toaerrs, psr.residuals, list(psr.backend_flags), psr.Mmat, psr.pos
    )
    copy = from_enterprise(obj)
    np.testing.assert_array_equal(copy.backend_flags, psr.backend_flags)
    np.testing.assert_array_equal(copy.freqs, 0.0)  # no radio frequencies given
    assert copy.noisedict is None and copy.source == "enterprise Like"
    bare = dataclasses.make_dataclass("Bare", ["name", "toas"])("x", psr.toas)
    with pytest.raises(
        DataError,
        match=r"lacks enterprise Pulsar attribute\(s\) \['toaerrs', 'residuals', "
        r"'backend_flags', 'Mmat', 'pos'\]",
    ):
        from_enterprise(bare)


def test_load_pulsars_directory_files_and_names(psrs):
    assert [p.name for p in psrs] == list(NAMES)  # a directory: sorted by file name
    chosen = load_pulsars(PSR_DIR, names=["J1012-4235", "J0557+1551"])
    assert [p.name for p in chosen] == ["J1012-4235", "J0557+1551"]  # the order asked for
    files = [PSR_DIR / "J0605+3757.feather"]
    assert [p.name for p in load_pulsars(files)] == ["J0605+3757"]


# --- noise dictionaries ---------------------------------------------------------------------------


def test_noise_dict_in_file_metadata_equals_ng15_json(psrs, noisedict):
    for psr in psrs:
        expected = {k: v for k, v in noisedict.items() if k.startswith(psr.name + "_")}
        assert len(expected) == 3 * len(psr.backends)  # efac, t2equad, ecorr per backend
        assert psr.noisedict == expected
        assert white_noise_values(psr) == white_noise_values(psr, noisedict)


def test_white_noise_values_by_hand(psrs, noisedict):
    psr = psrs[1]  # J0605+3757
    wn = white_noise_values(psr, noisedict)
    for be in psr.backends:
        assert wn.efac[be] == noisedict[f"J0605+3757_{be}_efac"]
        assert wn.log10_t2equad[be] == noisedict[f"J0605+3757_{be}_log10_t2equad"]
        assert wn.log10_ecorr[be] == noisedict[f"J0605+3757_{be}_log10_ecorr"]
    assert wn.as_dict("J0605+3757") == psr.noisedict
    # a backend without ECORR entry simply gets none
    nd = {k: v for k, v in noisedict.items() if k != "J0605+3757_Rcvr_800_GUPPI_log10_ecorr"}
    assert set(white_noise_values(psr, nd).log10_ecorr) == {"Rcvr1_2_GUPPI"}


def test_noise_dict_lacking_a_backend(psrs, noisedict):
    psr = psrs[1]
    nd = {k: v for k, v in noisedict.items() if k != "J0605+3757_Rcvr_800_GUPPI_efac"}
    with pytest.raises(
        NoiseDictError,
        match=r"J0605\+3757: the noise dictionary has no \['J0605\+3757_Rcvr_800_GUPPI_efac'\] "
        r"for backend 'Rcvr_800_GUPPI' \(\d+ TOAs\)",
    ):
        white_noise_values(psr, nd)
    with pytest.raises(NoiseDictError, match=r"no white-noise dictionary; pass one"):
        white_noise_values(dataclasses.replace(psr, noisedict=None))


def test_load_noise_dict_errors(tmp_path):
    with pytest.raises(DataError, match="noise dictionary .*nope.json does not exist"):
        load_noise_dict(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{'efac': 1")
    with pytest.raises(DataError, match="is not valid JSON"):
        load_noise_dict(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object of name -> value"):
        load_noise_dict(tmp_path / "list.json")
    (tmp_path / "nan.json").write_text('{"a_efac": NaN, "b_efac": "high"}')
    with pytest.raises(DataError, match=r"non-finite value\(s\) for \['a_efac', 'b_efac'\]"):
        load_noise_dict(tmp_path / "nan.json")


# --- selection, ranking, span ---------------------------------------------------------------------


def _score_by_hand(psr, nd):
    efac = np.array([nd[f"{psr.name}_{b}_efac"] for b in psr.backend_flags])
    equad = np.array([10 ** nd[f"{psr.name}_{b}_log10_t2equad"] for b in psr.backend_flags])
    w = 1.0 / (efac**2 * (psr.toaerrs**2 + equad**2))
    wrms = np.sqrt(np.sum(w * psr.residuals**2) / np.sum(w))
    return wrms / ((psr.toas.max() - psr.toas.min()) / YEAR_S)


def test_ranking_rule_by_hand(psrs, noisedict):
    by_hand = sorted((_score_by_hand(p, noisedict), p.name) for p in psrs)
    ranked = rank_pulsars(psrs, noisedict)
    assert [n for n, _ in ranked] == [n for _, n in by_hand]
    np.testing.assert_allclose([s for _, s in ranked], [s for s, _ in by_hand], rtol=1e-13)
    scores = dict(ranked)
    assert select_pulsars(NAMES, n_best=2, scores=scores) == [n for _, n in by_hand[:2]]
    assert select_pulsars(NAMES, n_best=3, scores=scores) == [n for _, n in by_hand]
    # ties are broken by name
    tied = {"B": 1.0, "A": 1.0, "C": 0.5}
    assert select_pulsars(["A", "B", "C"], n_best=2, scores=tied) == ["C", "A"]


def test_select_by_names_and_list_file(tmp_path):
    assert select_pulsars(NAMES, names=["J1012-4235", "J0605+3757"]) == ["J1012-4235", "J0605+3757"]
    listing = tmp_path / "pulsars.txt"
    listing.write_text("# my array\nJ1012-4235   # long span\n\n  J0557+1551\n")
    assert select_pulsars(NAMES, list_file=listing) == ["J1012-4235", "J0557+1551"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, DataError, "give exactly one of names=, list_file= or n_best="),
        ({"names": ["J0605+3757"], "n_best": 1}, DataError, "give exactly one of"),
        (
            {"names": ["J0605+3758"]},
            PulsarNotFoundError,
            r"'J0605\+3758' is not available \(3 "
            r"pulsars\)\. Did you mean 'J0605\+3757'",
        ),
        ({"names": ["J0605+3757", "J0605+3757"]}, DataError, "pulsar names repeat"),
        ({"n_best": 2}, DataError, r"needs the per-pulsar scores \(see rank_pulsars\)"),
        (
            {"n_best": 4, "scores": dict.fromkeys(NAMES, 1.0)},
            DataError,
            "n_best=4: expected between 1 and the 3 available pulsars",
        ),
        ({"n_best": 0, "scores": dict.fromkeys(NAMES, 1.0)}, DataError, "n_best=0"),
        (
            {"list_file": "/nonexistent/list.txt"},
            DataError,
            "pulsar list file /nonexistent/list.txt does not exist",
        ),
    ],
)
def test_select_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        select_pulsars(NAMES, **kwargs)


def test_select_empty_list_file(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    with pytest.raises(DataError, match="names no pulsars"):
        select_pulsars(NAMES, list_file=tmp_path / "empty.txt")


def test_array_span(psrs):
    first = min(p.toas.min() for p in psrs)
    last = max(p.toas.max() for p in psrs)
    assert array_span(psrs) == last - first
    assert array_span(psrs) / YEAR_S == pytest.approx(4.6, abs=0.05)
    assert array_span(psrs[1:2]) == psrs[1].span
    with pytest.raises(DataError, match="array_span: no pulsars given"):
        array_span([])


# --- bad input ------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"pulsar file .*J0000\+0000\.feather does not exist"):
        load_feather(tmp_path / "J0000+0000.feather")
    with pytest.raises(DataError, match="pulsar directory .*nowhere does not exist"):
        load_pulsars(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no \*\.feather pulsar files in"):
        load_pulsars(tmp_path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "J0605+3757.feather"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(
        DataError, match=r"J0605\+3757\.feather is not a readable Arrow Feather file"
    ):
        load_feather(path)
    # a truncated real file is just as unreadable
    path.write_bytes((PSR_DIR / "J0605+3757.feather").read_bytes()[:50_000])
    with pytest.raises(DataError, match="is not a readable Arrow Feather file"):
        load_feather(path)


def test_feather_without_required_columns_or_metadata(tmp_path):
    table = feather.read_table(PSR_DIR / "J0605+3757.feather")
    path = tmp_path / "x.feather"
    feather.write_feather(table.drop_columns(["residuals"]), path)
    with pytest.raises(DataError, match=r"missing column\(s\) \['residuals'\]"):
        load_feather(path)
    feather.write_feather(table.replace_schema_metadata({}), path)
    with pytest.raises(DataError, match="no 'json' schema metadata"):
        load_feather(path)
    feather.write_feather(table.replace_schema_metadata({"json": json.dumps({"name": "x"})}), path)
    with pytest.raises(DataError, match="metadata lacks 'pos'"):
        load_feather(path)


def test_unknown_pulsar_name_suggests_close_match():
    with pytest.raises(
        PulsarNotFoundError,
        match=r"pulsar 'J0605\+3575' is not among the 3 pulsars in .*ng15_pulsars\. "
        r"Did you mean 'J0605\+3757'",
    ) as info:
        load_pulsars(PSR_DIR, names=["J0605+3575"])
    assert isinstance(info.value, KeyError)  # also catchable as a KeyError
    with pytest.raises(PulsarNotFoundError, match=r"'B1937\+21' is not among .*pulsars in"):
        load_pulsars(PSR_DIR, names=["B1937+21"])


@pytest.mark.parametrize(
    "field, value, match",
    [
        (
            "residuals",
            np.nan,
            r"'residuals' holds 1 NaN or infinite value\(s\) \(first at index \(7,\)\)",
        ),
        ("residuals", np.inf, r"'residuals' holds 1 NaN or infinite"),
        ("toaerrs", np.inf, r"'toaerrs' holds 1 NaN or infinite value\(s\)"),
        ("toaerrs", np.nan, r"'toaerrs' holds 1 NaN"),
        ("toaerrs", 0.0, r"TOA uncertainty .*0\.0\)? s at index 7; expected > 0"),
        ("toas", np.nan, r"'toas' holds 1 NaN"),
    ],
)
def test_non_finite_values_are_rejected(psrs, field, value, match):
    arr = getattr(psrs[1], field).copy()
    arr[7] = value
    with pytest.raises(DataError, match=r"pulsar J0605\+3757 \(.*\): " + match):
        dataclasses.replace(psrs[1], **{field: arr})


def test_inconsistent_shapes_are_rejected(psrs):
    psr = psrs[1]
    with pytest.raises(DataError, match=r"'residuals' has shape \(553,\), expected \(554,\)"):
        dataclasses.replace(psr, residuals=psr.residuals[:-1])
    with pytest.raises(
        DataError, match=r"design matrix has shape \(553, 40\), expected \(554, n_tm\)"
    ):
        dataclasses.replace(psr, Mmat=psr.Mmat[:-1])
    mm = psr.Mmat.copy()
    mm[3, 5] = np.inf
    with pytest.raises(
        DataError, match=r"'Mmat' holds 1 NaN or infinite value\(s\) \(first at index \(3, 5\)\)"
    ):
        dataclasses.replace(psr, Mmat=mm)
    with pytest.raises(DataError, match="sky position .*expected a finite 3-vector"):
        dataclasses.replace(psr, pos=np.array([1.0, 0.0]))


# --- reduced-data files ---------------------------------------------------------------------------


def _set(name, value):
    def change(f):
        del f[name]
        f.create_dataset(name, data=value)

    return change


def _nan_at(name, index):
    def change(f):
        f[name][index] = np.nan

    return change


def _attr(name, value):
    def change(f):
        f.attrs[name] = value

    return change


@pytest.mark.parametrize(
    "change, match",
    [
        (
            _nan_at("FNr", (3, 5)),
            r"'FNr' holds 1 NaN or infinite value\(s\) \(first at index \(3, 5\)\)",
        ),
        (
            _nan_at("const", 7),
            r"'const' holds 1 NaN or infinite value\(s\) \(first at index \(7,\)\)",
        ),
        (
            _set("const", np.zeros(47)),
            r"'const' has shape \(47,\), expected \(48,\) for 48 pulsars",
        ),
        (
            _set("FNF", np.zeros((48, 58, 58))),
            r"'FNF' has shape \(48, 58, 58\), expected \(48, 60, 60\)",
        ),
        (_set("pos", np.zeros((48, 2))), r"'pos' has shape \(48, 2\), expected \(48, 3\)"),
        (_attr("provenance", "{not json"), r"the 'provenance' attribute is not readable JSON"),
        (
            _attr("provenance", "{}"),
            r"the provenance lacks the inputs of pulsar\(s\) \['B1855\+09'",
        ),
        (_attr("tspan_s", -1.0), r"expected a positive span T"),
    ],
)
def test_inconsistent_reduced_files_are_refused(tmp_path, change, match):
    import shutil

    import h5py

    from ptaflow.data import load_reduced

    path = tmp_path / "reduced.h5"
    shutil.copy(DATA_DIR / "ng15_48psr_reduced_k30.h5", path)
    assert load_reduced(path).n_psr == 48
    with h5py.File(path, "a") as f:
        change(f)
    with pytest.raises(DataError, match=r"reduced\.h5: " + match):
        load_reduced(path)
