"""Result files: exact round trips, atomic writes, clear errors, provenance, weighted summaries."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
import stat
import subprocess

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flowjax.distributions import StandardNormal
from flowjax.flows import masked_autoregressive_flow

import ptaflow
from ptaflow import results
from ptaflow.errors import DataError, ParameterError
from ptaflow.flows.io import flow_to_bytes, read_leaves, result_flow
from ptaflow.results import PosteriorResult

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("gw_log10_A", "gw_gamma")


def _small_flow(seed: int):
    return masked_autoregressive_flow(
        jax.random.key(seed), base_dist=StandardNormal((2,)), flow_layers=2, nn_width=8
    )


def _result(seed: int = 0, *, weighted: bool = True, flow: bool = True) -> PosteriorResult:
    rng = np.random.default_rng(seed)
    n = 257
    log_w = rng.normal(size=n)
    log_w[3] = -np.inf  # a zero weight must survive the round trip
    return PosteriorResult(
        param_names=NAMES,
        samples=np.column_stack([rng.uniform(-18, -11, n), rng.uniform(0, 7, n)]),
        log_likelihood=rng.normal(1e5, 3.0, n),
        log_prior=np.full(n, -np.log(49.0)),
        log_weights=log_w if weighted else None,
        diagnostics={"ess": np.float64(123.4), "pareto_k": 0.31, "n_steps": np.int64(500)},
        settings={"flow": {"layers": (8, 8), "width": 50}, "seed": seed, "note": "x"},
        provenance={"ptaflow": ptaflow.__version__, "git_revision": None},
        flow_bytes=flow_to_bytes(_small_flow(seed)) if flow else None,
        flow_config={"kind": "maf", "flow_layers": 2, "nn_width": 8, "n_dim": 2} if flow else None,
        latex_labels={"gw_log10_A": r"$\log_{10} A$"},
    )


def _assert_same(a: PosteriorResult, b: PosteriorResult) -> None:
    assert a.param_names == b.param_names
    for name in ("samples", "log_likelihood", "log_prior", "log_weights"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None
        else:
            assert x.dtype == y.dtype == np.float64
            np.testing.assert_array_equal(x, y)  # bit-exact
    for name in ("diagnostics", "settings", "provenance", "flow_config", "latex_labels"):
        assert getattr(a, name) == getattr(b, name)
    assert a.flow_bytes == b.flow_bytes


# --- round trips -------------------------------------------------------------------------------


def test_posterior_round_trip_is_exact(tmp_path):
    res = _result()
    path = results.save_posterior(res, tmp_path / "sub" / "post.h5")
    assert path.is_file()
    back = results.load_posterior(path)
    _assert_same(res, back)
    assert back.settings["flow"]["layers"] == [8, 8]  # JSON form, already in the original
    assert type(back.diagnostics["n_steps"]) is int
    # The stored flow reads back into a skeleton of the same structure and gives the same
    # densities as the flow that was serialised.
    flow = _small_flow(0)
    loaded = read_leaves(back.flow_bytes, _small_flow(99))
    x = jnp.array([[0.3, -1.2], [2.0, 0.1]])
    np.testing.assert_array_equal(flow.log_prob(x), loaded.log_prob(x))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["post.h5", "sub"]


def test_round_trip_without_weights_or_flow(tmp_path):
    res = _result(1, weighted=False, flow=False)
    back = results.load_posterior(results.save_posterior(res, tmp_path / "p.h5"))
    _assert_same(res, back)
    assert back.weights is None and back.ess == res.n_samples
    with pytest.raises(DataError, match="stores no flow"):
        result_flow(back)


def test_result_owns_read_only_copies():
    samples = np.zeros((4, 2))
    res = PosteriorResult(NAMES, samples, np.zeros(4), np.zeros(4))
    samples[0, 0] = 1.0
    assert res.samples[0, 0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        res.samples[0, 0] = 2.0
    with pytest.raises(AttributeError):
        res.samples = samples  # frozen dataclass


def test_json_and_csv_round_trip(tmp_path):
    table = [
        {"model": "SMBHB", "log_z": -12.345678901234567, "log_z_err": 0.01, "n_eff": 4000},
        {"model": "PT-BUBBLE", "log_z": np.float64(-10.1), "n_eff": np.int64(3500)},
    ]
    cols = ["model", "log_z", "log_z_err", "n_eff"]
    results.write_csv_atomic(tmp_path / "t.csv", table, cols)
    with open(tmp_path / "t.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [list(r) for r in rows] == [cols, cols]
    assert float(rows[0]["log_z"]) == -12.345678901234567  # floats read back exactly
    assert rows[1]["log_z_err"] == "" and rows[1]["n_eff"] == "3500"

    obj = {"table": table, "arr": np.arange(3.0), "path": tmp_path}
    results.write_json_atomic(tmp_path / "t.json", obj)
    back = json.loads((tmp_path / "t.json").read_text())
    assert back["table"][0] == table[0]
    assert back["table"][1]["log_z"] == -10.1 and back["arr"] == [0.0, 1.0, 2.0]
    assert back["path"] == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.json"]


def _strict_json(text: str):
    """Parse JSON as any RFC 8259 parser would: NaN/Infinity literals are errors."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_with_non_finite_numbers_as_null(tmp_path):
    nan, inf = float("nan"), float("inf")
    obj = {"x": nan, "y": [inf, -inf, 1.5], "arr": np.array([1.0, np.nan]), "n": np.float64(nan)}
    results.write_json_atomic(tmp_path / "t.json", obj)
    back = _strict_json((tmp_path / "t.json").read_text())
    assert back == {"x": None, "y": [None, None, 1.5], "arr": [1.0, None], "n": None}
    assert _strict_json(results.json_text({"z": (nan, 2)})) == {"z": [None, 2]}
    # Posterior files store their dicts as strict JSON too; NaN reads back as None.
    res = dataclasses.replace(_result(flow=False), diagnostics={"final_loss": nan, "ess": 3.0})
    assert res.diagnostics == {"final_loss": None, "ess": 3.0}
    path = results.save_posterior(res, tmp_path / "p.h5")
    with h5py.File(path) as f:
        assert _strict_json(f.attrs["diagnostics"]) == {"final_loss": None, "ess": 3.0}
    _assert_same(res, results.load_posterior(path))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_the_mode_open_would_give(tmp_path, umask, mode):
    old = os.umask(umask)
    results._new_file_mode.cache_clear()  # the umask is read once per process
    try:
        paths = [
            results.write_bytes_atomic(tmp_path / "b.bin", b"x"),
            results.write_json_atomic(tmp_path / "j.json", {"a": 1}),
            results.write_csv_atomic(tmp_path / "c.csv", [{"a": 1}], ["a"]),
            results.save_posterior(_result(flow=False), tmp_path / "p.h5"),
        ]
    finally:
        os.umask(old)
        results._new_file_mode.cache_clear()
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in paths} == {oct(mode)}


def test_file_record_hashes_the_file(tmp_path):
    path = tmp_path / "in.bin"
    data = bytes(range(256)) * 10
    path.write_bytes(data)
    rec = results.file_record(path)
    assert rec == {
        "path": str(path.resolve()),
        "bytes": 2560,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    with pytest.raises(DataError, match="missing.bin does not exist"):
        results.file_record(tmp_path / "missing.bin")


# --- atomicity ---------------------------------------------------------------------------------


def test_failed_posterior_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "post.h5"
    old = _result(0)
    results.save_posterior(old, path)
    calls = []
    original = h5py.Group.create_dataset

    def fail_on_second(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", fail_on_second)
    with pytest.raises(OSError, match="simulated"):
        results.save_posterior(_result(5), path)
    monkeypatch.undo()
    assert len(calls) == 2  # the failure happened after part of the new file was written
    _assert_same(old, results.load_posterior(path))
    assert [p.name for p in tmp_path.iterdir()] == ["post.h5"]


def test_interrupted_bytes_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "table.json"
    results.write_json_atomic(path, {"version": "old"})
    old_bytes = path.read_bytes()

    def interrupt(fd):
        raise KeyboardInterrupt  # after the new content went into the temporary file

    monkeypatch.setattr(results.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        results.write_json_atomic(path, {"version": "new", "pad": "x" * 10_000})
    assert path.read_bytes() == old_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


def test_unserialisable_json_writes_nothing(tmp_path):
    with pytest.raises(ParameterError, match="not JSON-serialisable"):
        results.write_json_atomic(tmp_path / "x.json", {"f": object()})
    assert list(tmp_path.iterdir()) == []


# --- errors ------------------------------------------------------------------------------------


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(DataError, match=r"nope\.h5 does not exist"):
        results.load_posterior(missing)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError, match=r"text\.h5 is not a readable HDF5 file"):
        results.load_posterior(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(DataError, match=r"other\.h5 is not a ptaflow posterior file"):
        results.load_posterior(other)
    future = results.save_posterior(_result(flow=False), tmp_path / "future.h5")
    with h5py.File(future, "a") as f:
        f.attrs["ptaflow_posterior_format"] = 999
    with pytest.raises(DataError, match=r"future\.h5 has posterior format 999; .* reads format 1"):
        results.load_posterior(future)
    cut = results.save_posterior(_result(flow=False), tmp_path / "cut.h5")
    with h5py.File(cut, "a") as f:
        del f["log_prior"]
    with pytest.raises(DataError, match=r"cut\.h5 lacks .*log_prior"):
        results.load_posterior(cut)


def test_result_validation_messages():
    z = np.zeros(5)
    with pytest.raises(ParameterError, match=r"samples: expected shape \(n_samples, n_dim=2\)"):
        PosteriorResult(NAMES, np.zeros((5, 3)), z, z)
    with pytest.raises(ParameterError, match=r"log_prior: expected shape \(n_samples=5,\); got"):
        PosteriorResult(NAMES, np.zeros((5, 2)), z, np.zeros(4))
    with pytest.raises(ParameterError, match="1 NaN"):
        PosteriorResult(NAMES, np.zeros((5, 2)), z, z, log_weights=[0, 1, np.nan, 0, 0])
    with pytest.raises(ParameterError, match="0 finite"):
        PosteriorResult(NAMES, np.zeros((5, 2)), z, z, log_weights=np.full(5, -np.inf))
    with pytest.raises(ParameterError, match="Did you mean 'gw_gamma'"):
        PosteriorResult(NAMES, np.zeros((5, 2)), z, z, latex_labels={"gw_gama": "g"})
    with pytest.raises(ParameterError, match="settings must hold only JSON"):
        PosteriorResult(NAMES, np.zeros((5, 2)), z, z, settings={"f": object()})
    with pytest.raises(ParameterError, match="distinct"):
        PosteriorResult(("a", "a"), np.zeros((5, 2)), z, z)


# --- provenance --------------------------------------------------------------------------------


def test_provenance_keys_and_git_revision():
    prov = results.provenance(seed=3, config={"n_freq": np.int64(14)})
    for key in ("ptaflow", "jax", "jaxlib", "flowjax", "numpy", "equinox", "python"):
        assert isinstance(prov[key], str), key
    assert prov["ptaflow"] == ptaflow.__version__
    assert prov["jax"] == jax.__version__ and prov["numpy"] == np.__version__
    assert prov["device_kind"] == jax.devices()[0].device_kind
    assert prov["device_count"] == jax.device_count()
    assert prov["jax_backend"] == jax.default_backend()
    assert prov["x64"] is True  # conftest switches float64 on
    when = datetime.datetime.fromisoformat(prov["time_utc"])
    assert when.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - when).total_seconds() < 60
    assert prov["seed"] == 3 and prov["config"] == {"n_freq": 14}
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert prov["git_revision"] == head and len(head) == 40
    assert isinstance(prov["git_dirty"], bool)
    json.dumps(prov)  # fully JSON-serialisable


def test_provenance_outside_a_checkout_and_key_clash(tmp_path, monkeypatch):
    # a plain folder, and an installed copy inside some other git repository
    outer = tmp_path / "project"
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    commit = ["commit", "-q", "--allow-empty", "-m", "init"]
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "-C", str(outer), *ident, *commit], check=True)
    for root in (tmp_path / "plain", outer / ".venv" / "site-packages"):
        (root / "ptaflow").mkdir(parents=True)
        monkeypatch.setattr(results, "__file__", str(root / "ptaflow" / "results.py"))
        prov = results.provenance()
        assert prov["git_revision"] is None and prov["git_dirty"] is None
    with pytest.raises(ParameterError, match="'hostname' would overwrite"):
        results.provenance(hostname="x")


# --- summaries and resampling ------------------------------------------------------------------


def _normal_by_importance(n: int, seed: int) -> PosteriorResult:
    """x ~ U(-5, 5) weighted by N(0, 1): the weighted set represents a standard normal."""
    x = np.random.default_rng(seed).uniform(-5.0, 5.0, n)
    z = np.zeros(n)
    return PosteriorResult(("x",), x[:, None], z, z, log_weights=scipy.stats.norm.logpdf(x))


def test_summary_unweighted_and_equal_weights_match_numpy():
    res = _result(2, weighted=False, flow=False)
    s = res.summary()
    for i, name in enumerate(NAMES):
        lo, med, hi = np.percentile(res.samples[:, i], [16, 50, 84])
        # 0.5 (1 +- 0.68) and 16/100, 84/100 differ in the last bit
        assert s[name] == pytest.approx({"median": med, "lower": lo, "upper": hi}, rel=1e-14)
    equal = PosteriorResult(NAMES, res.samples, res.log_likelihood, res.log_prior, np.zeros(257))
    for name in NAMES:
        for key in ("median", "lower", "upper"):
            # the weighted rule reduces to np.percentile up to the rounding of cumulative sums
            assert equal.summary()[name][key] == pytest.approx(s[name][key], rel=1e-12)
    assert res.summary(interval=0.9)["gw_gamma"]["upper"] == pytest.approx(
        np.percentile(res.samples[:, 1], 95), rel=1e-12
    )
    with pytest.raises(ParameterError, match="interval=1.5"):
        res.summary(interval=1.5)


def test_weighted_summary_recovers_normal_quantiles():
    res = _normal_by_importance(20_000, seed=4)
    assert 6000 < res.ess < 8000  # n / (10 / (2 sqrt(pi))) = 7090 expected
    s = res.summary()["x"]
    for key, q in (("lower", 0.16), ("median", 0.5), ("upper", 0.84)):
        exact = scipy.stats.norm.ppf(q)
        # quantile standard error sqrt(q (1 - q) / ESS) / pdf(x_q); 5 sigma
        tol = 5.0 * np.sqrt(q * (1 - q) / res.ess) / scipy.stats.norm.pdf(exact)
        assert abs(s[key] - exact) < tol, (key, s[key], exact, tol)


def test_resampled_is_equally_weighted_normal():
    res = _normal_by_importance(20_000, seed=5)
    out = res.resampled(jax.random.key(0), 20_000)
    assert out.log_weights is None and out.n_samples == 20_000
    assert out.diagnostics["resampled_from"] == 20_000
    assert out.diagnostics["ess_before_resampling"] == pytest.approx(res.ess)
    x = out.samples[:, 0]
    # importance-sampling error (1/ESS) plus multinomial resampling error (1/n); 5 sigma
    assert abs(x.mean()) < 5.0 * np.sqrt(1.0 / res.ess + 1.0 / 20_000)
    assert abs(x.std() - 1.0) < 5.0 * np.sqrt(0.5 / res.ess + 0.5 / 20_000)
    # every draw is one of the original samples, with its own ln L / ln prior
    assert np.isin(x, res.samples[:, 0]).all()


def test_resampled_degenerate_weights_pick_the_one_sample():
    lw = np.full(10, -np.inf)
    lw[7] = 0.0
    res = PosteriorResult(
        ("a",), np.arange(10.0)[:, None], np.arange(10.0) * 2, np.zeros(10), log_weights=lw
    )
    assert res.ess == 1.0
    out = res.resampled(jax.random.key(1), 50)
    np.testing.assert_array_equal(out.samples[:, 0], np.full(50, 7.0))
    np.testing.assert_array_equal(out.log_likelihood, np.full(50, 14.0))
    with pytest.raises(ParameterError, match="n=0"):
        res.resampled(jax.random.key(1), 0)


def test_to_dict():
    res = _result(flow=False)
    assert res.to_dict([-15.0, 4.33]) == {"gw_log10_A": -15.0, "gw_gamma": 4.33}
    cols = res.to_dict(res.samples)
    np.testing.assert_array_equal(cols["gw_gamma"], res.samples[:, 1])
    with pytest.raises(ParameterError, match=r"expected shape \(n_dim=2,\).*got \(3,\)"):
        res.to_dict([1.0, 2.0, 3.0])


def test_flow_that_does_not_fit_the_skeleton():
    key = jax.random.key(0)
    two = [eqx.nn.Linear(3, 3, key=key), eqx.nn.Linear(3, 4, key=key)]
    res = PosteriorResult(NAMES, np.zeros((3, 2)), np.zeros(3), np.zeros(3))
    res = dataclasses.replace(res, flow_bytes=flow_to_bytes(two))
    other = jax.random.key(1)
    skeleton = [eqx.nn.Linear(3, 3, key=other), eqx.nn.Linear(3, 4, key=other)]
    loaded = read_leaves(res.flow_bytes, skeleton)
    assert bool(eqx.tree_equal(eqx.filter(loaded, eqx.is_array), eqx.filter(two, eqx.is_array)))
    for skeleton, match in (
        ([eqx.nn.Linear(3, 3, key=key)], r"read \d+ of the \d+ stored bytes"),  # fewer leaves
        ([eqx.nn.Linear(3, 3, key=key)] * 2, "changed shape"),
        ([eqx.nn.Linear(3, 3, key=key)] * 3, "does not fit"),
    ):
        with pytest.raises(DataError, match=match):
            read_leaves(res.flow_bytes, skeleton)
