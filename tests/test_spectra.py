"""Spectrum conversions, cosmology helpers and table interpolation against ground truth.

Ground truth: the PTArcade/enterprise numbers in
../shared/data/ng15_model_reference/reference_spectra.json and SciPy's grid interpolator.
"""

from __future__ import annotations

import json

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator

from ptaflow import constants, spectra
from ptaflow.errors import DataError, ParameterError

# Float64 round-off through ~10 operations (pow, log10): relative 1e-12 leaves room.
RTOL = 1e-12


@pytest.fixture(scope="module")
def reference(shared_data):
    path = shared_data / "ng15_model_reference" / "reference_spectra.json"
    return json.loads(path.read_text())


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.max(np.abs(a / b - 1.0))


# --- constants ---------------------------------------------------------------------------------

CONSTANT_NAMES = {
    "GEV_TO_HZ": "gev_to_hz",
    "G_NEWTON_GEV": "G",
    "M_PL_GEV": "M_pl",
    "T0_GEV": "T_0",
    "Z_EQ": "z_eq",
    "T_EQ_GEV": "T_eq",
    "H_LITTLE": "h",
    "H0_GEV": "H_0",
    "H0_HZ": "H_0_Hz",
    "OMEGA_V": "omega_v",
    "OMEGA_M": "omega_m",
    "OMEGA_R": "omega_r",
    "A_S": "A_s",
    "F_CMB_HZ": "f_cmb",
    "G_RHO_0": "g_rho_0",
    "G_S_0": "g_s_0",
    "H0_OVER_H_HZ": "H_0_Hz_over_h",
    "FYR_HZ": "enterprise_fyr_hz",
}


@pytest.mark.parametrize("ours, theirs", CONSTANT_NAMES.items())
def test_constants_match_ptarcade(reference, ours, theirs):
    ref = reference["ptarcade_constants"][theirs]
    assert getattr(constants, ours) == pytest.approx(ref, rel=1e-15, abs=0)


def test_constants_are_consistent():
    c = constants
    assert c.H0_HZ / c.H_LITTLE == pytest.approx(c.H0_OVER_H_HZ, rel=1e-15)
    assert c.T_EQ_GEV == pytest.approx(c.T0_GEV * (1 + c.Z_EQ), rel=1e-15)
    assert c.M_PL_GEV == pytest.approx((8 * np.pi * c.G_NEWTON_GEV) ** -0.5, rel=1e-15)
    assert c.H0_GEV * c.GEV_TO_HZ == pytest.approx(c.H0_HZ, rel=1e-15)


# --- power law and unit conversions -------------------------------------------------------------


def _cases(reference):
    return reference["smbhb_powerlaw_check"]["cases"]


def test_powerlaw_against_ptarcade(reference):
    for case in _cases(reference):
        f = np.array(case["frequencies_hz"])
        args = (case["log10_A"], case["gamma"])
        assert _rel(spectra.powerlaw_psd(f, *args), case["S_s3"]) < RTOL
        assert _rel(spectra.powerlaw_h2omega(f, *args), case["h2omega"]) < RTOL
        h2 = np.array(case["h2omega"])
        assert _rel(spectra.h2omega_to_hc(f, h2), case["h_c"]) < RTOL
        assert _rel(spectra.h2omega_to_psd(f, h2), case["S_s3"]) < RTOL
        assert _rel(spectra.hc_to_psd(f, np.array(case["h_c"])), case["S_s3"]) < RTOL


def test_gp_variance_matches_enterprise_powerlaw2(reference):
    tspan = reference["provenance"]["T_span_s"]
    f_k = spectra.fourier_frequencies(tspan, 30)
    for case in _cases(reference):
        assert np.allclose(f_k, case["frequencies_hz"][:30], rtol=RTOL, atol=0)
        phi = spectra.psd_to_variance(
            spectra.powerlaw_psd(f_k, case["log10_A"], case["gamma"]), tspan
        )
        assert _rel(phi, case["enterprise_powerlaw2_S_times_df_at_30_NG_freqs_s2"]) < RTOL


def test_conversions_round_trip():
    f = jnp.geomspace(1e-9, 1e-7, 7)
    h2 = jnp.geomspace(1e-12, 1e-6, 7)
    psd = spectra.h2omega_to_psd(f, h2)
    assert _rel(spectra.psd_to_h2omega(f, psd), h2) < RTOL
    assert _rel(spectra.hc_to_psd(f, spectra.h2omega_to_hc(f, h2)), psd) < RTOL
    tspan = 5e8
    log10_rho = spectra.psd_to_log10_rho(psd, tspan)
    assert _rel(10 ** (2 * log10_rho), spectra.psd_to_variance(psd, tspan)) < RTOL
    assert _rel(spectra.log10_rho_to_psd(log10_rho, tspan), psd) < RTOL


def test_h2omega_to_psd_gradient_finite_at_zero():
    grad = jax.grad(lambda h2: spectra.h2omega_to_psd(1e-8, h2))(0.0)
    assert np.isfinite(grad) and grad > 0


# --- degrees of freedom and horizon crossing ----------------------------------------------------


def test_g_star_against_ptarcade(reference):
    g = reference["g_star"]
    T, f = np.array(g["T_GeV"]), np.array(g["frequencies_hz"])
    assert _rel(spectra.g_rho(T), g["g_rho_T"]) < RTOL
    assert _rel(spectra.g_s(T), g["g_s_T"]) < RTOL
    assert _rel(spectra.g_rho(f, is_freq=True), g["g_rho_f"]) < RTOL
    assert _rel(spectra.g_s(f, is_freq=True), g["g_s_f"]) < RTOL
    assert _rel(spectra.freq_at_temp(T), g["freq_at_temp_hz"]) < RTOL
    assert _rel(spectra.temp_at_freq(f), g["temp_at_freq_GeV"]) < RTOL
    # clamped below the table, as np.interp: g(T_eq) = g(T_0) = today's values
    assert float(spectra.g_rho(constants.T_EQ_GEV)) == g["g_rho_T_eq"] == constants.G_RHO_0
    assert float(spectra.g_s(constants.T_EQ_GEV)) == g["g_s_T_eq"] == constants.G_S_0


def test_g_star_is_linear_in_T_between_nodes():
    table = spectra.g_star_table()
    T0, T1 = table[100, 0], table[101, 0]
    mid = float(spectra.g_rho(0.5 * (T0 + T1)))
    assert mid == pytest.approx(0.5 * (table[100, 3] + table[101, 3]), rel=1e-14)


def test_temp_at_freq_is_nan_outside_table():
    assert np.isnan(spectra.temp_at_freq(1e-20)) and np.isnan(spectra.temp_at_freq(1.0))


# --- table interpolation ----------------------------------------------------------------------


@pytest.fixture
def toy_table(tmp_path):
    """A 3-D table (a, b, log10 f) with random values, in the NG15 layout."""
    rng = np.random.default_rng(1)
    grids = {"a": (-2.0, 0.5, 5), "b": (1.0, 0.25, 4), "f": (-10.0, 0.1, 31)}
    values = rng.normal(size=tuple(n for *_, n in grids.values()))
    path = tmp_path / "toy.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("parameter_names", data=list(grids))
        for name, (start, step, _) in grids.items():
            h5.create_dataset(name, data=[start, step])
        h5.create_dataset("spectrum", data=values)
    axes = [start + step * np.arange(n) for start, step, n in grids.values()]
    return spectra.load_spectrum_table(path), axes, values


def test_table_matches_scipy_linear_interpolation(toy_table):
    table, axes, values = toy_table
    oracle = RegularGridInterpolator(axes, values, method="linear")
    rng = np.random.default_rng(2)
    pts = np.column_stack([rng.uniform(ax[0], ax[-1], 50) for ax in axes])
    ours = np.array([table(10.0 ** p[2], a=p[0], b=p[1]) for p in pts])
    assert np.allclose(ours, oracle(pts), rtol=0, atol=1e-12)


def test_table_is_exact_on_grid_nodes(toy_table):
    table, axes, values = toy_table
    for i, j, k in [(0, 0, 0), (4, 3, 30), (2, 1, 17), (1, 2, 5)]:
        value = table(10.0 ** axes[2][k], a=axes[0][i], b=axes[1][j])
        assert float(value) == pytest.approx(values[i, j, k], abs=1e-12)


def test_table_vectorised_jit_and_grad(toy_table):
    table, axes, _ = toy_table
    f = 10.0 ** jnp.linspace(-9.9, -7.1, 9)
    direct = table(f, a=-1.3, b=1.4)
    assert direct.shape == (9,)
    assert np.allclose(jax.jit(lambda a: table(f, a=a, b=1.4))(-1.3), direct, rtol=1e-14)
    grad = jax.grad(lambda a: jnp.sum(table(f, a=a, b=1.4)))(-1.3)
    assert np.isfinite(grad)
    looped = [table(f, a=a, b=1.4) for a in (-1.9, -0.2)]
    vmapped = jax.vmap(lambda a: table(f, a=a, b=1.4))(jnp.array([-1.9, -0.2]))
    assert np.allclose(vmapped, np.stack(looped), rtol=1e-14)


def test_table_clamps_outside_grid(toy_table):
    table, axes, values = toy_table
    below = table(10.0 ** axes[2][0], a=-50.0, b=axes[1][0])
    above = table(10.0 ** axes[2][-1], a=axes[0][0], b=50.0)
    assert float(below) == pytest.approx(values[0, 0, 0], abs=1e-12)
    assert float(above) == pytest.approx(values[0, -1, -1], abs=1e-12)


def test_table_rejects_unknown_axis_names(toy_table):
    table, _, _ = toy_table
    with pytest.raises(ParameterError, match=r"unexpected \['bb'\].*Did you mean 'b'"):
        table(1e-9, a=-1.0, bb=1.0)


def test_missing_or_malformed_table(tmp_path):
    with pytest.raises(DataError, match="not found"):
        spectra.load_spectrum_table(tmp_path / "absent.h5")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as h5:
        h5.create_dataset("spectrum", data=np.zeros((2, 2)))
    with pytest.raises(DataError, match="parameter_names"):
        spectra.load_spectrum_table(bad)


@pytest.mark.parametrize("name", ["stable_c", "meta_l", "sigw_gauss", "sigw_box"])
def test_shipped_tables_exact_on_nodes(name):
    table = spectra.model_table(name)
    assert table.names[-1] == "f"
    rng = np.random.default_rng(3)
    for _ in range(5):
        idx = tuple(int(rng.integers(0, n)) for n in table.values.shape)
        coords = [s + d * i for s, d, i in zip(table.starts, table.steps, idx, strict=True)]
        kwargs = dict(zip(table.param_names, coords[:-1], strict=True))
        value = float(table(10.0 ** coords[-1], **kwargs))
        assert value == pytest.approx(table.values[idx], abs=1e-11)
