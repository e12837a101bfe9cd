"""Figures: written PNGs of the expected size, drawn numbers equal to the inputs, shape errors."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from matplotlib.container import BarContainer

from ptaflow import plots
from ptaflow.constants import FYR_HZ
from ptaflow.errors import ParameterError
from ptaflow.likelihood import PowerLawProcess, load_free_spectrum_densities
from ptaflow.models import load_model


@pytest.fixture(scope="module")
def densities():
    return load_free_spectrum_densities()


def _check_png(fig, path):
    """The PNG exists, is readable and is figure size x DPI pixels with some drawing on it."""
    assert path.is_file() and path.stat().st_size > 1000
    img = matplotlib.image.imread(path)
    width, height = fig.get_size_inches() * plots.DPI
    assert img.shape == (round(height), round(width), 4)
    assert img[..., :3].std() > 0.01  # not a blank canvas
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def _powerlaw_log10_rho(log10_A, gamma, f, tspan):
    """NumPy power law: S = A^2/(12 pi^2) f_yr^(gamma-3) f^-gamma, log10 rho = 0.5 log10(S/T)."""
    A = 10.0 ** log10_A[:, None]
    g = gamma[:, None]
    S = A**2 / (12.0 * np.pi**2) * FYR_HZ ** (g - 3.0) * f[None, :] ** (-g)
    return 0.5 * np.log10(S / tspan)


# --- corner ------------------------------------------------------------------------------------


def _step_heights(ax):
    """(bin edges, heights) of each step histogram drawn on an axes."""
    out = []
    for patch in ax.patches:
        xy = patch.get_xy()
        edges = np.unique(xy[:, 0])
        heights = xy[1:-1:2, 1]  # vertices (e0, 0), (e0, h0), (e1, h0), (e1, h1), ...
        out.append((edges, heights[: edges.size - 1]))
    return out


def test_corner_overlays_sets_with_their_histograms(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1500, 2))
    b = rng.normal([0.5, -0.3], [1.3, 0.8], size=(1000, 2))
    w = rng.uniform(0.0, 2.0, 1000)
    path = tmp_path / "corner.png"
    fig = plots.plot_corner(
        [a, b],
        param_names=["gw_log10_A", "gw_gamma"],
        labels=["flow", "NUTS"],
        weights=[None, w],
        latex_labels={"gw_gamma": r"$\gamma$"},
        truths={"gw_gamma": 0.0},
        bins=25,
        path=path,
    )
    _check_png(fig, path)
    assert len(fig.axes) == 4
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["flow", "NUTS"]
    assert fig.axes[3].get_xlabel() == r"$\gamma$" and fig.axes[2].get_xlabel() == "gw_log10_A"
    for k, ax in enumerate((fig.axes[0], fig.axes[3])):
        (edges_a, h_a), (edges_b, h_b) = _step_heights(ax)
        np.testing.assert_allclose(edges_a, edges_b, rtol=1e-12)  # shared bins
        assert edges_a.size == 26
        lo = min(a[:, k].min(), b[:, k].min())
        assert edges_a[0] < lo and edges_a[0] > lo - 0.05 * np.ptp(np.r_[a[:, k], b[:, k]])
        ref_a, _ = np.histogram(a[:, k], bins=edges_a, density=True)
        ref_b, _ = np.histogram(b[:, k], bins=edges_b, weights=w, density=True)
        np.testing.assert_allclose(h_a, ref_a, rtol=1e-12)
        np.testing.assert_allclose(h_b, ref_b, rtol=1e-12)
        assert ax.get_ylim()[1] == pytest.approx(1.1 * max(h_a.max(), h_b.max()))


def test_corner_does_not_touch_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    rng = np.random.default_rng(1)
    plots.plot_corner([rng.normal(size=(400, 3))], param_names=["a", "b", "c"], labels=["x"])
    assert plt.get_fignums() == before


def test_corner_bad_inputs():
    x = np.random.default_rng(2).normal(size=(100, 2))
    kw = {"param_names": ["a", "b"], "labels": ["s"]}
    with pytest.raises(ParameterError, match=r"sample set 's': expected shape .*got \(100, 3\)"):
        plots.plot_corner([np.zeros((100, 3))], **kw)
    with pytest.raises(ParameterError, match="labels: expected 1"):
        plots.plot_corner([x], param_names=["a", "b"], labels=["s", "t"])
    with pytest.raises(ParameterError, match="weights: expected 1 entries"):
        plots.plot_corner([x], weights=[None, None], **kw)
    with pytest.raises(ParameterError, match=r"weights of sample set 's'.*got shape \(99,\)"):
        plots.plot_corner([x], weights=[np.ones(99)], **kw)
    with pytest.raises(ParameterError, match="weights of sample set 's'"):
        plots.plot_corner([x], weights=[-np.ones(100)], **kw)
    with pytest.raises(ParameterError, match="Did you mean 'b'"):
        plots.plot_corner([x], truths={"bb": 1.0}, **kw)
    with pytest.raises(ParameterError, match="truths: expected 2 values"):
        plots.plot_corner([x], truths=[1.0], **kw)
    with pytest.raises(ParameterError, match="non-finite"):
        plots.plot_corner([np.full((100, 2), np.nan)], **kw)
    with pytest.raises(ParameterError, match="unknown image format 'xyz'"):
        plots.plot_corner([x], path="out.xyz", **kw)


# --- spectra -----------------------------------------------------------------------------------


def test_spectrum_draws_equal_the_power_law_formula(densities):
    rng = np.random.default_rng(3)
    thetas = np.column_stack([rng.uniform(-16, -13, 50), rng.uniform(1, 6, 50)])
    f = np.asarray(densities.freqs[:14])
    expected = _powerlaw_log10_rho(thetas[:, 0], thetas[:, 1], f, densities.tspan)
    got = plots.spectrum_draws(PowerLawProcess(), thetas, f, densities.tspan)
    assert got.shape == (50, 14)
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    # The SMBHB source model goes through h^2 Omega_GW and back: the same power law.
    smbhb = plots.spectrum_draws(load_model("smbhb"), thetas, f, densities.tspan)
    np.testing.assert_allclose(smbhb, expected, rtol=1e-12)
    with pytest.raises(ParameterError, match=r"thetas: expected shape \(n_samples, n_dim=2\)"):
        plots.spectrum_draws(PowerLawProcess(), thetas[:, :1], f, densities.tspan)
    with pytest.raises(ParameterError, match="positive frequencies"):
        plots.spectrum_draws(PowerLawProcess(), thetas, -f, densities.tspan)
    with pytest.raises(ParameterError, match="tspan=0.0"):
        plots.spectrum_draws(PowerLawProcess(), thetas, f, 0.0)


def test_spectrum_bands_are_percentiles_of_the_draws(densities, tmp_path):
    rng = np.random.default_rng(4)
    n_freq = 10
    f = np.asarray(densities.freqs[:n_freq])
    draws = {
        "SMBHB": _powerlaw_log10_rho(
            rng.normal(-14.2, 0.15, 300), rng.normal(3.2, 0.3, 300), f, densities.tspan
        ),
        "PT": rng.normal(-7.5, 0.3, size=(200, n_freq)),
    }
    path = tmp_path / "spectrum.png"
    fig = plots.plot_spectrum(draws, densities, n_freq=n_freq, path=path)
    _check_png(fig, path)
    ax = fig.axes[0]
    lines = {line.get_gid(): line for line in ax.lines}
    for label, d in draws.items():
        for p in (2.5, 16, 50, 84, 97.5):
            line = lines[f"{label}/p{p:g}"]
            np.testing.assert_array_equal(line.get_xdata(), np.log10(f))
            np.testing.assert_array_equal(line.get_ydata(), np.percentile(d, p, axis=0))
    # Violins: the widest point of each is at the density's mode, centred on log10 f_k.
    grid = np.asarray(densities.log10_rho_grid)
    log_dens = np.asarray(densities.log_density)
    ymin, ymax = ax.get_ylim()
    for k in range(n_freq):
        verts = ax.collections[k].get_paths()[0].vertices
        mode = grid[np.argmax(log_dens[k])]
        widest = verts[np.argmax(verts[:, 0]), 1]
        assert widest == pytest.approx(mode, abs=1e-9)
        assert 0.5 * (verts[:, 0].max() + verts[:, 0].min()) == pytest.approx(np.log10(f[k]))
    assert ymin < np.percentile(draws["SMBHB"], 2.5, axis=0).min()
    assert ymax > np.percentile(draws["SMBHB"], 97.5, axis=0).max()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["free spectrum", "SMBHB", "PT"]


def test_spectrum_bad_inputs(densities):
    draws = np.zeros((10, 14))
    with pytest.raises(ParameterError, match=r"draws 'posterior': expected shape .*n_freq=12"):
        plots.plot_spectrum(draws, densities, n_freq=12)
    with pytest.raises(ParameterError, match="n_freq=31: expected 1..30"):
        plots.plot_spectrum(np.zeros((10, 31)), densities, n_freq=31)
    with pytest.raises(ParameterError, match="empty mapping"):
        plots.plot_spectrum({}, densities)


# --- Bayes factors and losses ------------------------------------------------------------------


def test_bayes_factor_bars_and_error_bars(tmp_path):
    names = ["SMBHB", "PT-BUBBLE", "SIGW-GAUSS"]
    log_bf = np.array([0.0, 2.3, -0.7])
    err = np.array([0.02, 0.15, 0.08])
    second = (np.array([0.0, 2.1, -0.6]), np.array([0.05, 0.3, 0.1]))
    path = tmp_path / "bf.png"
    fig = plots.plot_bayes_factors(names, log_bf, err, reference="SMBHB", second=second, path=path)
    _check_png(fig, path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert "SMBHB" in ax.get_xlabel()
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 2
    for container, (value, e) in zip(bars, [(log_bf, err), second], strict=True):
        np.testing.assert_array_equal([bar.get_width() for bar in container], value)
        segments = container.errorbar.lines[2][0].get_segments()
        np.testing.assert_allclose([s[0][0] for s in segments], value - e, rtol=0, atol=1e-15)
        np.testing.assert_allclose([s[1][0] for s in segments], value + e, rtol=0, atol=1e-15)
    # the two estimators sit side by side on each model's row
    ya = [bar.get_y() + bar.get_height() / 2 for bar in bars[0]]
    yb = [bar.get_y() + bar.get_height() / 2 for bar in bars[1]]
    np.testing.assert_allclose(np.add(ya, yb) / 2, [0, 1, 2])


def test_bayes_factor_bad_inputs():
    with pytest.raises(ParameterError, match=r"log_bf_err: expected shape \(3,\)"):
        plots.plot_bayes_factors(["a", "b", "c"], [0, 1, 2], [0.1, 0.1], reference="a")
    with pytest.raises(ParameterError, match="log_bf_err: expected finite non-negative"):
        plots.plot_bayes_factors(["a", "b"], [0, 1], [0.1, -0.1], reference="a")
    with pytest.raises(ParameterError, match="second log_bf: expected finite"):
        plots.plot_bayes_factors(
            ["a", "b"], [0, 1], [0.1, 0.1], reference="a", second=([0, np.nan], [0.1, 0.1])
        )


def test_losses(tmp_path):
    steps = np.arange(400)
    train = 1e4 * np.exp(-steps / 5.0) + 3.0 + 0.1 * np.sin(steps)
    val = 3.5 + 0.0 * steps
    path = tmp_path / "losses.png"
    fig = plots.plot_losses({"train": train, "val": val}, path=path)
    _check_png(fig, path)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), train)
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), steps)
    # y range: the losses after the first 5% of steps, with a 5% margin
    lo, hi = min(train[20:].min(), 3.5), max(train[20:].max(), 3.5)
    assert ax.get_ylim() == pytest.approx((lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)))
    single = plots.plot_losses(train)
    np.testing.assert_array_equal(single.axes[0].lines[0].get_ydata(), train)
    with pytest.raises(ParameterError, match=r"losses 'loss': expected shape \(n_steps,\)"):
        plots.plot_losses(np.zeros((3, 2)))
