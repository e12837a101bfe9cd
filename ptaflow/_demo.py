"""`ptaflow demo`: the likelihood on the shipped NG15 data, with its speed on this machine."""

from __future__ import annotations

import time

import equinox as eqx
import jax
import numpy as np

from ._paths import DATA_DIR
from .constants import YEAR_S
from .data import load_reduced
from .likelihood import make_likelihood, make_refit_likelihood


def _rate(fn, thetas, min_seconds: float = 1.0) -> tuple[float, float]:
    """(compile seconds, evaluations per second) of a jitted batched function."""
    t0 = time.perf_counter()
    fn(thetas).block_until_ready()
    compile_s = time.perf_counter() - t0
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        fn(thetas).block_until_ready()
        n += 1
    return compile_s, n * thetas.shape[0] / (time.perf_counter() - t0)


def run_demo(n_psr: int = 10, batch: int = 1024, seed: int = 0) -> None:
    """Print ln L of CURN and HD on the n_psr best NG15 pulsars and its batched speed."""
    jax.config.update("jax_enable_x64", True)
    path = DATA_DIR / "ng15_48psr_reduced_k30.h5"
    full = load_reduced(path)
    reduced = full.best(n_psr)
    print(f"NG15 (48-pulsar subset) reduced statistics: {path.name}")
    print(
        f"{reduced.n_psr} pulsars chosen by the ranking rule (WRMS / span), "
        f"T = {reduced.tspan / YEAR_S:.2f} yr:"
    )
    print("  " + ", ".join(reduced.names))
    rng = np.random.default_rng(seed)
    for corr in ("curn", "hd"):
        like = make_likelihood(reduced, correlation=corr)
        # Red noise from its prior, common process at the NG15 SMBHB-prior mean.
        rn = np.column_stack(
            [rng.uniform(-20, -11, (batch, n_psr)), rng.uniform(0, 7, (batch, n_psr))]
        )
        rn = rn.reshape(batch, 2, n_psr).transpose(0, 2, 1).reshape(batch, 2 * n_psr)
        gw = np.tile([-14.6, 13.0 / 3.0], (batch, 1))
        thetas = jax.numpy.asarray(np.column_stack([rn, gw]))
        f = eqx.filter_jit(like.batch)
        compile_s, rate = _rate(f, thetas)
        lnl = float(like(thetas[0]))
        print(
            f"{corr.upper():4s} ln L = {lnl:.4f} at the first prior draw "
            f"(gw_log10_A = -14.6, gamma = 13/3); {rate:,.0f} evaluations/s in batches of "
            f"{batch} on {jax.devices()[0].platform} (compiled in {compile_s:.1f} s)"
        )
    refit = make_refit_likelihood()
    print(
        f"refit (NG15 67-pulsar HD free spectrum, 14 frequencies): ln L(log10_A = -14.6, "
        f"gamma = 13/3) = {float(refit(np.array([-14.6, 13.0 / 3.0]))):.4f}"
    )
