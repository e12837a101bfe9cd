"""Validated settings of flows, training and comparisons: `FlowConfig`, `TrainConfig`,
`CompareSettings`.

Frozen dataclasses that check every field when they are built, with one rule table per class
(`FLOW_RULES`, `TRAIN_RULES`, `COMPARE_RULES`): a rule is (test, what is expected), and a
value that fails its test raises `ParameterError` naming `Class.field=value` and what was
expected. Batch job files (`ptaflow.batch.spec`) check their [train], [flow] and [evidence]
tables with the same rules.

This module imports only the standard library and `ptaflow.errors`: settings can be built,
compared and written without JAX (`ptaflow.flows` and `ptaflow.compare` re-export them).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ParameterError

__all__ = [
    "FlowConfig",
    "TrainConfig",
    "CompareSettings",
    "FULL_TRAIN",
    "Rule",
    "FLOW_RULES",
    "TRAIN_RULES",
    "COMPARE_RULES",
]

#: A check of one value: (test, what is expected, as the words after "expected").
Rule = tuple[Callable[[Any], bool], str]


def _check(name: str, value: Any, rule: Rule, *, sep: str = "=") -> None:
    """Raise ParameterError "NAME=VALUE: expected ..." unless `rule` holds for `value` (a
    value the test cannot compare, such as a string against a number, fails it)."""
    test, expected = rule
    try:
        ok = bool(test(value))
    except TypeError:
        ok = False
    if not ok:
        raise ParameterError(f"{name}{sep}{value!r}: expected {expected}")


def _check_fields(settings: Any, rules: Mapping[str, Rule]) -> None:
    """Every field of a settings object that `rules` names, against its rule."""
    cls = type(settings).__name__
    for name, rule in rules.items():
        _check(f"{cls}.{name}", getattr(settings, name), rule)


def _at_least(low: int) -> Rule:
    return (lambda v: v >= low, f"an integer >= {low}")


def _one_of(*choices: Any, note: str = "") -> Rule:
    return (lambda v: v in choices, " or ".join(map(repr, choices)) + note)


def _or_none(rule: Rule) -> Rule:
    test, expected = rule
    return (lambda v: v is None or test(v), f"{expected}, or None")


_POSITIVE: Rule = (lambda v: v > 0, "a number > 0")
_NON_NEGATIVE: Rule = (lambda v: v >= 0, "a number >= 0")
DEVICES_RULE: Rule = (
    lambda v: (
        v is None
        or v == "all"
        or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1)
    ),
    "None, 'all' or a positive integer number of devices",
)

#: Rules of `FlowConfig`'s fields.
FLOW_RULES: dict[str, Rule] = {
    "family": _one_of(
        "maf",
        "coupling",
        note=" (block neural autoregressive flows give spurious heavy tails and are not offered)",
    ),
    "flow_layers": _at_least(1),
    "nn_width": _at_least(1),
    "nn_depth": _at_least(0),
    "knots": _at_least(1),
    "interval": _POSITIVE,
}

#: Rules of `TrainConfig`'s fields, one field at a time (the rules that tie fields together
#: are in `TrainConfig.__post_init__`).
TRAIN_RULES: dict[str, Rule] = {
    "max_steps": _at_least(0),
    "num_samples": _at_least(1),
    "learning_rate": _POSITIVE,
    "warmup_steps": _at_least(0),
    "final_lr_fraction": (lambda v: 0 <= v <= 1, "a fraction 0..1"),
    "clip_norm": _POSITIVE,
    "temper_steps": _at_least(0),
    "beta0": (lambda v: 0 < v <= 1, "0 < beta0 <= 1"),
    "patience": _at_least(1),
    "min_delta": _NON_NEGATIVE,
    "smoothing": (lambda v: 0 < v <= 1, "a weight in (0, 1]"),
    "init": _one_of("laplace", "prior"),
    "prior_draws": _at_least(1),
    "prior_ess": _POSITIVE,
    "laplace_starts": _at_least(1),
    "laplace_steps": _at_least(0),
    "init_min_sd": _NON_NEGATIVE,
    "checkpoint_every": _at_least(1),
    "refine_rounds": _at_least(0),
    "refine_pool": _at_least(1),
    "refine_steps": _at_least(1),
    "refine_batch": _at_least(1),
    "refine_learning_rate": _POSITIVE,
    "refine_patience": _at_least(0),
    "refine_target_ess": _or_none((lambda v: 0 < v <= 1, "a fraction in (0, 1]")),
    "refine_anneal_ess": _or_none((lambda v: 0 < v < 1, "a fraction in (0, 1)")),
    "surrogate": _one_of("curn", "none"),
    "devices": DEVICES_RULE,
}

#: Rules of `CompareSettings`' fields, checked after the mode's defaults are filled in.
COMPARE_RULES: dict[str, Rule] = {
    "mode": _one_of("refit", "full"),
    "correlation": _one_of("curn", "hd"),
    "n_rn": _at_least(1),
    "n_gw": _at_least(1),
    "n_freq": _at_least(1),
    "n_flow_samples": _at_least(1),
    "exact": _one_of("imh", "neutra"),
    "n_chains": (lambda v: v >= 4, "an integer >= 4 (the harmonic-mean error needs 4 chains)"),
    "n_per_chain": _at_least(1),
    "neutra_warmup": _at_least(0),
    "harmonic_flow": _one_of(None, "posterior", "separate"),
    "temperature": _or_none((lambda v: 0 < v < 1, "0 < T < 1")),
}


@dataclasses.dataclass(frozen=True)
class FlowConfig:
    """Architecture of a flow.

    The default, eight coupling layers, is fast in both directions: its samples (reverse-KL
    training, importance draws) and its density (forward-KL refinement, harmonic means) each
    take one pass, where a masked autoregressive flow needs n_dim passes for one of them
    (in 22-D its refinement rounds took 6 s each against 1 s). Measured on the 10-pulsar NG15
    CURN posterior against a 4 x 7000 NUTS reference, it is as accurate as four masked
    autoregressive layers (weighted max 1-D Hellinger 0.033-0.038 against 0.037, khat 0.50-0.57
    against 0.56; `benchmarks/results/`).

    Attributes:
        family: "coupling" (default) or "maf" (masked autoregressive). In one dimension, where
            coupling is undefined, "coupling" builds the same layers as "maf".
        flow_layers: number of spline layers.
        nn_width, nn_depth: conditioner network width and hidden-layer count.
        knots: spline knots per dimension.
        interval: the spline acts on [-interval, interval] (identity outside), in units of the
            Laplace-whitened coordinates.
    """

    family: str = "coupling"
    flow_layers: int = 8
    nn_width: int = 64
    nn_depth: int = 1
    knots: int = 8
    interval: float = 5.0

    def __post_init__(self):
        _check_fields(self, FLOW_RULES)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Variational training options (defaults tuned once for NG15 10-pulsar CURN/HD, 22-D).

    The reverse-KL stage stops after 200 steps without improvement and the forward-KL rounds
    after three without a better pool: the rounds finish what the gradient steps leave, at the
    cost of target values alone. On the 10-pulsar CURN posterior this took 1251 steps and 7
    rounds against 2125 steps and 6 rounds with a patience of 600 steps, at the same accuracy
    against NUTS (weighted max 1-D Hellinger 0.037 against 0.038, khat 0.54 against 0.57) and a
    lower importance ESS (20 % against 48 % of the draws).

    Attributes:
        max_steps: upper limit of reverse-KL optimisation steps (0: no reverse-KL stage; the
            forward-KL refinement then trains the flow from its initial affine map).
        num_samples: flow samples per step (the ELBO batch).
        learning_rate: peak Adam learning rate; warm-up over `warmup_steps`, then cosine decay
            to `final_lr_fraction` x peak at `max_steps`.
        clip_norm: global gradient-norm clipping.
        temper_steps: steps over which beta rises geometrically from `beta0` to 1 (0: none).
        patience: stop when the smoothed loss has not improved by `min_delta` [nat] for this
            many steps after tempering ended.
        smoothing: weight of the newest loss in the exponential moving average.
        init: "laplace" (start at a Laplace approximation: a multi-start MAP search and the
            Hessian there; for smooth likelihoods such as the full PTA one) or "prior" (start
            at the importance-weighted mean and covariance of `prior_draws` prior draws, at
            the largest tempering beta that leaves them `prior_ess` effective samples; for
            cheap low-dimensional likelihoods that are not smooth, such as the
            piecewise-linear free-spectrum refit, or that have plateaus and several modes).
        prior_draws, prior_ess: see init="prior".
        laplace_starts, laplace_steps: multi-start MAP search for the initial affine map.
        init_min_sd: the initial flow is at least this wide in every z coordinate (1 is the
            width of a uniform prior under the probit map of `ptaflow.priors`): the curvature
            at the mode hides flat posterior tails, reverse-KL training rarely widens a
            too-narrow start, but quickly narrows a too-wide one.
        checkpoint_every: steps between checkpoints (when a checkpoint path is given).
        refine_rounds: rounds of forward-KL refinement after the reverse-KL fit (0: none).
            Each round draws `refine_pool` flow samples, evaluates the target there and takes
            `refine_steps` Adam steps (rate `refine_learning_rate`) of maximum likelihood on
            minibatches of `refine_batch` points resampled from the pool by their
            Pareto-smoothed importance weights. A round costs `refine_pool` target values
            (no gradients) and `refine_steps` x `refine_batch` flow densities; a checkpoint
            is written after each.
        refine_patience: stop the refinement early once the pools' importance ESS fraction
            has not improved on its best for this many rounds (0: run all `refine_rounds`).
        refine_target_ess: stop the refinement early once two consecutive pools reach this
            importance ESS fraction (None: no such stop). With `max_steps=0` the rounds are
            the whole training: for cheap low-dimensional targets (init="prior") the forward
            KL fits the flow from its initial affine map without the target's gradient.
        refine_anneal_ess: with `max_steps=0` and init="prior", anneal the refinement: the
            rounds start at the tempered posterior prior x L^beta that the prior-draw start
            reached, and each round raises beta to the largest value at which its pool keeps
            this fraction of its importance ESS at the round's old beta (and at least
            `ANNEAL_MIN_ESS` of the pool), until beta = 1 (None: every round at beta = 1).
            Forward KL covers the mass of each tempered posterior, so the flow follows the
            modes that the prior draws found instead of collapsing onto one; the stopping
            rules above count only rounds at beta = 1.
        refine_keep_best: return the flow whose pool had the highest importance ESS fraction
            at beta = 1 (the flow at the start of that round) instead of the last one: one
            round of steps can leave a flow with a heavy-weight region (a pool ESS of a few
            per cent between rounds at 0.5).
        surrogate: "curn" (default): for a Hellings-Downs posterior, run the initialisation
            and the reverse-KL stage on the CURN likelihood of the same pulsars, data and
            priors (`Posterior.surrogate`), whose gradient costs a fraction of HD's, and let
            the forward-KL refinement, which needs target values only, carry the flow to the
            HD posterior. The refinement, its stopping rules, the importance weights, the
            diagnostics and the evidences all use the HD target. "none": every stage on the
            target itself. Only HD posteriors with `refine_rounds` > 0 are affected.
        devices: accelerators of this machine to split each step's `num_samples` flow draws
            over (data parallelism): None (default) trains on the default device; an int n
            uses the first n of `jax.local_devices()`, "all" every one of them. n must divide
            `num_samples` and `refine_batch`. The batch is drawn from the same key as on one
            device (the same random numbers whatever n), each device transforms and evaluates
            num_samples / n of the draws, the flow's parameters and optimiser state are
            replicated, and the batch means of the loss and its gradient become sums across
            devices, so the losses equal one device's up to floating-point summation order.
            Whether n devices exist is checked when training starts (a config may be written
            on another machine than the one that trains). On a 4-GPU node:
            ``fit_variational(key, posterior, n_dim, config=TrainConfig(devices=4))``, or
            ``devices = "all"`` in a batch file's [train] table. On a multi-core CPU, present
            the cores as devices first (`ptaflow.devices.use_cpu_cores()`, or
            JAX_NUM_CPU_DEVICES=n in the environment): XLA runs one computation on one core,
            so this is how CPU training uses more than one core. Not part of the
            checkpoint settings: a run may resume on another number of devices.
    """

    max_steps: int = 3000
    num_samples: int = 256
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    final_lr_fraction: float = 0.05
    clip_norm: float = 10.0
    temper_steps: int = 100
    beta0: float = 0.3
    patience: int = 200
    min_delta: float = 0.005
    smoothing: float = 0.02
    init: str = "laplace"
    prior_draws: int = 65536
    prior_ess: float = 300.0
    laplace_starts: int = 16
    laplace_steps: int = 400
    init_min_sd: float = 1.0
    checkpoint_every: int = 100
    refine_rounds: int = 30
    refine_pool: int = 8192
    refine_steps: int = 20
    refine_batch: int = 256
    refine_learning_rate: float = 1e-4
    refine_patience: int = 3
    refine_target_ess: float | None = None
    refine_anneal_ess: float | None = None
    refine_keep_best: bool = False
    surrogate: str = "curn"
    devices: int | str | None = None

    def __post_init__(self):
        _check_fields(self, TRAIN_RULES)
        if self.max_steps == 0 and self.refine_rounds == 0:
            raise ParameterError(
                "TrainConfig.max_steps=0 and refine_rounds=0 train nothing; give either stage "
                "some steps or rounds"
            )
        n = self.devices
        for name in ("num_samples", "refine_batch"):
            if n not in (None, "all") and getattr(self, name) % n:
                raise ParameterError(
                    f"TrainConfig.devices={n} does not divide {name}={getattr(self, name)}: "
                    f"each device takes the same share of the batch; choose {name} as a "
                    f"multiple of {n}"
                )


#: Full mode's training options in a comparison (`CompareSettings`, batch job files): the
#: defaults, with the flow started at tempered prior-draw moments. Measured on the 10-pulsar
#: power law (22 parameters, two cores), against the Laplace start: CURN 855 instead of 1455
#: reverse-KL steps, the whole model 126.7 s instead of 179.2 s, weighted max 1-D Hellinger
#: 0.038 against the NUTS reference (Laplace: 0.037-0.039), khat 0.55-0.60 (0.51); HD 171.8 s
#: instead of 217.7 s, ln Z within 0.9 sigma of the Laplace start's, khat 0.67 (0.49). The
#: prior draws' likelihoods use the compiled evaluation that the refinement and the
#: importance samples use afterwards; the Laplace search compiles its own.
FULL_TRAIN = TrainConfig(init="prior")

#: CompareSettings fields that only full mode uses.
_FULL_MODE_ONLY = ("data", "pulsars", "correlation", "n_rn", "n_gw")


@dataclasses.dataclass(frozen=True)
class CompareSettings:
    """What a comparison runs on and how.

    Attributes:
        mode: "refit" (free-spectrum densities, SGWB parameters only) or "full".
        correlation: full mode: "curn" (default, as `make_posterior`, `make_likelihood` and
            batch job files) or "hd", for the models whose file declares no `correlation`
            (a model file's "uncorrelated" means CURN, its "hd" HD; see `model_correlation`).
        pulsars: full mode: an int N (the N best by ptaflow's ranking rule) or names.
        data: full mode: reduced-data HDF5 path (default the shipped NG15 subset).
        n_rn, n_gw: red-noise / common-process frequencies (full mode).
        n_freq: free-spectrum frequencies (refit mode; full mode: the spectra plot).
        reference: model the Bayes factors are taken against (a name or model-file path).
        seed: base seed; each model's seed derives from it and the model name
            (`ptaflow.identity.derived_seed`).
        train: flow training options (default `FULL_TRAIN` in full mode: `TrainConfig()`
            started from prior draws; in refit mode None: by the model's dimension,
            `refit_configs`).
        flow: flow architecture (default `FlowConfig()` in full mode; in refit mode None: by
            the model's dimension, `refit_configs`).
        n_flow_samples: flow samples for importance sampling.
        exact: how the harmonic mean's exact posterior samples are drawn: "imh"
            (independence Metropolis-Hastings with the flow as proposal; no gradients) or
            "neutra" (NUTS in the flow's latent space, `neutra_warmup` warm-up steps).
        n_chains, n_per_chain: those chains; half train the harmonic-mean flow, and the
            spread of the other half's estimates gives its error (10 evaluation chains by
            default, enough for that spread to be meaningful).
        harmonic_flow: the harmonic mean's phi: "posterior" (the fitted posterior flow
            concentrated to `temperature`, evaluated on every exact chain; the chains'
            proposals are fresh flow draws, independent of its training; where its terms have
            Pareto khat > 0.5 a separate flow takes over, `ptaflow.evaluation.harmonic_evidence`)
            or "separate" (a new flow fitted to half of the chains, the other half
            evaluating). Default "posterior" in full mode; in refit mode None: by the model's
            dimension (`refit_configs`).
        temperature: the harmonic-mean flow's concentration T < 1 (full mode: default 0.7 for
            the posterior flow, 0.9 for a separate one; refit mode: None, by the model's
            dimension and the flow, `refit_configs`). The posterior flow is trained to
            cover the posterior's mass (forward KL) and leaks past sharp edges of tabulated
            spectra: at T = 0.9 it overestimated ln Z of meta_l by 0.02 nat, at T = 0.5 by
            < 0.01. In full mode (22 parameters, 10 pulsars, CURN and HD, two exact-chain
            seeds each) the posterior flow at T = 0.7 agreed with importance sampling within
            1.5 sigma (errors 0.02-0.05 nat, khat 0.26-0.34), where a separate flow at T = 0.9
            had errors of 0.06-0.14 nat, khat up to 0.77 and deviations up to 4.9 sigma.
        warm_start: full mode: start each model's flow from the previous model's fit where
            the two have as many source parameters (the red-noise parameters are those of
            the same pulsars and priors): its red-noise map is kept, its source-parameter
            coordinates restart prior-wide (`ptaflow.flows.reset_coordinates`), and the
            Laplace search is skipped. The evidences then depend on the order of the models
            only within their errors (each flow is still trained to convergence and its
            weights are exact); a model's record does not depend on it.

    Raises:
        ParameterError: an invalid value, or in refit mode a full-mode option (`data`,
            `pulsars`, `correlation`, `n_rn`, `n_gw`) set away from its default.
    """

    mode: str = "refit"
    correlation: str = "curn"
    pulsars: int | tuple[str, ...] | None = 10
    data: str | None = None
    n_rn: int = 30
    n_gw: int = 14
    n_freq: int = 14
    reference: str = "smbhb"
    seed: int = 0
    train: TrainConfig | None = None
    flow: FlowConfig | None = None
    n_flow_samples: int = 20000
    exact: str = "imh"
    n_chains: int = 20
    n_per_chain: int = 1000
    neutra_warmup: int = 300
    harmonic_flow: str | None = None
    temperature: float | None = None
    warm_start: bool = True

    def __post_init__(self):
        _check_fields(self, COMPARE_RULES)
        if isinstance(self.pulsars, list):
            object.__setattr__(self, "pulsars", tuple(self.pulsars))
        if self.mode == "refit":
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name in _FULL_MODE_ONLY:
                if getattr(self, name) != defaults[name]:
                    raise ParameterError(
                        f"CompareSettings.{name}={getattr(self, name)!r} applies to mode='full' "
                        "only: refit mode fits the NG15 free-spectrum densities and does not use "
                        f"it. Set mode='full', or leave {name} at its default ({defaults[name]!r})"
                    )
        if self.mode == "full" and self.train is None:
            object.__setattr__(self, "train", FULL_TRAIN)
        if self.mode == "full" and self.flow is None:
            object.__setattr__(self, "flow", FlowConfig())
        if self.mode == "full" and self.harmonic_flow is None:
            object.__setattr__(self, "harmonic_flow", "posterior")
        if self.mode == "full" and self.temperature is None:
            default = {"separate": 0.9, "posterior": 0.7}[self.harmonic_flow]
            object.__setattr__(self, "temperature", default)

    def to_dict(self) -> dict:
        """JSON-able form (nested dataclasses as dicts)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))
