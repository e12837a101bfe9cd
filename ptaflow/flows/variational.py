"""Reverse-KL training of a flow, then its forward-KL refinement, as init / step / run.

`VariationalFit` holds what stays fixed during a fit (target, optimisers, keys, devices) and
a `TrainState` with everything that changes (parameters, optimiser state, the smoothed loss,
the refinement's record); a checkpoint is that state serialised. `fit_variational` is the
whole run: `VariationalFit(...)` (a new flow at the Laplace start, or the checkpoint's state),
`step()` until the smoothed loss stops improving, then `refine()` rounds
(`ptaflow.flows.refine`) until their stopping rules fire.

The reverse KL divergence (negative ELBO, Ranganath et al. 2014) is minimised with
reparameterised samples, a tempering schedule on the likelihood (target beta ln L + ln pi,
beta rising to 1), warm-up + cosine learning-rate decay, gradient clipping, skipping of
non-finite updates, and early stopping once the exponentially smoothed loss stops improving.
A Hellings-Downs posterior may run this stage on its CURN surrogate
(`TrainConfig.surrogate`): the refinement needs target values only, so it alone pays for HD.

Every step is one compiled function called with the same shapes (no recompilation;
`STEP_TRACES` and `REFINE_TRACES` count traces), random keys are `fold_in(key, step)`, so an
interrupted run resumed from its checkpoint gives the same flow as an uninterrupted one.

On a node with several accelerators, `TrainConfig(devices=n)` (or "all") splits each step's
batch of flow draws, and so the likelihood evaluations that dominate its cost, over n devices
(data parallelism with `jax.sharding`); the draws and the result do not depend on n.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flowjax.distributions import Transformed
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from ..devices import AXIS, device_mesh
from ..errors import DataError, ParameterError
from ..posterior import Posterior
from ..profiling import PhaseTimes, _phase
from ..results import write_bytes_atomic
from ..settings import FlowConfig, TrainConfig
from . import refine as _refine
from .construction import make_flow, partition
from .initial import initial_flow
from .io import FORMAT, pack, read_leaves, settings_hash, unpack
from .optimizers import optimizer as _optimizer
from .targets import split_target

__all__ = ["STEP_TRACES", "FitInfo", "TrainState", "VariationalFit", "fit_variational"]

#: Number of times the variational training step has been traced (compiled), for tests.
STEP_TRACES = {"count": 0}


@dataclasses.dataclass(frozen=True)
class FitInfo:
    """What happened during training.

    Attributes:
        losses: negative ELBO per step [nat] (at the step's beta).
        betas: tempering parameter per step.
        steps: steps taken in total (including any before a resume).
        converged: True when early stopping fired, False when `max_steps` ran out.
        final_loss: lowest smoothed loss at beta = 1 [nat]; the returned flow has the
            parameters of that point (the last ones if tempering never finished).
        skipped_steps: steps whose loss or gradient was not finite (update skipped).
        wall_time_s: seconds spent in this call (compilation included).
        resumed_from: step the run resumed from (0 for a fresh run).
        devices: number of devices each step's batch was split over.
        refine_ess, refine_khat: per refinement round, the importance ESS fraction and the
            Pareto khat of that round's pool (drawn from the flow before the round's steps),
            for that round's target.
        refine_beta: per refinement round, the tempering beta of its target (1 unless
            `TrainConfig.refine_anneal_ess` is set).
        surrogate: the likelihood the initialisation and the reverse-KL steps (`losses`,
            `final_loss`) ran on when it was not the target's: "curn" for an HD target (see
            `TrainConfig.surrogate`); None when every stage ran on the target.
    """

    losses: np.ndarray
    betas: np.ndarray
    steps: int
    converged: bool
    final_loss: float
    skipped_steps: int
    wall_time_s: float
    resumed_from: int = 0
    devices: int = 1
    refine_ess: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    refine_khat: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    refine_beta: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    surrogate: str | None = None

    def to_dict(self) -> dict:
        """JSON-able summary (without the per-step arrays).

        The refinement is summarised by the medians over its last ten rounds: one pool's ESS
        fraction scatters widely (a single heavy weight can take it to a few per cent).
        """

        def late_median(a):
            return float(np.median(a[-10:])) if len(a) else None

        return {
            "refine_rounds": len(self.refine_ess),
            "refine_tempered_rounds": int(np.sum(np.asarray(self.refine_beta) < 1.0)),
            "refine_ess_fraction_median": late_median(self.refine_ess),
            "refine_khat_median": late_median(self.refine_khat),
            "steps": self.steps,
            "converged": self.converged,
            "final_loss": self.final_loss,
            "skipped_steps": self.skipped_steps,
            "wall_time_s": self.wall_time_s,
            "resumed_from": self.resumed_from,
            "devices": self.devices,
            "surrogate": self.surrogate,
        }


def _beta(config: TrainConfig, step: int, beta_init: float = 0.0) -> float:
    """Geometric tempering from max(beta0, beta_init) to 1 over temper_steps."""
    start = max(config.beta0, beta_init)
    if config.temper_steps <= 0 or step >= config.temper_steps or start >= 1.0:
        return 1.0
    frac = step / config.temper_steps
    return float(start ** (1.0 - frac))


def _batch_sharding(config: TrainConfig) -> NamedSharding | None:
    """The sharding of the ELBO batch over `config.devices` local devices (None: one device).

    Raises:
        ParameterError: when the machine has fewer devices than asked for, or "all" of them
            do not divide `num_samples`.
    """
    mesh = device_mesh(
        config.devices, what="TrainConfig.devices", divides=("num_samples", config.num_samples)
    )
    return None if mesh is None else NamedSharding(mesh, PartitionSpec(AXIS))


def _place(tree, sharding):
    """Arrays of `tree` replicated over the devices of `sharding`'s mesh (others unchanged)."""
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    return jax.tree.map(lambda x: jax.device_put(x, replicated) if eqx.is_array(x) else x, tree)


def _elbo_loss(params, static, target, key, beta, num_samples, sharding=None):
    flow = eqx.combine(params, static)
    z, log_q = flow.sample_and_log_prob(key, (num_samples,))
    if sharding is not None:
        # The full batch is drawn from one key (the numbers do not depend on the device
        # count); split along the sample axis, XLA propagates the split back into the flow's
        # forward pass and on into the likelihood; the mean becomes a cross-device sum.
        z = jax.lax.with_sharding_constraint(z, sharding)
        log_q = jax.lax.with_sharding_constraint(log_q, sharding)
    tempered, rest = jax.vmap(split_target(target))(z)
    return jnp.mean(log_q - beta * tempered - rest)


@eqx.filter_jit
def _train_step(params, static, target, opt_state, key, beta, optimizer, num_samples, sharding):
    STEP_TRACES["count"] += 1  # runs only while tracing
    loss, grads = eqx.filter_value_and_grad(_elbo_loss)(
        params, static, target, key, beta, num_samples, sharding
    )
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return eqx.apply_updates(params, updates), opt_state, loss


def _progress(total: int, initial: int, desc: str):
    return tqdm(total=total, initial=initial, desc=desc, leave=False, disable=None)


#: Training options added after checkpoints were first written, with their defaults: left out
#: of a checkpoint's settings hash while at the default.
_LATER_OPTIONS = {
    "refine_patience": 0,
    "refine_target_ess": None,
    "refine_anneal_ess": None,
    "refine_keep_best": False,
}


@dataclasses.dataclass
class TrainState:
    """Everything a fit changes as it goes; a checkpoint is this state serialised.

    Attributes:
        params: the flow's trainable arrays.
        opt_state: the current stage's optimiser state.
        best_params: reverse-KL stage: the parameters at the lowest smoothed loss; refinement:
            the flow at the start of the round with the best pool.
        stage: "variational" (reverse KL), then "refine" (forward KL).
        step: reverse-KL steps taken; losses, betas: their losses and tempering betas.
        ema, ema_raw, n_avg: the bias-corrected moving average of the loss at beta = 1, its
            raw sum and the number of losses in it.
        best, since_best: the lowest smoothed loss, and steps since it last improved by
            `min_delta`.
        skipped: steps whose loss was not finite.
        beta_init: the tempering beta the prior-draw start reached (0 for Laplace).
        converged: whether the early stopping fired.
        refine_round, refine_ess, refine_khat, refine_beta: rounds taken, and each round's
            pool ESS fraction, khat and beta.
    """

    params: Any
    opt_state: Any
    best_params: Any
    stage: str = "variational"
    step: int = 0
    losses: list = dataclasses.field(default_factory=list)
    betas: list = dataclasses.field(default_factory=list)
    ema: float | None = None
    ema_raw: float = 0.0
    n_avg: int = 0
    best: float = np.inf
    since_best: int = 0
    skipped: int = 0
    beta_init: float = 0.0
    converged: bool = False
    refine_round: int = 0
    refine_ess: list = dataclasses.field(default_factory=list)
    refine_khat: list = dataclasses.field(default_factory=list)
    refine_beta: list = dataclasses.field(default_factory=list)

    _ARRAYS = ("params", "opt_state", "best_params")

    def header(self) -> dict:
        """The JSON-able fields (the arrays are written after them)."""
        header = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in self._ARRAYS
        }
        header["best"] = None if not np.isfinite(self.best) else self.best
        return header

    def to_bytes(self, settings_hash: str) -> bytes:
        """The state as a checkpoint of the given settings."""
        head = {"format": FORMAT, "settings_hash": settings_hash, **self.header()}
        return pack(head, (self.params, self.opt_state, self.best_params))

    @classmethod
    def from_checkpoint(
        cls, path: pathlib.Path, settings_hash: str, params, variational_opt, refine_opt
    ) -> TrainState:
        """The state saved in `path`, read into the structure of `params` and the optimiser
        state of its stage (`variational_opt` or `refine_opt`, initial states)."""
        header, payload = unpack(path)
        if header.get("settings_hash") != settings_hash or header.get("format") != FORMAT:
            raise DataError(
                f"{path}: checkpoint was written with other settings (or format); delete "
                "it or pass another checkpoint path to start afresh"
            )
        stage = header.get("stage", "variational")
        opt = variational_opt if stage == "variational" else refine_opt
        params, opt_state, best_params = read_leaves(
            payload, (params, opt, params), f"{path}: the checkpoint"
        )
        known = {f.name for f in dataclasses.fields(cls)} - set(cls._ARRAYS)
        fields = {k: v for k, v in header.items() if k in known}
        fields["best"] = np.inf if fields.get("best") is None else fields["best"]
        fields.setdefault("refine_beta", [1.0] * len(fields.get("refine_ess", [])))
        return cls(params=params, opt_state=opt_state, best_params=best_params, **fields)


class VariationalFit:
    """One flow fit, step by step: reverse KL (`step`), then forward-KL rounds (`refine`).

    Build it with the arguments of `fit_variational` (a new flow at the Laplace start, the
    given `flow`, or the state of an existing checkpoint), call `step()` while
    `training` is True, `start_refinement()`, `refine()` while `refining` is True, and take
    `flow` and `info()`; `run()` does all of that. The whole run is a deterministic function
    of `key`.
    """

    def __init__(
        self,
        key,
        target,
        n_dim: int,
        *,
        flow: Transformed | None = None,
        flow_config: FlowConfig | None = None,
        config: TrainConfig | None = None,
        init_points=None,
        checkpoint: str | pathlib.Path | None = None,
        timings: PhaseTimes | None = None,
    ):
        config = config or TrainConfig()
        flow_config = flow_config or FlowConfig()
        self.config, self.timings, self.t0 = config, timings, time.perf_counter()
        # The refinement pools evaluate the target as given (not replicated): the same compiled
        # values then serve the importance samples after the fit. The initialisation and the
        # reverse-KL steps may run on a surrogate that is cheaper to differentiate.
        self.pool_target = target
        if isinstance(target, Posterior) and config.refine_rounds:
            target = target.surrogate(config.surrogate)
        self.surrogate = None if target is self.pool_target else config.surrogate
        key_init, key_laplace, self.key_train = jax.random.split(key, 3)
        self.key_refine = jax.random.fold_in(key, 1)
        self.optimizer = _optimizer(config)
        self.refine_optimizer = _optimizer(config, config.refine_learning_rate)
        self.sharding = _batch_sharding(config)
        self.refine_mesh = None
        if self.sharding is not None and config.refine_rounds:  # checked now, not after training
            self.refine_mesh = device_mesh(
                config.devices,
                what="TrainConfig.devices",
                divides=("refine_batch", config.refine_batch),
            )
        # Without `devices`, so that checkpoints resume on any device count, and without options
        # added later while they keep their defaults (so that older checkpoints still resume).
        train_settings = {
            k: v
            for k, v in dataclasses.asdict(config).items()
            if k != "devices"
            and not (k in _LATER_OPTIONS and v == _LATER_OPTIONS[k])
            and not (k == "surrogate" and self.surrogate is None)  # where it changes nothing
        }
        self.settings_hash = settings_hash(flow_config, train_settings, int(n_dim))
        self.checkpoint = pathlib.Path(checkpoint) if checkpoint is not None else None
        resume = self.checkpoint is not None and self.checkpoint.exists()

        beta_init = 0.0
        if flow is None:
            if resume:  # skeleton only: the checkpoint supplies every parameter value
                flow = make_flow(key_init, n_dim, config=flow_config)
            else:
                with _phase(timings, "initialise"):
                    flow, beta_init = initial_flow(
                        key_init, key_laplace, target, n_dim, flow_config, config, init_points
                    )
        if flow.shape != (n_dim,):
            raise ParameterError(f"flow has shape {flow.shape}; expected ({n_dim},)")
        params, self.static = partition(flow)
        if resume:
            state = TrainState.from_checkpoint(
                self.checkpoint,
                self.settings_hash,
                params,
                self.optimizer.init(params),
                self.refine_optimizer.init(params),
            )
        else:
            state = TrainState(params, self.optimizer.init(params), params, beta_init=beta_init)
        self.step0, self.round0 = state.step, state.refine_round
        self.target = target
        if self.sharding is not None:
            state.params, state.opt_state, state.best_params, self.target = _place(
                (state.params, state.opt_state, state.best_params, target), self.sharding
            )
        self.state = state

    # --- reverse KL ---

    @property
    def training(self) -> bool:
        """Whether the reverse-KL stage goes on (not stopped early, steps left)."""
        s = self.state
        return s.stage == "variational" and s.step < self.config.max_steps and not s.converged

    def step(self) -> float:
        """One reverse-KL step; returns its loss (at its beta)."""
        s, config = self.state, self.config
        beta = _beta(config, s.step, s.beta_init)
        s.params, s.opt_state, loss = _train_step(
            s.params,
            self.static,
            self.target,
            s.opt_state,
            jax.random.fold_in(self.key_train, s.step),
            jnp.asarray(beta),
            self.optimizer,
            config.num_samples,
            self.sharding,
        )
        loss = float(loss)
        s.step += 1
        s.losses.append(loss)
        s.betas.append(beta)
        if not np.isfinite(loss):
            s.skipped += 1
        elif beta == 1.0:
            # Exponential moving average started at zero and bias-corrected (as Adam's
            # moments); patience counts only once it spans ~1/smoothing steps.
            s.n_avg += 1
            s.ema_raw = (1 - config.smoothing) * s.ema_raw + config.smoothing * loss
            s.ema = s.ema_raw / (1 - (1 - config.smoothing) ** s.n_avg)
            if s.n_avg * config.smoothing >= 1.0:
                s.since_best = 0 if s.ema < s.best - config.min_delta else s.since_best + 1
                if s.ema < s.best:
                    s.best, s.best_params = s.ema, s.params
        if s.since_best >= config.patience:
            s.converged = True
        if self.checkpoint is not None and s.step % config.checkpoint_every == 0:
            self.save()
        return loss

    def start_refinement(self) -> None:
        """End the reverse-KL stage: keep the parameters at the lowest smoothed loss (a run
        that drifted off after its best point, e.g. into a likelihood plateau, does not return
        the drifted flow) and start the refinement's optimiser."""
        s = self.state
        if s.stage != "variational":
            return
        s.params = s.best_params if np.isfinite(s.best) else s.params
        s.stage, s.opt_state = "refine", self.refine_optimizer.init(s.params)
        if self.refine_mesh is not None:  # as the refinement steps return them: one compilation
            s.params, s.opt_state = _place((s.params, s.opt_state), self.sharding)
        s.best_params = s.params  # from here on: the flow of the best refinement pool
        if self.checkpoint is not None:
            self.save()

    # --- forward KL ---

    def _refine_beta(self) -> float:
        """The tempering beta of the next round: the annealed refinement continues from the
        prior-draw start's beta (or the last round's); otherwise 1."""
        config, s = self.config, self.state
        if config.refine_anneal_ess is None or config.max_steps != 0:
            return 1.0
        return s.refine_beta[-1] if s.refine_beta else s.beta_init

    @property
    def refining(self) -> bool:
        """Whether refinement rounds are left and its stopping rules have not fired."""
        s = self.state
        return (
            s.stage == "refine"
            and s.refine_round < self.config.refine_rounds
            and not _refine.refine_done(s.refine_ess, self.config, s.refine_beta)
        )

    def refine(self) -> tuple[float, float]:
        """One forward-KL round; returns its pool's (importance ESS fraction, khat)."""
        s = self.state
        start = s.params
        s.params, s.opt_state, ess, khat, beta = _refine.refine_round(
            jax.random.fold_in(self.key_refine, s.refine_round),
            s.params,
            self.static,
            self.pool_target,
            s.opt_state,
            self.refine_optimizer,
            self.config,
            self.refine_mesh,
            self._refine_beta(),
        )
        s.refine_round += 1
        at_one = [e for e, b in zip(s.refine_ess, s.refine_beta, strict=True) if b >= 1.0]
        if beta >= 1.0 and float(ess) > max(at_one, default=-1.0):
            s.best_params = start
        s.refine_beta.append(float(beta))
        s.refine_ess.append(float(ess))
        s.refine_khat.append(float(khat))
        if self.checkpoint is not None:
            self.save()
        return float(ess), float(khat)

    # --- results ---

    def save(self) -> None:
        """Write the state to the checkpoint file (atomically)."""
        write_bytes_atomic(self.checkpoint, self.state.to_bytes(self.settings_hash))

    @property
    def flow(self) -> Transformed:
        """The fitted flow on the default device (the refinement's best pool's flow with
        `refine_keep_best`)."""
        s = self.state
        params = s.params
        if self.config.refine_keep_best and any(b >= 1.0 for b in s.refine_beta):
            params = s.best_params
        if self.sharding is not None:  # back to the default device, as a one-device fit has it
            params = jax.tree.map(
                lambda x: jnp.asarray(np.asarray(x)) if eqx.is_array(x) else x, params
            )
        return eqx.combine(params, self.static)

    def info(self) -> FitInfo:
        """What happened so far."""
        s = self.state
        return FitInfo(
            losses=np.asarray(s.losses),
            betas=np.asarray(s.betas),
            steps=s.step,
            converged=s.converged,
            final_loss=float(s.best) if np.isfinite(s.best) else float("nan"),
            skipped_steps=s.skipped,
            wall_time_s=time.perf_counter() - self.t0,
            resumed_from=self.step0,
            devices=1 if self.sharding is None else len(self.sharding.mesh.devices),
            refine_ess=np.asarray(s.refine_ess),
            refine_khat=np.asarray(s.refine_khat),
            refine_beta=np.asarray(s.refine_beta),
            surrogate=self.surrogate,
        )

    def run(
        self, *, progress: bool = True, callback: Callable[[int, float], None] | None = None
    ) -> tuple[Transformed, FitInfo]:
        """Both stages to their ends; returns (flow, FitInfo)."""
        s, config, timings = self.state, self.config, self.timings
        with _phase(timings, "train"):
            bar = None
            if progress and self.training:
                bar = _progress(config.max_steps, s.step, "flow fit")
            try:
                while self.training:
                    loss = self.step()
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.3f}", beta=f"{s.betas[-1]:.2f}")
                    if callback is not None:
                        callback(s.step, loss)
            finally:
                if bar is not None:
                    bar.close()
        if timings is not None:
            timings.count("train", steps=s.step - self.step0)
        self.start_refinement()
        with _phase(timings, "refine"):
            bar = None
            if progress and s.refine_round < config.refine_rounds:
                bar = _progress(config.refine_rounds, s.refine_round, "flow refine")
            try:
                while self.refining:
                    ess, khat = self.refine()
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(ess=f"{ess:.2f}", khat=f"{khat:.2f}")
            finally:
                if bar is not None:
                    bar.close()
        if timings is not None:
            rounds = s.refine_round - self.round0
            timings.count("refine", rounds=rounds, steps=rounds * config.refine_steps)
        return self.flow, self.info()


def fit_variational(
    key,
    target,
    n_dim: int,
    *,
    flow: Transformed | None = None,
    flow_config: FlowConfig | None = None,
    config: TrainConfig | None = None,
    init_points=None,
    checkpoint: str | pathlib.Path | None = None,
    progress: bool = True,
    callback: Callable[[int, float], None] | None = None,
    timings: PhaseTimes | None = None,
) -> tuple[Transformed, FitInfo]:
    """Fit a flow to a posterior by minimising the reverse KL divergence, then refine it on
    the forward KL divergence (`VariationalFit(...).run()`).

    Args:
        key: JAX random key (the whole run is a deterministic function of it).
        target: a `ptaflow.posterior.Posterior` (tempering acts on its likelihood; an HD
            posterior may train on its CURN surrogate, `TrainConfig.surrogate`) or any
            function z -> ln p(z) on R^n_dim (tempering scales all of it).
        n_dim: dimension of z.
        flow: a flow to start from (skips the Laplace initialisation).
        flow_config: architecture for a new flow.
        config: training options (`TrainConfig.devices` splits each step's batch over the
            GPUs of a multi-GPU node).
        init_points: (n_starts, n_dim) starting points for the Laplace search (default
            prior draws when target is a Posterior, else standard-normal draws).
        checkpoint: file to save the training state to every `checkpoint_every` steps and
            after every refinement round, and to resume from when it exists with the same
            settings.
        progress: show a progress bar with the current loss.
        callback: called as callback(step, loss) after every step (e.g. logging).
        timings: a `ptaflow.profiling.PhaseTimes` to record the phases in: "initialise"
            (Laplace or prior-draw start), "train" (reverse KL; `steps`) and "refine"
            (forward KL; `rounds`, `steps`).

    Returns:
        (trained flow on z, FitInfo).
    """
    fit = VariationalFit(
        key,
        target,
        n_dim,
        flow=flow,
        flow_config=flow_config,
        config=config,
        init_points=init_points,
        checkpoint=checkpoint,
        timings=timings,
    )
    return fit.run(progress=progress, callback=callback)
