"""SGWB source models: NANOGrav's official model files as ground truth, registry-driven
property tests over every built-in, and the loader's error messages."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptaflow import models
from ptaflow.errors import ModelError, ParameterError
from ptaflow.spectra import h2omega_to_psd, powerlaw_psd

BUILTINS = models.list_models()

#: reference_spectra.json name -> built-in name (the file calls DW-DR "dw_ds").
REFERENCE_NAMES = {
    "igw": "igw",
    "sigw_gauss": "sigw_gauss",
    "sigw_box": "sigw_box",
    "sigw_delta": "sigw_delta",
    "pt_bubble": "pt_bubble",
    "pt_sound": "pt_sound",
    "dw_sm": "dw_sm",
    "dw_ds": "dw_dr",
    "stable_c": "stable_c",
    "stable_k": "stable_k",
    "stable_m": "stable_m",
    "stable_n": "stable_n",
    "meta_l": "meta_l",
    "meta_ls": "meta_ls",
}

#: The published models of arXiv:2306.16219 expected as built-ins, and their variants.
PUBLISHED = {"powerlaw", "smbhb", *REFERENCE_NAMES.values()}

# The spec asks for 1e-6; the implementation reaches ~1e-12 (float64 round-off through the
# table interpolation in log10 and 10**x), so a regression shows long before 1e-6.
REFERENCE_RTOL = 1e-6


@pytest.fixture(scope="module")
def reference(shared_data):
    path = shared_data / "ng15_model_reference" / "reference_spectra.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module", params=BUILTINS)
def model(request):
    return models.load_model(request.param)


def test_registry_has_the_published_models():
    assert PUBLISHED <= set(BUILTINS)
    assert "super" not in BUILTINS and "super" in models.UNAVAILABLE


# --- reference spectra (official NG15 model files, PTArcade 1.1.5) ------------------------------


def _max_rel_dev(model, block, frequencies, param_names):
    """Max relative deviation over all points; zeros must come out exactly zero."""
    worst = 0.0
    for point, ref in zip(block["points"], block["h2omega"], strict=True):
        ref = np.array(ref, dtype=float)
        ours = np.asarray(model.spectrum(frequencies, **dict(zip(param_names, point, strict=True))))
        zero = ref == 0.0
        assert np.all(ours[zero] == 0.0), f"{model.name}: expected exact zeros at {point}"
        assert np.all(ours[~zero] > 0.0)
        worst = max(worst, float(np.max(np.abs(ours[~zero] / ref[~zero] - 1.0), initial=0.0)))
    return worst


@pytest.mark.parametrize("ref_name", list(REFERENCE_NAMES))
def test_spectrum_matches_official_model_file(reference, ref_name):
    block = reference["models"][ref_name]
    model = models.load_model(REFERENCE_NAMES[ref_name])
    f = np.array(block["frequencies_hz"])
    names = block["parameter_names"]
    worst = _max_rel_dev(model, block, f, names)
    if "supplementary" in block:
        worst = max(worst, _max_rel_dev(model, block["supplementary"], f, names))
    assert worst < REFERENCE_RTOL, f"{ref_name}: max relative deviation {worst:.3g}"
    n_zero = sum(v["value"] == "0.0" for v in block["nonfinite_or_nonpositive"])
    assert n_zero == (151 if ref_name == "sigw_delta" else 0)


@pytest.mark.parametrize("ref_name", list(REFERENCE_NAMES))
def test_parameters_and_priors_match_official_model_file(reference, ref_name):
    block = reference["models"][ref_name]
    model = models.load_model(REFERENCE_NAMES[ref_name])
    assert model.param_names == tuple(block["parameter_names"])
    for (kind, lo, hi), bounds in zip(block["priors"], model.priors.bounds(), strict=True):
        assert kind == "Uniform" and bounds == (lo, hi)
    assert model.smbhb is block["smbhb_flag"] is False


def test_smbhb_powerlaw_check(reference):
    smbhb, powerlaw = models.load_model("smbhb"), models.load_model("powerlaw")
    for case in reference["smbhb_powerlaw_check"]["cases"]:
        f = np.array(case["frequencies_hz"])
        theta = jnp.array([case["log10_A"], case["gamma"]])
        for m in (smbhb, powerlaw):
            assert np.allclose(m.h2omega(f, theta), case["h2omega"], rtol=1e-12, atol=0)
            assert np.allclose(m.psd(f, theta), case["S_s3"], rtol=1e-12, atol=0)


def test_smbhb_prior_is_the_holodeck_gaussian():
    prior = models.load_model("smbhb").priors.priors[0]
    assert prior.mean == (-15.61492963, 4.70709637)
    assert prior.cov == ((0.27871359, -0.00263617), (-0.00263617, 0.12415383))


# --- registry-driven properties of every built-in ---------------------------------------------

NG_FREQS = jnp.arange(1, 31) / 505861299.1  # NG15 Fourier frequencies [Hz]


@pytest.fixture(scope="module")
def draws(model):
    return model.priors.sample(jax.random.key(11), 16)


def test_builtin_file_contract(model):
    assert model.name == models.MODELS_DIR.joinpath(f"{model.name}.py").stem
    assert model.path.endswith(f"models/{model.name}.py")
    assert model.description and model.correlation in models.CORRELATIONS
    assert len(model.param_names) == model.n_dim == model.priors.n_dim


def test_finite_and_non_negative_on_the_pta_band(model, draws):
    psd = np.asarray(jax.vmap(model.psd, (None, 0))(NG_FREQS, draws))
    h2 = np.asarray(jax.vmap(model.h2omega, (None, 0))(NG_FREQS, draws))
    assert psd.shape == h2.shape == (16, 30)
    assert np.all(np.isfinite(psd)) and np.all(psd >= 0) and np.all(h2 >= 0)
    assert np.allclose(psd, h2omega_to_psd(NG_FREQS, h2), rtol=1e-14, atol=0)


def test_jit_equals_no_jit_and_vmap_equals_loop(model, draws):
    looped = np.stack([np.asarray(model.psd(NG_FREQS, th)) for th in draws[:4]])
    jitted = np.asarray(jax.jit(jax.vmap(model.psd, (None, 0)))(NG_FREQS, draws[:4]))
    assert np.allclose(jitted, looped, rtol=1e-12, atol=0)


def test_gradients_are_finite(model, draws):
    def log_psd_sum(theta):  # the refit likelihood works with log S (-inf where S = 0)
        return jnp.sum(jnp.log(model.psd(NG_FREQS, theta)))

    grads = np.asarray(jax.jit(jax.vmap(jax.grad(log_psd_sum)))(draws))
    assert grads.shape == draws.shape and np.all(np.isfinite(grads))


def test_prior_draws_are_inside_the_support(model, draws):
    assert np.all(np.isfinite(model.priors.log_prob(draws)))


@pytest.mark.parametrize("name", ["powerlaw", "smbhb"])
def test_powerlaw_amplitude_and_slope_scaling(name):
    model = models.load_model(name)
    theta = jnp.array([-15.0, 13.0 / 3.0])
    base = model.psd(NG_FREQS, theta)
    assert np.allclose(model.psd(NG_FREQS, theta.at[0].add(1.0)), 100.0 * base, rtol=1e-12)
    slope = jnp.diff(jnp.log(base)) / jnp.diff(jnp.log(NG_FREQS))
    assert np.allclose(slope, -13.0 / 3.0, rtol=1e-10)
    assert np.allclose(base, powerlaw_psd(NG_FREQS, -15.0, 13.0 / 3.0), rtol=1e-12)


def test_sigw_delta_is_finite_at_its_log_singularity():
    model = models.load_model("sigw_delta")
    log10_f_peak = -8.0
    f = jnp.array([10.0**log10_f_peak * 2.0 / np.sqrt(3.0), 2.5e-8])
    theta = jnp.array([log10_f_peak, -1.0])
    value = model.h2omega(f, theta)
    assert np.all(np.isfinite(value)) and value[1] == 0.0  # f > 2 f_peak: exactly zero
    grad = jax.jacobian(lambda th: model.psd(f, th))(theta)
    assert np.all(np.isfinite(grad))


# --- two-parameter variants and the seed preset ---------------------------------------------------


def test_seed10_preset():
    names = models.PRESETS["seed10"]
    assert len(names) == len(set(names)) == 10
    loaded = models.load_preset("seed10")
    assert tuple(m.name for m in loaded) == names
    assert all(m.n_dim == 2 and not m.smbhb for m in loaded)


@pytest.mark.parametrize("variant", [n for n in BUILTINS if n.endswith("_2p")])
def test_two_parameter_variant_is_the_full_model_at_fixed_values(variant):
    small, full = models.load_model(variant), models.load_model(variant.removesuffix("_2p"))
    assert small.n_dim == 2 and set(small.param_names) <= set(full.param_names)
    bounds = dict(zip(full.param_names, full.priors.bounds(), strict=True))
    for name, value in small.fixed.items():  # fixed values lie inside the published prior
        lo, hi = bounds[name]
        assert lo <= value <= hi, f"{variant}: {name} = {value} outside [{lo}, {hi}]"
    for theta in small.priors.sample(jax.random.key(5), 4):
        params = dict(zip(small.param_names, theta, strict=True))
        full_theta = jnp.array([params.get(n, small.fixed.get(n)) for n in full.param_names])
        assert np.array_equal(small.psd(NG_FREQS, theta), full.psd(NG_FREQS, full_theta))


# --- loader: names, paths, errors ---------------------------------------------------------------


def test_unavailable_and_unknown_names():
    with pytest.raises(ModelError, match=r"'super' is unavailable.*super\.h5"):
        models.load_model("super")
    with pytest.raises(ModelError, match="unknown model 'pt_bubbel'. Did you mean 'pt_bubble'"):
        models.load_model("pt_bubbel")
    with pytest.raises(ModelError, match="unknown preset 'seed1'. Did you mean 'seed10'"):
        models.load_preset("seed1")
    with pytest.raises(ModelError, match="not found"):
        models.load_model("no/such/file.py")


GOOD = """
import jax.numpy as jnp
from ptaflow.priors import Uniform
from ptaflow.spectra import powerlaw_h2omega
name = "mine"
description = "a test model"
parameters = {"log10_A": Uniform(-18, -11), "gamma": Uniform(0, 7)}
def spectrum(f, log10_A, gamma):
    return powerlaw_h2omega(f, log10_A, gamma)
"""


def _write(tmp_path, text, name="mine.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_user_model_file_by_path(tmp_path):
    path = _write(tmp_path, GOOD + "\ncorrelation = 'uncorrelated'\n")
    model = models.load_model(path)
    assert model.name == "mine" and model.path == str(path.resolve())
    assert model.correlation == "uncorrelated" and not model.smbhb
    assert models.load_model(str(path)) is model  # cached per file version


def test_smbhb_flag_adds_the_holodeck_power_law(tmp_path):
    text = GOOD.replace('"log10_A"', '"log10_B"').replace("log10_A,", "log10_B,")
    path = _write(tmp_path, text.replace("(f, log10_A", "(f, log10_B") + "\nsmbhb = True\n")
    model = models.load_model(path)
    assert model.param_names == ("log10_B", "gamma", "log10_A_bhb", "gamma_bhb")
    assert model.priors.priors[-1] == models.SMBHB_PRIOR
    theta = jnp.array([-15.0, 3.0, -15.5, 4.5])
    expected = powerlaw_psd(NG_FREQS, -15.0, 3.0) + powerlaw_psd(NG_FREQS, -15.5, 4.5)
    assert np.allclose(model.psd(NG_FREQS, theta), expected, rtol=1e-12)
    assert np.allclose(
        model.spectrum(NG_FREQS, log10_B=-15.0, gamma=3.0),
        models.load_model("powerlaw").h2omega(NG_FREQS, theta[:2]),
        rtol=1e-14,
    )


def test_spectrum_and_psd_argument_errors():
    model = models.load_model("pt_bubble_2p")
    with pytest.raises(ParameterError, match="no parameter 'log10_alph'.*Did you mean"):
        model.spectrum(NG_FREQS, log10_alph=0.0, log10_T_star=0.0)
    with pytest.raises(ParameterError, match=r"theta must have shape \(2,\).*jax.vmap"):
        model.psd(NG_FREQS, jnp.zeros((3, 2)))


BROKEN = {
    "no_spectrum": (GOOD.replace("def spectrum", "def spectrun"), "does not define `spectrum`"),
    "misspelt_parameters": (
        GOOD.replace("parameters =", "paramters ="),
        "does not define `parameters`. Did you mean 'paramters'",
    ),
    "argument_without_prior": (
        GOOD.replace(', "gamma": Uniform(0, 7)', ', "gama": Uniform(0, 7)'),
        "argument 'gamma' has no prior in `parameters`. Did you mean 'gama'",
    ),
    "prior_without_argument": (
        GOOD.replace('"gamma": Uniform(0, 7)', '"gamma": Uniform(0, 7), "x": Fixed(1.0)').replace(
            "import Uniform", "import Fixed, Uniform"
        ),
        r"parameter 'x' is declared in `parameters` but spectrum\(\) does not take it",
    ),
    "negative": (
        GOOD.replace("return powerlaw_h2omega", "return -powerlaw_h2omega"),
        "negative h.2 Omega_GW",
    ),
    "not_finite": (
        GOOD.replace("return powerlaw_h2omega(f, log10_A, gamma)", "return f / 0.0"),
        "must be finite on the PTA band",
    ),
    "python_if": (
        GOOD.replace(
            "    return powerlaw_h2omega",
            "    if gamma > 3:\n        gamma = 3.0\n    return powerlaw_h2omega",
        ),
        r"fails under jax\.vmap.*jnp\.where",
    ),
    "infinite_gradient": (
        GOOD.replace(
            "return powerlaw_h2omega(f, log10_A, gamma)",
            "return powerlaw_h2omega(f, log10_A, 3.0) + jnp.sqrt(gamma - gamma)",
        ),
        "gradient with respect to parameter 'gamma' is not finite",
    ),
    "bad_correlation": (GOOD + "\ncorrelation = 'HD'\n", "Did you mean 'hd'"),
    "bad_smbhb_flag": (GOOD + "\nsmbhb = 'yes'\n", "`smbhb` must be True or False"),
    "reserved_name": (
        GOOD.replace('"gamma": Uniform', '"gamma_bhb": Uniform').replace(
            "A, gamma)", "A, gamma_bhb)"
        )
        + "\nsmbhb = True\n",
        "'gamma_bhb' is reserved",
    ),
    "bad_prior": (
        GOOD.replace("Uniform(0, 7)", "Uniform(7, 0)"),
        "PriorError: Uniform prior needs lower < upper",
    ),
    "syntax_error": (GOOD + "\ndef (:\n", "executing the model file failed: SyntaxError"),
    "first_arg_not_f": (
        GOOD.replace("(f, log10_A, gamma):", "(freq, log10_A, gamma):"),
        "frequency f .Hz. as its first argument",
    ),
    # NaN on 1 % of the prior (gamma > 6.93): 8 draws miss it nine times in ten
    "rare_nan": (
        GOOD.replace(
            "return powerlaw_h2omega(f, log10_A, gamma)",
            "return jnp.where(gamma > 6.93, jnp.nan, powerlaw_h2omega(f, log10_A, gamma))",
        ),
        r"not finite at \d+ of 16384 prior draws \(\d\.\d\d %\), e\.g\. nan at f = .* Hz, "
        r"log10_A=.*, gamma=6\.9[3-9]",
    ),
    "rare_negative": (
        GOOD.replace(
            "return powerlaw_h2omega(f, log10_A, gamma)",
            "return jnp.where(log10_A < -17.95, -1.0, 1.0) * powerlaw_h2omega(f, log10_A, gamma)",
        ),
        r"negative at \d+ of 16384 prior draws \(\d\.\d\d %\), e\.g\. .* at f = .*"
        r"log10_A=-17\.9[5-9]",
    ),
    "sys_exit": (
        GOOD + "\nimport sys\nsys.exit(3)\n",
        r"executing the model file failed: it called sys\.exit\(3\)",
    ),
    "base_exception": (
        GOOD + "\nclass Stop(BaseException):\n    pass\nraise Stop('at import')\n",
        "executing the model file failed: Stop: at import",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_invalid_model_files_raise_with_file_and_fix(tmp_path, case):
    text, match = BROKEN[case]
    path = _write(tmp_path, text, name=f"{case}.py")
    with pytest.raises(ModelError, match=match) as info:
        models.load_model(path)
    assert str(path.name) in str(info.value)


def test_nothing_happens_at_import_or_load():
    """Loading a model reads no table and switches on no JAX option; tables load on first use."""
    code = textwrap.dedent(
        """
        import jax
        from ptaflow import models, spectra
        m = models.load_model("stable_c", validate=False)
        assert spectra.load_spectrum_table.cache_info().currsize == 0
        assert spectra.g_star_table.cache_info().currsize == 0
        assert not jax.config.jax_enable_x64
        m.spectrum(1e-8, log10_Gmu=-10.0)
        assert spectra.load_spectrum_table.cache_info().currsize == 1
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_example_is_a_valid_model(tmp_path):
    text = (models.MODELS_DIR / "README.md").read_text()
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(example.strip().splitlines()) <= 14
    model = models.load_model(_write(tmp_path, example, name="turnover.py"))
    assert model.param_names == ("log10_Omega", "log10_fb")
    h2 = model.spectrum(jnp.array([1e-12, 1e-4]), log10_Omega=-8.0, log10_fb=-8.0)
    assert np.allclose(h2, [1e-20, 1e-8], rtol=1e-9)
