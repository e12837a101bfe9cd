"""Figures: written PNGs of the expected size, drawn numbers equal to the inputs, mathtext
labels, titles with the data shown, nothing drawn over anything else, shape errors."""

from __future__ import annotations

import itertools

import matplotlib.image
import numpy as np
import pytest
from matplotlib import cbook
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer
from matplotlib.mathtext import MathTextParser
from matplotlib.text import Text

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


def _draw(fig):
    """Render `fig` with Agg (as saving a PNG does) and return the renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _suptitle(fig):
    """The figure title's Text artist."""
    (title,) = [t for t in fig.findobj(Text) if t.get_text() == fig.get_suptitle()]
    return title


def _overlaps(extents):
    """Pairs of (name, window extent) whose boxes overlap."""
    return [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(extents, 2)
        if box_a.overlaps(box_b)
    ]


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
    assert fig.axes[3].get_xlabel() == r"$\gamma$"
    assert fig.axes[2].get_xlabel() == r"$\mathrm{gw\_log10\_A}$"
    for k, ax in enumerate((fig.axes[0], fig.axes[3])):
        (edges_a, h_a), (edges_b, h_b) = _step_heights(ax)
        np.testing.assert_allclose(edges_a, edges_b, rtol=1e-12)  # shared bins
        assert edges_a.size == 26
        # the range holds each set's central 99.8% and not much more (5% padding)
        for x, wx in ((a[:, k], None), (b[:, k], w)):
            inside = (x >= edges_a[0]) & (x <= edges_a[-1])
            assert np.average(inside, weights=wx) >= 0.998
        assert np.ptp(edges_a) < 1.15 * np.ptp(np.r_[a[:, k], b[:, k]])
        ref_a, _ = np.histogram(a[:, k], bins=edges_a, density=True)
        ref_b, _ = np.histogram(b[:, k], bins=edges_b, weights=w, density=True)
        np.testing.assert_allclose(h_a, ref_a, rtol=1e-12)
        np.testing.assert_allclose(h_b, ref_b, rtol=1e-12)
        assert ax.get_ylim()[1] == pytest.approx(1.1 * max(h_a.max(), h_b.max()))


def test_corner_range_ignores_far_outliers_but_shows_truths():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2000, 2))
    x[0] = [80.0, -80.0]  # one sample at 80 sigma would squeeze the histograms into a few bins
    fig = plots.plot_corner([x], param_names=["a", "b"], labels=["s"], truths=[None, 6.0])
    ((edges, _),) = _step_heights(fig.axes[0])
    assert -5.0 < edges[0] < -3.0 and 3.0 < edges[-1] < 5.0
    ((edges, _),) = _step_heights(fig.axes[3])
    assert -5.0 < edges[0] < -3.0 and edges[-1] > 6.0  # widened to the truth


def test_corner_labels_are_mathtext_that_renders():
    rng = np.random.default_rng(7)
    names = ["gw_log10_A", "gw_gamma", "log10_T_star"]
    fig = plots.plot_corner(
        [rng.normal(size=(300, 3))],
        param_names=names,
        labels=["flow"],
        latex_labels={
            "gw_log10_A": r"\log_{10} A",  # as the priors give them, without $
            "log10_T_star": r"$\log_{10}(T_*/\mathrm{GeV})$",
        },
    )
    _draw(fig)
    bottom = fig.axes[-3:]
    labels = [ax.get_xlabel() for ax in bottom]
    assert labels[0] == r"$\log_{10} A$" and labels[2] == r"$\log_{10}(T_*/\mathrm{GeV})$"
    assert [ax.get_ylabel() for ax in (fig.axes[3], fig.axes[6])] == labels[1:]
    parser = MathTextParser("path")
    for label in labels:
        assert label.startswith("$") and label.endswith("$") and cbook.is_math_text(label)
        glyphs = parser.parse(label).glyphs
        assert glyphs and all(chr(g[2]) != "\\" for g in glyphs)  # no literal backslash drawn
    with pytest.raises(ParameterError, match=r"latex_labels\['a'\].*not valid matplotlib mathtext"):
        plots.plot_corner(
            [rng.normal(size=(100, 1))],
            param_names=["a"],
            labels=["s"],
            latex_labels={"a": r"\frac{1}"},
        )


def test_corner_texts_do_not_overlap():
    rng = np.random.default_rng(8)
    scales = np.array([1e-3, 1.0, 30.0, 0.2])
    x = rng.normal(size=(400, 4)) * scales + [-14.2, 3.3, -120.0, 0.5]
    fig = plots.plot_corner(
        [x, x + 0.1 * scales],
        param_names=["a", "b", "c", "d"],
        labels=["flow (weighted)", "NUTS"],
        context="data: NG15; mode: full",
    )
    renderer = _draw(fig)
    texts = [("title", fig.get_suptitle(), _suptitle(fig)), ("legend", "", fig.legends[0])]
    for i, ax in enumerate(fig.axes):
        for label in ax.get_xticklabels() + ax.get_yticklabels():
            if label.get_visible() and label.get_text():
                texts.append((f"axes {i} tick", label.get_text(), label))
        offsets = (ax.xaxis.get_offset_text(), ax.yaxis.get_offset_text())
        for label in (ax.xaxis.label, ax.yaxis.label, *offsets):
            if label.get_visible() and label.get_text():
                texts.append((f"axes {i} label", label.get_text(), label))
    assert sum(kind.endswith("tick") for kind, _, _ in texts) >= 12
    extents = [((kind, text), obj.get_window_extent(renderer)) for kind, text, obj in texts]
    assert _overlaps(extents) == []
    for (kind, _), box in extents:  # and everything lies inside the figure
        assert box.x0 >= 0 and box.y0 >= 0, kind
        assert box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, kind


def test_corner_bins_from_the_effective_sample_size():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(4000, 2))
    w = np.exp(2.5 * rng.normal(size=4000))  # importance weights of a poor proposal
    n_eff = w.sum() ** 2 / np.sum(w**2)
    assert n_eff < 200  # of 4000 samples
    fig = plots.plot_corner([x], param_names=["a", "b"], labels=["flow"], weights=[w])
    ((edges, _),) = _step_heights(fig.axes[0])
    assert edges.size - 1 == plots.ess_bins(n_eff) == round(2 * n_eff ** (1 / 3))
    assert plots.ess_bins(n_eff) < plots.ess_bins(4000) == 32  # not from the raw count
    # several sets share the bins of the one with the fewest effective samples
    fig = plots.plot_corner([x, x[:1000]], param_names=["a", "b"], labels=["s", "t"])
    assert _step_heights(fig.axes[0])[0][0].size - 1 == plots.ess_bins(1000) == 20
    assert plots.ess_bins(1.0) == 5 and plots.ess_bins(1e7) == 50
    with pytest.raises(ParameterError, match="n_eff=0.0"):
        plots.ess_bins(0.0)


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
    assert len(fig.axes) == 2  # one panel per model, with shared axes
    grid = np.asarray(densities.log10_rho_grid)
    log_dens = np.asarray(densities.log_density)
    for ax, (label, d) in zip(fig.axes, draws.items(), strict=True):
        assert ax.get_title() == label
        assert ax.get_ylim() == fig.axes[0].get_ylim()
        lines = {line.get_gid(): line for line in ax.lines}
        assert len(lines) == 5
        for p in (2.5, 16, 50, 84, 97.5):
            line = lines[f"{label}/p{p:g}"]
            np.testing.assert_array_equal(line.get_xdata(), np.log10(f))
            np.testing.assert_array_equal(line.get_ydata(), np.percentile(d, p, axis=0))
        # Violins: the widest point of each is at the density's mode, centred on log10 f_k.
        for k in range(n_freq):
            verts = ax.collections[k].get_paths()[0].vertices
            mode = grid[np.argmax(log_dens[k])]
            widest = verts[np.argmax(verts[:, 0]), 1]
            assert widest == pytest.approx(mode, abs=1e-9)
            assert 0.5 * (verts[:, 0].max() + verts[:, 0].min()) == pytest.approx(np.log10(f[k]))
    ymin, ymax = fig.axes[0].get_ylim()
    assert ymin < np.percentile(draws["SMBHB"], 2.5, axis=0).min()
    assert ymax > np.percentile(draws["SMBHB"], 97.5, axis=0).max()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "free-spectrum density",
        "posterior median",
        "68% credible band",
        "95% credible band",
    ]


def test_spectrum_of_twelve_models_is_a_grid_with_the_legend_outside(densities):
    rng = np.random.default_rng(10)
    n_freq = 5
    draws = {f"model {i}": rng.normal(-7.5 + 0.1 * i, 0.3, (50, n_freq)) for i in range(12)}
    fig = plots.plot_spectrum(draws, densities, n_freq=n_freq, context="data: NG15 (refit)")
    renderer = _draw(fig)
    assert len(fig.axes) == 12
    assert [ax.get_title() for ax in fig.axes] == list(draws)
    for ax, label in zip(fig.axes, draws, strict=True):
        gids = {line.get_gid() for line in ax.lines}
        assert gids == {f"{label}/p{p:g}" for p in plots.SPECTRUM_PERCENTILES}
    legend = fig.legends[0].get_window_extent(renderer)
    title = _suptitle(fig).get_window_extent(renderer)
    for i, ax in enumerate(fig.axes):
        box = ax.get_tightbbox(renderer)  # the panel with its tick labels and title
        assert not legend.overlaps(box) and not title.overlaps(box), i
    # 4 columns: the x axis is labelled under the lowest panel of each column only
    assert [bool(ax.get_xlabel()) for ax in fig.axes] == [False] * 8 + [True] * 4
    odd = plots.plot_spectrum(dict(list(draws.items())[:10]), densities, n_freq=n_freq)
    assert len(odd.axes) == 10
    assert [bool(ax.get_xlabel()) for ax in odd.axes] == [False] * 6 + [True] * 4


def test_spectrum_bad_inputs(densities):
    draws = np.zeros((10, 14))
    with pytest.raises(ParameterError, match=r"draws 'posterior': expected shape .*n_freq=12"):
        plots.plot_spectrum(draws, densities, n_freq=12)
    with pytest.raises(ParameterError, match="n_freq=31: expected 1..30"):
        plots.plot_spectrum(np.zeros((10, 31)), densities, n_freq=31)
    with pytest.raises(ParameterError, match="empty mapping"):
        plots.plot_spectrum({}, densities)


# --- Bayes factors and losses ------------------------------------------------------------------


def _bars(ax):
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _error_segments(container):
    """(lower, upper) ends of each error bar of a bar container."""
    segments = container.errorbar.lines[2][0].get_segments()
    return np.array([s[0][0] for s in segments]), np.array([s[1][0] for s in segments])


def test_bayes_factor_bars_and_error_bars(tmp_path):
    names = ["SMBHB", "PT-BUBBLE", "SIGW-GAUSS"]
    log_bf = np.array([0.0, 2.3, -0.7])
    err = np.array([0.02, 0.15, 0.08])
    second = (np.array([0.0, 2.1, -0.6]), np.array([0.05, 0.3, 0.1]))
    path = tmp_path / "bf.png"
    fig = plots.plot_bayes_factors(
        names, log_bf, err, reference="SMBHB", second=second, sort=False, path=path
    )
    _check_png(fig, path)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert "SMBHB" in ax.get_xlabel()
    bars = _bars(ax)
    assert len(bars) == 2
    for container, (value, e) in zip(bars, [(log_bf, err), second], strict=True):
        np.testing.assert_array_equal([bar.get_width() for bar in container], value)
        lower, upper = _error_segments(container)
        np.testing.assert_allclose(lower, value - e, rtol=0, atol=1e-15)
        np.testing.assert_allclose(upper, value + e, rtol=0, atol=1e-15)
    # the two estimators sit side by side on each model's row
    ya = [bar.get_y() + bar.get_height() / 2 for bar in bars[0]]
    yb = [bar.get_y() + bar.get_height() / 2 for bar in bars[1]]
    np.testing.assert_allclose(np.add(ya, yb) / 2, [0, 1, 2])
    assert ax.get_ylim() == (2.5, -0.5)  # first row at the top
    # by default the models are sorted by ln B, largest at the top
    fig = plots.plot_bayes_factors(names, log_bf, err, reference="SMBHB")
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["PT-BUBBLE", "SMBHB", "SIGW-GAUSS"]
    np.testing.assert_array_equal([b.get_width() for b in _bars(fig.axes[0])[0]], [2.3, 0, -0.7])


def test_bayes_factors_mark_flagged_and_failed_models_with_the_legend_outside():
    names = ["SMBHB", "PT-BUBBLE", "SIGW-GAUSS", "DW-SM", "PT-SOUND"]
    log_bf = np.array([0.0, 2.3, np.nan, -0.7, 1.0])
    err = np.array([0.0, 0.15, np.nan, 0.08, 0.2])
    # PT-SOUND: flagged because importance sampling gave no finite estimate
    second = (np.array([0.0, 2.0, np.nan, -0.6, np.nan]), np.array([0.0, 0.3, np.nan, 0.1, 0.1]))
    status = ["ok", "flagged", "failed", "ok", "flagged"]
    fig = plots.plot_bayes_factors(
        names, log_bf, err, reference="SMBHB", second=second, status=status
    )
    renderer = _draw(fig)
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == ["PT-BUBBLE", "PT-SOUND", "SMBHB", "DW-SM", "SIGW-GAUSS"]  # failed last
    estimators = ("learned harmonic mean", "importance sampling")
    expected_rows = (rows[:4], ["PT-BUBBLE", "SMBHB", "DW-SM"])  # bars only where finite
    for container, (value, e), est, drawn_rows in zip(
        _bars(ax), [(log_bf, err), second], estimators, expected_rows, strict=True
    ):
        drawn = [names.index(r) for r in drawn_rows]
        assert [bar.get_gid() for bar in container] == [f"{names[j]}/{est}" for j in drawn]
        centres = [bar.get_y() + bar.get_height() / 2 for bar in container]
        np.testing.assert_allclose(np.round(centres), [rows.index(r) for r in drawn_rows])
        np.testing.assert_array_equal([bar.get_width() for bar in container], value[drawn])
        lower, upper = _error_segments(container)
        np.testing.assert_allclose(lower, value[drawn] - e[drawn], rtol=0, atol=1e-15)
        np.testing.assert_allclose(upper, value[drawn] + e[drawn], rtol=0, atol=1e-15)
        hatches = [bar.get_hatch() for bar in container]
        flagged = [status[j] == "flagged" for j in drawn]
        assert hatches == [plots.FLAGGED_HATCH if f else None for f in flagged]
    (cross,) = [line for line in ax.lines if line.get_gid() == "SIGW-GAUSS/failed"]
    assert cross.get_marker() == "x" and cross.get_ydata()[0] == rows.index("SIGW-GAUSS")
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:2] == list(estimators)
    assert texts[2].startswith("flagged") and texts[3].startswith("failed")
    assert legend.legend_handles[2].get_hatch() == plots.FLAGGED_HATCH
    assert not legend.get_window_extent(renderer).overlaps(ax.get_tightbbox(renderer))


def test_bayes_factor_bad_inputs():
    with pytest.raises(
        ParameterError, match="status of model 'b': 'flaged'.*Did you mean 'flagged'"
    ):
        plots.plot_bayes_factors(
            ["a", "b"], [0, 1], [0.1, 0.1], reference="a", status=["ok", "flaged"]
        )
    with pytest.raises(ParameterError, match="status: expected 2 entries"):
        plots.plot_bayes_factors(["a", "b"], [0, 1], [0.1, 0.1], reference="a", status=["ok"])
    with pytest.raises(
        ParameterError, match='log_bf: expected finite values for the models of status "ok"'
    ):
        plots.plot_bayes_factors(
            ["a", "b"], [0, np.nan], [0.1, 0.1], reference="a", status=["flagged", "ok"]
        )
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


# --- titles ------------------------------------------------------------------------------------


def test_every_figure_has_a_title_with_the_context(densities):
    context = plots.figure_context(
        "NG15 reduced", mode="full", correlation="hd", pulsars=["J1909-3744", "J2317+1439"]
    )
    assert context == (
        "data: NG15 reduced; mode: full; correlation: HD; 2 pulsars: J1909-3744, J2317+1439"
    )
    many = plots.figure_context("NG15", pulsars=[f"J{i:04d}" for i in range(10)], max_names=3)
    assert many == "data: NG15; 10 pulsars: J0000, J0001, J0002 and 7 more"
    x = np.random.default_rng(11).normal(size=(100, 2))
    figs = {
        "Posterior: flow": plots.plot_corner(
            [x], param_names=["a", "b"], labels=["flow"], context=context
        ),
        "Posterior spectra": plots.plot_spectrum(x[:, :1], densities, n_freq=1, context=context),
        "Bayes factors against a": plots.plot_bayes_factors(
            ["a", "b"], [0.0, 1.0], [0.0, 0.1], reference="a", context=context
        ),
        "Flow training": plots.plot_losses(x[:, 0], context=context),
    }
    for what, fig in figs.items():
        title = fig.get_suptitle()
        assert title.startswith(what)
        assert context in title.replace("\n", " ")
        _draw(fig)  # renders
    # without a context: a neutral one-line title; dollar signs in the context stay literal
    assert plots.plot_losses(x[:, 0]).get_suptitle() == "Flow training"
    assert plots.plot_losses(x[:, 0], context="cost: $5").get_suptitle().endswith(r"cost: \$5")
