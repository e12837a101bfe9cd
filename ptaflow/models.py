"""SGWB source models: the model-file contract, its validating loader and the built-ins.

A model file is a Python file (the built-ins live in the repository's top-level `models/`;
any other path works too) that declares

    name = "my_model"                       # identifier
    description = "one line for listings"
    parameters = {"log10_A": Uniform(-18, -11, latex=r"\\log_{10} A"), ...}
    def spectrum(f, log10_A, ...): ...      # h^2 Omega_GW(f), f in Hz, pure JAX
    smbhb = False                           # optional: add the SMBHB power law on top
    correlation = "hd"                      # optional: "hd" (default) or "uncorrelated"

(`models/README.md` documents it with a worked example.) `load_model` executes the file,
checks the declarations against the spectrum's signature, and evaluates the spectrum on the
PTA band at prior draws: at `DENSE_DRAWS` of them vectorised (values finite and
non-negative), at a few eagerly and under jit, vmap and grad. Any failure, an exception or
`sys.exit()` in the file included, raises `ModelError` naming the file and the parameter.
The result is a `SourceModel`, whose `psd(f, theta)` is what the likelihoods call.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import pathlib
import sys
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._paths import MODELS_DIR  # the built-in model files (repository's models/ or the wheel's)
from .errors import ModelError, ParameterError, PriorError, close_matches
from .priors import JointPrior, MultivariateNormal, make_joint_prior
from .spectra import h2omega_to_psd, powerlaw_h2omega

__all__ = [
    "MODELS_DIR",
    "SMBHB_PARAMS",
    "SMBHB_PRIOR",
    "CORRELATIONS",
    "DENSE_DRAWS",
    "UNAVAILABLE",
    "PRESETS",
    "SourceModel",
    "load_model",
    "list_models",
    "load_preset",
    "validate_model",
]


#: Names of the SMBHB power-law parameters that `smbhb = True` appends to a model.
SMBHB_PARAMS = ("log10_A_bhb", "gamma_bhb")

#: The NG15 SMBHB prior: a 2-D Gaussian on (log10_A, gamma) fitted to the holodeck library
#: astro-02-gw (arXiv:2306.16219, Sec. 2; PTArcade `signal_builder.bhb_priors["NG15"]`).
SMBHB_PRIOR = MultivariateNormal(
    (-15.61492963, 4.70709637),
    ((0.27871359, -0.00263617), (-0.00263617, 0.12415383)),
    units=("1", "1"),
    latex=(r"\log_{10} A_\mathrm{BHB}", r"\gamma_\mathrm{BHB}"),
)

#: Spatial correlations a model may declare.
CORRELATIONS = ("hd", "uncorrelated")

#: Published models that cannot be built here, with the reason.
UNAVAILABLE = {
    "super": (
        "SUPER (cosmic superstrings, arXiv:2306.16219 Sec. 5) needs the table super.h5 of the "
        "NG15 new-physics model files (Zenodo 8084351), which is not in data/ng15_model_tables/ "
        "(it is missing from the reference snapshot). Add the table and a model file "
        "models/super.py to use it."
    ),
}

#: Named sets of built-in models. "seed10": the ten two-parameter SGWB models of the
#: comparison in Lai & Li (arXiv:2504.04211), chosen as documented in models/README.md.
PRESETS: dict[str, tuple[str, ...]] = {
    "seed10": (
        "powerlaw",
        "smbhb",
        "meta_l",
        "meta_ls",
        "dw_sm_2p",
        "sigw_gauss_2p",
        "sigw_delta",
        "pt_bubble_2p",
        "pt_sound_2p",
        "igw_2p",
    ),
}

#: Frequencies [Hz] at which `validate_model` checks a spectrum: the PTA band.
_CHECK_BAND_HZ = (1e-9, 1e-7)
#: Prior draws at which `validate_model` checks that h^2 Omega_GW is finite and non-negative:
#: a problem on 0.1 % of the prior is missed with probability 0.999^16384 = 8e-8.
DENSE_DRAWS = 16384
#: Of the `n_draws` draws, those at which spectrum() is also called directly (one by one,
#: op by op: slow for a spectrum built from tables) as the reference for jax.vmap and jax.jit.
EAGER_DRAWS = 2
#: Draws per vectorised evaluation of the dense check (bounds the memory of large spectra).
_DENSE_CHUNK = 2048
_REQUIRED = ("name", "description", "parameters", "spectrum")
_CONTRACT = "see models/README.md for the model-file contract"


class SourceModel(eqx.Module):
    """An SGWB source model loaded from a model file.

    Attributes:
        name: model name (an identifier).
        description: one-line description.
        path: the model file.
        param_names: free parameters, in the order of the flat vector theta.
        priors: joint prior over theta (fixed parameters in `priors.fixed`).
        smbhb: whether the SMBHB power law (`SMBHB_PARAMS`, prior `SMBHB_PRIOR`) is added.
        correlation: "hd" or "uncorrelated".
        spectrum_fn: the file's `spectrum(f, **params)` -> h^2 Omega_GW.
    """

    name: str = eqx.field(static=True)
    description: str = eqx.field(static=True)
    path: str = eqx.field(static=True)
    param_names: tuple[str, ...] = eqx.field(static=True)
    priors: JointPrior
    smbhb: bool = eqx.field(static=True)
    correlation: str = eqx.field(static=True)
    spectrum_fn: Callable = eqx.field(static=True)

    @property
    def n_dim(self) -> int:
        """Number of free parameters (the length of theta)."""
        return len(self.param_names)

    @property
    def fixed(self) -> dict[str, float]:
        """Parameters held at fixed values, passed to the spectrum as constants."""
        return self.priors.fixed

    def spectrum(self, f, **params):
        """The model's own h^2 Omega_GW(f) (without the SMBHB term), f in Hz.

        Fixed parameters are filled in; pass the free ones by name.
        """
        allowed = set(self.param_names) | set(self.fixed)
        unknown = [p for p in params if p not in allowed or p in SMBHB_PARAMS]
        if unknown:
            raise ParameterError(
                f"model {self.name!r} has no parameter {unknown[0]!r}; its spectrum takes "
                f"{tuple(n for n in self.param_names if n not in SMBHB_PARAMS)}."
                + close_matches(unknown[0], allowed)
            )
        out = self.spectrum_fn(f, **{**self.fixed, **params})
        return jnp.broadcast_to(out, jnp.broadcast_shapes(jnp.shape(out), jnp.shape(f)))

    def _params(self, theta) -> dict:
        theta = jnp.asarray(theta)
        if theta.shape != (self.n_dim,):
            raise ParameterError(
                f"model {self.name!r}: theta must have shape ({self.n_dim},) for "
                f"{self.param_names}; got {theta.shape}. Use jax.vmap over samples."
            )
        return {name: theta[i] for i, name in enumerate(self.param_names)}

    def h2omega(self, f, theta):
        """Total h^2 Omega_GW(f) at the flat parameter vector theta (n_dim,), SMBHB included."""
        params = self._params(theta)
        bhb = tuple(params.pop(n) for n in SMBHB_PARAMS) if self.smbhb else None
        out = self.spectrum(f, **params)
        if bhb is not None:
            out = out + powerlaw_h2omega(f, *bhb)
        return out

    def psd(self, f, theta):
        """Timing-residual PSD S(f) [s^3] at frequencies f [Hz] and theta (n_dim,).

        Pure JAX: safe under jit, vmap (over theta) and grad.
        """
        return h2omega_to_psd(f, self.h2omega(f, theta))

    def describe(self) -> str:
        """Multi-line summary: name, description, file, flags and the parameter table."""
        units = self.priors.units()
        labels = self.priors.latex_labels()
        lines = [
            f"{self.name}: {self.description}",
            f"  file: {self.path}",
            f"  correlation: {self.correlation}; SMBHB power law added: {self.smbhb}",
            f"  parameters ({self.n_dim} free):",
        ]
        for names, prior in zip(self.priors.block_names, self.priors.priors, strict=True):
            unit = ", ".join(units[n] for n in names)
            unit = "" if set(unit.split(", ")) == {"1"} else f" [{unit}]"
            label = ", ".join(f"${labels[n]}$" for n in names)
            lines.append(f"    {', '.join(names):<14s} {prior.describe()}{unit}  {label}")
        return "\n".join(lines)


# --- loading ----------------------------------------------------------------------------------

_CACHE: dict[tuple, SourceModel] = {}


def list_models() -> tuple[str, ...]:
    """Names of the available built-in models (the files in `models/`), sorted."""
    if not MODELS_DIR.is_dir():
        return ()
    return tuple(sorted(p.stem for p in MODELS_DIR.glob("*.py") if not p.stem.startswith("_")))


def _resolve(name_or_path: str | pathlib.Path) -> pathlib.Path:
    text = str(name_or_path)
    is_path = isinstance(name_or_path, pathlib.Path) or text.endswith(".py") or "/" in text
    if is_path:
        path = pathlib.Path(text).expanduser()
        if not path.is_file():
            raise ModelError(
                f"model file {path} not found; give the path of a .py model file or the "
                f"name of a built-in model ({', '.join(list_models())})"
            )
        return path.resolve()
    if text in UNAVAILABLE:
        raise ModelError(f"model {text!r} is unavailable: {UNAVAILABLE[text]}")
    path = MODELS_DIR / f"{text}.py"
    if not path.is_file():
        raise ModelError(
            f"unknown model {text!r}.{close_matches(text, list_models())} Built-in models: "
            f"{', '.join(list_models())}; or give the path of a .py model file."
        )
    return path.resolve()


def _exec_model_file(path: pathlib.Path):
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"ptaflow_model_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"{path}: cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        sys.modules.pop(module_name, None)
        raise
    except BaseException as exc:  # SystemExit too: a model file must not end the program
        sys.modules.pop(module_name, None)
        raise ModelError(f"{path}: executing the model file failed: {_what(exc)}") from exc
    return module


def _what(exc: BaseException) -> str:
    """An exception raised by a model file's own code, in words."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}); a model file must not exit"
    return f"{type(exc).__name__}: {exc}"


def _build(module, path: pathlib.Path) -> SourceModel:
    public = [a for a in vars(module) if not a.startswith("_")]
    for attr in _REQUIRED:
        if not hasattr(module, attr):
            raise ModelError(
                f"{path}: the model file does not define `{attr}`."
                f"{close_matches(attr, public)} A model file needs {', '.join(_REQUIRED)}; "
                f"{_CONTRACT}."
            )
    name, description = module.name, module.description
    if not (isinstance(name, str) and name.isidentifier()):
        raise ModelError(f"{path}: `name` must be an identifier such as 'my_model', got {name!r}")
    if not isinstance(description, str) or not description.strip():
        raise ModelError(f"{path}: `description` must be a non-empty string")
    smbhb = getattr(module, "smbhb", False)
    if not isinstance(smbhb, bool):
        raise ModelError(f"{path}: `smbhb` must be True or False, got {smbhb!r}")
    correlation = getattr(module, "correlation", "hd")
    if correlation not in CORRELATIONS:
        raise ModelError(
            f"{path}: `correlation` must be one of {CORRELATIONS}, got {correlation!r}."
            + close_matches(str(correlation).lower(), CORRELATIONS)
        )
    spectrum = module.spectrum
    if not callable(spectrum):
        raise ModelError(f"{path}: `spectrum` must be a function spectrum(f, **params)")
    parameters = dict(module.parameters) if isinstance(module.parameters, dict) else None
    if parameters is None:
        raise ModelError(f"{path}: `parameters` must be a dict {{name: prior}}; {_CONTRACT}")
    if smbhb:
        clash = [n for n in SMBHB_PARAMS if n in parameters]
        if clash:
            raise ModelError(
                f"{path}: parameter {clash[0]!r} is reserved for the SMBHB power law that "
                "`smbhb = True` adds; rename it"
            )
        parameters[SMBHB_PARAMS] = SMBHB_PRIOR
    try:
        priors = make_joint_prior(parameters)
    except PriorError as exc:
        raise ModelError(f"{path}: {exc}") from exc
    declared = [n for names in priors.block_names for n in names if n not in SMBHB_PARAMS]
    _check_signature(path, spectrum, declared)
    return SourceModel(
        name=name,
        description=description.strip(),
        path=str(path),
        param_names=priors.names,
        priors=priors,
        smbhb=smbhb,
        correlation=correlation,
        spectrum_fn=spectrum,
    )


def _check_signature(path, spectrum, declared: list[str]) -> None:
    try:
        sig = inspect.signature(spectrum)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the signature of spectrum(): {exc}") from exc
    args = list(sig.parameters.values())
    if not args or args[0].name != "f":
        raise ModelError(
            f"{path}: spectrum() must take the frequency f [Hz] as its first argument, "
            f"got ({', '.join(a.name for a in args)})"
        )
    rest = args[1:]
    var_kw = any(a.kind is inspect.Parameter.VAR_KEYWORD for a in rest)
    named = [
        a
        for a in rest
        if a.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    names = [a.name for a in named]
    for a in named:
        if a.default is inspect.Parameter.empty and a.name not in declared:
            raise ModelError(
                f"{path}: spectrum() argument {a.name!r} has no prior in `parameters`."
                f"{close_matches(a.name, declared)} Declare it, e.g. parameters[{a.name!r}] = "
                "Uniform(lower, upper) or Fixed(value), or give it a default value."
            )
    if not var_kw:
        for p in declared:
            if p not in names:
                raise ModelError(
                    f"{path}: parameter {p!r} is declared in `parameters` but spectrum() "
                    f"does not take it.{close_matches(p, names)} Add it to spectrum's "
                    "arguments or remove it from `parameters`."
                )


def _fmt_point(model: SourceModel, theta) -> str:
    return ", ".join(f"{n}={float(v):.6g}" for n, v in zip(model.param_names, theta, strict=True))


def validate_model(
    model: SourceModel, *, n_draws: int = 8, n_dense: int = DENSE_DRAWS, seed: int = 0
) -> None:
    """Check a model numerically on the PTA band (1e-9 .. 1e-7 Hz) at prior draws.

    At the first `EAGER_DRAWS` draws, called one by one: h^2 Omega_GW must have the shape of
    f, be finite and non-negative, and `psd` must give the same numbers under jax.jit of
    jax.vmap as in a Python loop. At `n_draws` draws (vmap of grad) the gradient of `psd` with
    respect to theta must be finite. At `n_dense` draws
    (the first `n_draws` among them), evaluated under jit and vmap: h^2 Omega_GW must be
    finite and non-negative, which catches problems on small parts of the prior. The
    vectorised checks run in one compiled function; where it fails, they rerun one by one
    (jax.vmap, jax.jit, jax.grad) to name the one that fails. Runs in float64.

    Raises:
        ModelError: naming the file, the check and the parameter values where it failed
            (for the dense check also the fraction of draws that fail).
    """
    with jax.enable_x64(True):
        _validate(model, n_draws, max(n_dense, n_draws), seed)


def _validate(model: SourceModel, n_draws: int, n_dense: int, seed: int) -> None:
    where = model.path
    f = jnp.geomspace(*_CHECK_BAND_HZ, 16)
    dense = model.priors.sample(jax.random.key(seed), n_dense)
    thetas = dense[:n_draws]
    eager = []
    for theta in thetas[:EAGER_DRAWS]:
        point = _fmt_point(model, theta)
        try:
            h2 = model.h2omega(f, theta)
        except Exception as exc:
            raise ModelError(
                f"{where}: spectrum() raised {type(exc).__name__}: {exc} at {point}"
            ) from exc
        if jnp.shape(h2) != f.shape:
            raise ModelError(
                f"{where}: spectrum() must return one value per frequency, shape {f.shape}; "
                f"got shape {jnp.shape(h2)} at {point}"
            )
        h2 = np.asarray(h2)
        bad = ~np.isfinite(h2)
        if bad.any():
            i = int(np.argmax(bad))
            raise ModelError(
                f"{where}: spectrum() returned {h2[i]} at f = {float(f[i]):.3g} Hz, {point}. "
                "h^2 Omega_GW must be finite on the PTA band: guard divisions, logs and powers "
                "(e.g. with jnp.where or jnp.maximum) and check the prior ranges."
            )
        if (h2 < 0).any():
            i = int(np.argmax(h2 < 0))
            raise ModelError(
                f"{where}: spectrum() returned a negative h^2 Omega_GW = {h2[i]:.3g} at "
                f"f = {float(f[i]):.3g} Hz, {point}. An energy density must be >= 0: check "
                "signs, or build it as a square or 10**(...)."
            )
        eager.append(np.asarray(model.psd(f, theta)))
    eager = np.stack(eager)
    try:  # every vectorised check in one compiled function: one compilation per model
        out, grads, h2 = _vectorised(model, f, thetas, dense)
    except Exception as exc:  # find which check fails, one by one, for its message
        _vectorised_one_by_one(model, f, thetas)
        raise ModelError(
            f"{where}: the vectorised checks of spectrum() fail together (jax.jit of vmap, "
            f"grad and the dense draws): {type(exc).__name__}: {exc}. {_HINT}"
        ) from exc
    out_eager = out[: eager.shape[0]]
    if not np.allclose(out_eager, eager, rtol=1e-9, atol=0.0, equal_nan=True):
        _vectorised_one_by_one(model, f, thetas[: eager.shape[0]], eager)  # vmap or jit
        _check_agrees(model, out_eager, eager, thetas, "jax.jit")
    _check_dense(model, f, dense, h2)
    _check_gradients(model, grads, thetas)


_HINT = (
    "Write spectrum() with jax.numpy (not numpy or math) and replace Python if/else on "
    "parameter values with jnp.where."
)


def _vectorised(model: SourceModel, f, thetas, dense):
    """Under one jax.jit: psd at `thetas` (vmap), its gradients with respect to theta (vmap of
    grad), and h^2 Omega_GW at the dense draws (vmap, in chunks of `_DENSE_CHUNK`)."""

    def sum_psd(th):
        return jnp.sum(model.psd(f, th))

    @jax.jit
    def run(thetas, chunk):
        psd = jax.vmap(model.psd, in_axes=(None, 0))(f, thetas)
        grads = jax.vmap(jax.grad(sum_psd))(thetas)
        return psd, grads, jax.vmap(model.h2omega, in_axes=(None, 0))(f, chunk)

    n, size = dense.shape[0], min(_DENSE_CHUNK, dense.shape[0])
    parts = [run(thetas, dense[i : i + size]) for i in range(0, n, size)]
    h2 = np.concatenate([np.asarray(part[2]) for part in parts])
    return np.asarray(parts[0][0]), np.asarray(parts[0][1]), h2


def _vectorised_one_by_one(model: SourceModel, f, thetas, eager=None) -> None:
    """The vectorised checks separately (jax.vmap, jax.jit, jax.grad), raising `ModelError`
    for the first that fails; with `eager`, also that vmap agrees with the direct calls."""
    batched = jax.vmap(model.psd, in_axes=(None, 0))
    for label, fn in (("jax.vmap", batched), ("jax.jit", jax.jit(batched))):
        try:
            out = np.asarray(fn(f, thetas))
        except Exception as exc:
            raise ModelError(
                f"{model.path}: spectrum() fails under {label}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}. {_HINT}"
            ) from exc
        if eager is not None:
            _check_agrees(model, out, eager, thetas, label)
    try:
        jax.jit(jax.vmap(jax.grad(lambda th: jnp.sum(model.psd(f, th)))))(thetas)
    except Exception as exc:
        raise ModelError(
            f"{model.path}: jax.grad of spectrum() fails: {type(exc).__name__}: {exc}. {_HINT}"
        ) from exc


def _check_agrees(model: SourceModel, out, eager, thetas, label: str) -> None:
    if not np.allclose(out, eager, rtol=1e-9, atol=0.0, equal_nan=True):
        i = int(np.argmax(np.any(~np.isclose(out, eager, rtol=1e-9, atol=0.0), axis=1)))
        raise ModelError(
            f"{model.path}: spectrum() gives different values under {label} than when called "
            f"directly at {_fmt_point(model, thetas[i])}. {_HINT}"
        )


def _check_gradients(model: SourceModel, grads, thetas) -> None:
    bad = ~np.isfinite(grads)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ModelError(
            f"{model.path}: the gradient with respect to parameter {model.param_names[j]!r} is "
            f"not finite at {_fmt_point(model, thetas[i])}. Guard singular points so both "
            "branches of jnp.where are finite (e.g. evaluate logs and divisions at a safe "
            "argument)."
        )


def _check_dense(model: SourceModel, f, thetas, h2) -> None:
    """h^2 Omega_GW (`h2`, (n_dense, n_f)) finite and non-negative at every draw of `thetas`
    (n_dense, n_dim)."""
    n = thetas.shape[0]
    for bad, what, hint in (
        (
            ~np.isfinite(h2),
            "is not finite",
            "h^2 Omega_GW must be finite on the PTA band: guard divisions, logs and powers "
            "(e.g. with jnp.where or jnp.maximum) and check the prior ranges.",
        ),
        (
            h2 < 0,
            "is negative",
            "An energy density must be >= 0: check signs, or build it as a square or 10**(...).",
        ),
    ):
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size:
            i = int(rows[0])
            j = int(np.argmax(bad[i]))
            raise ModelError(
                f"{model.path}: h^2 Omega_GW from spectrum() {what} at {rows.size} of {n} prior "
                f"draws ({100 * rows.size / n:.2f} %), e.g. {h2[i, j]:.3g} at f = "
                f"{float(f[j]):.3g} Hz, {_fmt_point(model, thetas[i])}. {hint}"
            )


def load_model(name_or_path: str | pathlib.Path, *, validate: bool = True) -> SourceModel:
    """Load a built-in model by name, or a model file by path, and validate it.

    Args:
        name_or_path: a built-in name (see `list_models`) or the path of a .py model file
            (a string ending in .py or containing '/', or a pathlib.Path).
        validate: run `validate_model` (cached per file version).

    Returns:
        The `SourceModel`.

    Raises:
        ModelError: unknown or unavailable model, missing file, invalid declarations or a
            spectrum that fails the numerical checks; the message names file and parameter.
    """
    path = _resolve(name_or_path)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    checked = (*key, True)
    if checked in _CACHE:  # a validated model serves both kinds of request
        return _CACHE[checked]
    try:
        model = _CACHE.get((*key, False)) or _build(_exec_model_file(path), path)
        if validate:
            validate_model(model)
    except (KeyboardInterrupt, Exception):
        raise
    except BaseException as exc:  # e.g. sys.exit() inside spectrum()
        raise ModelError(f"{path}: checking the model failed: {_what(exc)}") from exc
    _CACHE[(*key, validate)] = model
    return model


def load_preset(name: str, *, validate: bool = True) -> tuple[SourceModel, ...]:
    """Load the models of a named preset (see `PRESETS`), in order."""
    if name not in PRESETS:
        raise ModelError(
            f"unknown preset {name!r}.{close_matches(name, PRESETS)} Presets: {', '.join(PRESETS)}"
        )
    return tuple(load_model(m, validate=validate) for m in PRESETS[name])
