"""The comparison's helper process: its answers equal the work done in the calling process
(model checks, figures), and where it cannot answer the caller is told so."""

from __future__ import annotations

import pathlib

import matplotlib.image
import numpy as np
import pytest

from ptaflow import models
from ptaflow.errors import ModelError
from ptaflow.plots.comparison import SPECTRUM_DRAWS, model_figure
from ptaflow.results import PosteriorResult, save_posterior
from ptaflow.sidecar import Sidecar


def _saved_posterior(out, name, key, n=3000):
    """A weighted power-law posterior saved where a comparison keeps it (out/models/NAME.h5)."""
    rng = np.random.default_rng(3)
    samples = np.column_stack([rng.normal(-14.5, 0.3, n), rng.normal(4.0, 0.5, n)])
    result = PosteriorResult(
        ("log10_A", "gamma"),
        samples,
        np.zeros(n),
        np.zeros(n),
        log_weights=rng.normal(0.0, 0.3, n),
        provenance={"comparison_key": key},
    )
    (out / "models").mkdir(parents=True, exist_ok=True)
    save_posterior(result, out / "models" / f"{name}.h5")


NEGATIVE = """
from ptaflow.priors import Uniform
from ptaflow.spectra import powerlaw_h2omega
name = "negative"
description = "a power law with the wrong sign"
parameters = {"log10_A": Uniform(-18, -11), "gamma": Uniform(0, 7)}
def spectrum(f, log10_A, gamma):
    return -powerlaw_h2omega(f, log10_A, gamma)
"""


def test_helper_answers_equal_the_work_done_here(tmp_path):
    """Figures: the same spectrum draws and the same corner plot as `model_figure` called
    here; a posterior file that is missing is reported, not drawn. Checks: a valid model is
    "ok" with its file's size, a model that fails them "invalid" with load_model's message."""
    model = models.load_model("powerlaw")
    here, there = tmp_path / "here", tmp_path / "there"
    for out in (here, there):
        _saved_posterior(out, "powerlaw", "k1")
    args = {"name": "powerlaw", "model": model.path, "key": "k1", "context": "test", "n_freq": 5}
    direct = model_figure(here, **args)
    assert direct.shape == (SPECTRUM_DRAWS, 5) and np.all(np.isfinite(direct))
    bad = tmp_path / "negative.py"
    bad.write_text(NEGATIVE)
    with pytest.raises(ModelError) as info:
        models.load_model(bad)
    with Sidecar(parallel=True) as side:
        drawn = side.submit("figures", out=str(there), **args)
        missing = side.submit("figures", out=str(there), **{**args, "name": "other"})
        good = side.submit("check", model=str(model.path))
        invalid = side.submit("check", model=str(bad))
        answers = [side.reply(i) for i in (drawn, missing, good, invalid)]
        assert not side.note
        np.testing.assert_allclose(np.load(answers[0]["draws"]), direct, rtol=1e-12)
    a, b = (matplotlib.image.imread(d / "corner_powerlaw.png") for d in (here, there))
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-6
    assert answers[1]["status"] == "skipped" and "does not hold" in answers[1]["message"]
    assert answers[2]["status"] == "ok"
    assert answers[2]["stat"][1] == pathlib.Path(model.path).stat().st_size
    assert answers[3]["status"] == "invalid" and answers[3]["message"] == str(info.value)


def test_without_a_helper_every_reply_is_none(tmp_path):
    """No helper (parallel=False), one that died, or a request it fails on: reply is None
    (the caller does the work), and a helper that died says how it ended."""
    with Sidecar(parallel=False) as side:
        assert side.reply(side.submit("check", model="models/powerlaw.py")) is None
    with Sidecar(parallel=True) as side:
        failing = side.submit("figures", out=str(tmp_path), name="x", model="nowhere.py")
        assert side.reply(failing) is None  # a TypeError in the helper: no answer
        side._proc.kill()
        side._proc.wait()
        assert side.reply(side.submit("check", model="models/powerlaw.py")) is None
        assert "the helper process ended with status -9" in side.note
