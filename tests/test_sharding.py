"""Data-parallel flow training (`TrainConfig.devices`) against the one-device run.

Ground truth: the same fit on the default device. The batch is drawn from the same key
whatever the device count, so a run on a one-device mesh, checkpointed and resumed on four
devices, must reproduce the default loss trace up to the order of floating-point sums; XLA's
own record of the likelihood input's sharding (taken when the step is compiled) shows that
each of the four devices evaluated a quarter of the batch. XLA must be told to expose 4 CPU
devices before JAX starts, so the comparison runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ptaflow.errors import ParameterError
from ptaflow.flows import TrainConfig, fit_variational

N_DEVICES = 4

# Runs in a fresh interpreter with 4 host devices; prints one JSON line.
_SCRIPT = r"""
import dataclasses
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from ptaflow.errors import ParameterError
from ptaflow.flows import FlowConfig, TrainConfig, fit_variational, make_flow

N_DIM, N = 5, 128
rng = np.random.default_rng(0)
A = rng.normal(size=(N_DIM, N_DIM))
COV = A @ A.T / N_DIM + 0.5 * np.eye(N_DIM)  # correlations up to 0.5, condition number 4
MEAN = rng.normal(size=N_DIM)
PREC = jnp.asarray(np.linalg.inv(COV))
SMALL = FlowConfig(flow_layers=1, nn_width=16, knots=6)
seen = []


def log_p(z):
    # Called under vmap: z is the whole (N, N_DIM) batch as far as sharding goes; XLA reports
    # the sharding it chose for it when the training step is compiled.
    jax.debug.inspect_array_sharding(z, callback=seen.append)
    d = z - MEAN
    return -0.5 * d @ PREC @ d


start = make_flow(jax.random.key(1), N_DIM, config=SMALL)
points = jnp.asarray(rng.multivariate_normal(MEAN, COV, size=64))
cfg = TrainConfig(
    max_steps=120, num_samples=N, warmup_steps=20, temper_steps=50, patience=10**6,
    checkpoint_every=60, refine_rounds=0,
)


class Interrupt(Exception):
    pass


def stop_at_70(step, loss):
    if step == 70:
        raise Interrupt


def fit(devices, **kwargs):
    config = dataclasses.replace(cfg, devices=devices)
    return fit_variational(
        jax.random.key(2), log_p, N_DIM, flow=start, flow_config=SMALL, config=config,
        progress=False, **kwargs
    )


def shardings():
    out = [[len(s.device_set), list(s.shard_shape((N, N_DIM)))] for s in seen]
    seen.clear()
    return out


def summary(flow, info):
    leaves = [x for x in jax.tree_util.tree_leaves(flow) if isinstance(x, jax.Array)]
    return {
        "losses": info.losses.tolist(),
        "devices": info.devices,
        "resumed_from": info.resumed_from,
        "flow_devices": sorted({len(x.sharding.device_set) for x in leaves}),
        "log_q": np.asarray(jax.jit(jax.vmap(flow.log_prob))(points)).tolist(),
    }


out = {"n_devices": len(jax.devices())}
out["default"] = summary(*fit(None))
out["default"]["batch_shardings"] = shardings()
# A one-device-mesh run stopped after step 70 (last checkpoint: step 60), resumed on four.
ckpt = pathlib.Path(sys.argv[1]) / "fit.ckpt"
try:
    fit(1, checkpoint=ckpt, callback=stop_at_70)
except Interrupt:
    pass
one_shardings = shardings()
out["resumed"] = summary(*fit(4, checkpoint=ckpt))
out["resumed"]["batch_shardings"] = {"one": one_shardings, "four": shardings()}
errors = {}
for name, config in (
    ("too_many", TrainConfig(num_samples=N, devices=8)),
    ("all_not_dividing", TrainConfig(num_samples=6, devices="all")),
):
    try:
        fit_variational(jax.random.key(0), log_p, N_DIM, flow=start, config=config, progress=False)
    except ParameterError as exc:
        errors[name] = str(exc)
out["errors"] = errors

# Forward-KL refinement split over the devices (pool values and the minibatch gradients).


def gauss(z):
    d = z - MEAN
    return -0.5 * d @ PREC @ d


refined = {}
for devices in (None, 4):
    config = dataclasses.replace(
        cfg, max_steps=30, refine_rounds=3, refine_pool=200, refine_steps=4, refine_batch=64,
        devices=devices,
    )
    flow, info = fit_variational(
        jax.random.key(4), gauss, N_DIM, flow=start, config=config, progress=False
    )
    refined[str(devices)] = {
        "ess": info.refine_ess.tolist(),
        "log_q": np.asarray(jax.jit(jax.vmap(flow.log_prob))(points)).tolist(),
    }
try:
    TrainConfig(num_samples=N, refine_batch=30, devices=4)
except ParameterError as exc:
    refined["not_dividing"] = str(exc)
out["refine"] = refined

# Likelihood batches split over the devices: 3 shipped pulsars (CURN and HD), 10 rows (not a
# multiple of 4: padded), and the refit likelihood.
from ptaflow._paths import DATA_DIR
from ptaflow.data import load_reduced
from ptaflow.likelihood import make_likelihood, make_refit_likelihood
from ptaflow.posterior import DEFAULT_REDUCED

reduced = load_reduced(DATA_DIR / DEFAULT_REDUCED).best(3)
lik = {}
for corr in ("curn", "hd"):
    like = make_likelihood(reduced, correlation=corr)
    th = jnp.asarray(np.column_stack([
        rng.uniform(-17, -13, (10, 3)), rng.uniform(1, 6, (10, 3)),
        rng.uniform(-16, -14, 10), rng.uniform(2, 5, 10),
    ])[:, [0, 3, 1, 4, 2, 5, 6, 7]])
    rows = {}
    for devices in (None, 4, "all", 3):
        f = jax.jit(lambda t, d=devices, like=like: like.batch(t, chunk_size=2, devices=d))
        g = jax.jit(jax.grad(lambda t, d=devices, like=like: like.batch(t, devices=d).sum()))
        rows[str(devices)] = [np.asarray(f(th)).tolist(), np.asarray(g(th)).tolist()]
    lik[corr] = rows
refit = make_refit_likelihood()
th = jnp.asarray(np.column_stack([rng.uniform(-16, -14, 10), rng.uniform(2, 5, 10)]))
lik["refit"] = {str(d): [np.asarray(refit.batch(th, devices=d)).tolist()] for d in (None, 4)}
try:
    make_refit_likelihood().batch(th, devices=8)
except ParameterError as exc:
    lik["too_many"] = str(exc)
out["likelihood"] = lik

# NUTS chains spread over the devices: 6 chains on 3 of the 4 devices (the most that divide 6).
from ptaflow.baselines.mcmc import run_nuts

chains = {}
for method in ("sequential", "parallel"):
    res = run_nuts(
        jax.random.key(3), gauss, jnp.zeros(N_DIM), num_chains=6, num_warmup=60, num_samples=40,
        chain_method=method,
    )
    chains[method] = np.asarray(res.samples).tolist()
out["nuts"] = chains
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N_DEVICES}"
    )
    env["JAX_PLATFORMS"] = "cpu"  # the forced device count applies to the host platform
    folder = tmp_path_factory.mktemp("sharding")  # for the checkpoint
    command = [sys.executable, "-c", _SCRIPT, str(folder)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_four_devices_really_split_the_batch(runs):
    assert runs["n_devices"] == N_DEVICES
    default, resumed = runs["default"], runs["resumed"]
    assert default["devices"] == 1 and resumed["devices"] == N_DEVICES
    # The compiled step reports the likelihood's input batch (128, 5): on one device whole,
    # on four devices split into 32-row blocks, one per device.
    parts = (default["batch_shardings"], *resumed["batch_shardings"].values())
    assert all(parts)
    assert all(s == [1, [128, 5]] for s in default["batch_shardings"])
    assert all(s == [1, [128, 5]] for s in resumed["batch_shardings"]["one"])
    assert all(s == [N_DEVICES, [32, 5]] for s in resumed["batch_shardings"]["four"])
    # The returned flow lives on one device, as after a default fit.
    assert default["flow_devices"] == resumed["flow_devices"] == [1]


def test_sharded_runs_reproduce_the_default_losses(runs):
    default = np.asarray(runs["default"]["losses"])
    resumed = np.asarray(runs["resumed"]["losses"])
    # Steps 0-59 ran on a one-device mesh, 60-119 on four devices after a resume.
    assert runs["resumed"]["resumed_from"] == 60
    assert default.shape == resumed.shape == (120,)
    assert np.all(np.isfinite(default)) and np.ptp(default) > 1  # it really trained
    # Same draws, same parameters: the batch sums differ only in order, ~ eps 2.2e-16 x
    # |term| ~10 x log2(128) = 2e-14 per step; even added up over 120 steps that is < 1e-11
    # (Adam's normalised steps do not amplify it on this smooth Gaussian target).
    np.testing.assert_allclose(resumed, default, rtol=0, atol=1e-11)
    # The final flows agree on fixed points to the same accuracy.
    np.testing.assert_allclose(
        runs["resumed"]["log_q"], runs["default"]["log_q"], rtol=0, atol=1e-11
    )


def test_refinement_over_devices_equals_one_device(runs):
    ref = runs["refine"]
    assert len(ref["None"]["ess"]) == 3 and np.all(np.asarray(ref["None"]["ess"]) > 0)
    # Same pools, same resampled minibatches; the gradient means differ only in summation
    # order (~1e-16 relative), which 12 Adam steps do not amplify beyond ~1e-12.
    np.testing.assert_allclose(ref["4"]["ess"], ref["None"]["ess"], rtol=1e-10, atol=0)
    np.testing.assert_allclose(ref["4"]["log_q"], ref["None"]["log_q"], rtol=0, atol=1e-9)
    assert "devices=4 does not divide refine_batch=30" in ref["not_dividing"]


def test_likelihood_batches_split_over_devices_give_the_same_values(runs):
    lik = runs["likelihood"]
    for corr in ("curn", "hd", "refit"):
        rows = lik[corr]
        values = {k: np.asarray(v[0]) for k, v in rows.items()}
        assert values["None"].shape == (10,) and np.all(np.isfinite(values["None"]))
        # Each row is evaluated by the same per-row code on whichever device holds it: the
        # same numbers, except that a row may sit in a batch of another size (10 vs 3 rows:
        # the batched CURN factorisation and LAPACK differ at ~1e-12 relative of ln L ~ 1e4).
        for k, v in values.items():
            np.testing.assert_allclose(v, values["None"], rtol=1e-11, atol=0, err_msg=k)
        if corr != "refit":
            grads = {k: np.asarray(v[1]) for k, v in rows.items()}
            for k, g in grads.items():
                np.testing.assert_allclose(g, grads["None"], rtol=1e-9, atol=1e-9, err_msg=k)
    assert "devices=8: this machine has 4 cpu device(s)" in lik["too_many"]


def test_parallel_nuts_chains_equal_sequential_ones(runs):
    seq, par = (np.asarray(runs["nuts"][m]) for m in ("sequential", "parallel"))
    assert seq.shape == par.shape == (6, 40, 5)
    assert np.ptp(seq[:, :, 0]) > 0.5  # the chains moved
    # Each chain runs the same program from the same key and start on whichever device holds
    # it (its tree depth its own): the same numbers up to compiled-code rounding.
    np.testing.assert_allclose(par, seq, rtol=0, atol=1e-10)


def test_unavailable_or_non_dividing_device_counts_are_refused_at_fit_time(runs):
    errors = runs["errors"]
    assert "devices=8" in errors["too_many"] and "has 4 cpu device(s)" in errors["too_many"]
    assert "4 devices" in errors["all_not_dividing"]
    assert "num_samples=6" in errors["all_not_dividing"]


@pytest.mark.parametrize(
    ("devices", "match"),
    [
        (3, r"devices=3 does not divide num_samples=256"),
        (0, r"devices=0: expected None, 'all' or a positive integer"),
        (True, r"devices=True: expected"),
        ("two", r"devices='two': expected"),
    ],
)
def test_bad_device_counts_raise(devices, match):
    with pytest.raises(ParameterError, match=match):
        TrainConfig(num_samples=256, devices=devices)


def test_more_devices_than_this_machine_has_raises_before_training():
    n = len(jax.local_devices()) + 1
    config = TrainConfig(num_samples=8 * n, refine_batch=8 * n, devices=n)
    with pytest.raises(ParameterError, match=rf"devices={n}: this machine has {n - 1} "):
        fit_variational(jax.random.key(0), lambda z: -0.5 * z @ z, 2, config=config)


def test_use_cpu_cores_after_jax_started_says_how_to_set_it():
    from ptaflow.devices import use_cpu_cores

    jax.devices()  # the backend is running
    n = len(jax.devices("cpu")) + 1
    with pytest.raises(ParameterError, match=rf"JAX_NUM_CPU_DEVICES={n} in the environment"):
        use_cpu_cores(n)
    for bad in (0, True, 2.0):
        with pytest.raises(ParameterError, match="expected a positive integer"):
            use_cpu_cores(bad)


def test_batches_over_missing_devices_are_refused_with_the_way_to_get_them():
    from ptaflow.likelihood import make_refit_likelihood

    like = make_refit_likelihood()
    thetas = np.tile([-15.0, 4.0], (6, 1))
    n = len(jax.local_devices()) + 1
    with pytest.raises(ParameterError, match=rf"devices={n}: this machine has {n - 1} cpu"):
        like.batch(thetas, devices=n)
    with pytest.raises(ParameterError, match="devices=0: expected None, 'all' or a positive"):
        like.batch(thetas, devices=0)
    # One device: the plain path, the same values as without the option.
    np.testing.assert_array_equal(like.batch(thetas, devices="all"), like.batch(thetas))


def _memory_mappings() -> int:
    with open("/proc/self/maps") as fh:
        return sum(1 for _ in fh)


def test_release_compiled_code_frees_the_executables_mappings():
    import jax.numpy as jnp

    from ptaflow.devices import release_compiled_code

    jax.jit(lambda x: jnp.cos(x) + 1)(1.0)  # the JIT's first use maps memory of its own
    release_compiled_code()
    fns = [jax.jit(lambda x, k=k: jnp.sin(x) * k + k) for k in range(40)]
    start = _memory_mappings()
    for f in fns:
        f(1.0).block_until_ready()
    compiled = _memory_mappings()
    release_compiled_code()
    added, freed = compiled - start, compiled - _memory_mappings()
    # Measured on XLA's CPU JIT: 3 mappings per executable this small, all freed again. The
    # 10 % slack leaves room for JAX's own threads mapping memory meanwhile.
    assert added >= 2 * len(fns), f"compiling {len(fns)} functions added {added} mappings"
    assert freed >= 0.9 * added, f"{added} mappings added by compiling, only {freed} freed"
    # The functions still work: they compile again.
    assert float(fns[7](0.0)) == 7.0
