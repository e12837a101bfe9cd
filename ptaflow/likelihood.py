"""PTA log-likelihoods in JAX: CURN, Hellings-Downs, and the free-spectrum refit likelihood.

All likelihoods are `equinox.Module`s holding device arrays, called on a flat float64 parameter
vector `theta` whose entries are named by `param_names` (enterprise names:
`{psr}_red_noise_log10_A`, `{psr}_red_noise_gamma` for every pulsar, then the common process's
parameters). They are pure functions of theta: jit, vmap and grad all work, and `batch`
evaluates many parameter vectors at once (compile with `equinox.filter_jit(like.batch)` or
`jax.jit(lambda t: like.batch(t))`: a Module holding arrays is not a static argument of
`jax.jit`). Enable float64 (`jax.config.update("jax_enable_x64",
True)`) before building them; ln L of a PTA is ~1e5 and needs it.

Gaussian-process likelihood on reduced data (DESIGN.md section 2; see `ptaflow.data.reduction`):

    ln L = sum_a c_a + 1/2 d^T S^-1 d - 1/2 [ln det Phi + ln det S],  S = Phi^-1 + FNF,

evaluated as ln det(I + Phi^1/2 FNF Phi^1/2) with d = FNr, which is well conditioned for any
prior variances. CURN: Phi is diagonal, one 2K x 2K Cholesky factorisation per pulsar; on a CPU,
`batch` and `jax.vmap(like)` factorise all pulsars and parameter vectors of a batch together
(see `_curn_terms`), several times faster per evaluation than single calls. HD: the
common process couples pulsars through Gamma_ab (Hellings & Downs 1983) at the K_gw lowest
frequencies only; the K_rn - K_gw uncoupled frequencies are eliminated per pulsar by a Schur
complement, leaving one (n_psr 2 K_gw)^2 system.
"""

from __future__ import annotations

import functools
import pathlib
import warnings
from collections.abc import Sequence
from typing import Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from .data.reduction import ReducedPTA
from .devices import map_rows
from .errors import DataError, ParameterError
from .spectra import powerlaw_psd

__all__ = [
    "CommonProcess",
    "PowerLawProcess",
    "hellings_downs",
    "red_noise_names",
    "PTALikelihood",
    "make_likelihood",
    "FreeSpectrumDensities",
    "load_free_spectrum_densities",
    "RefitLikelihood",
    "make_refit_likelihood",
]


class CommonProcess(Protocol):
    """What a likelihood needs of a common-process (SGWB) spectrum.

    `param_names` names the entries of the parameter vector `theta` passed to `psd`, which
    returns the one-sided timing-residual PSD S(f) [s^3] at frequencies f [Hz] and must be a
    pure JAX function. `ptaflow.models.SourceModel` satisfies it.
    """

    param_names: tuple[str, ...]

    def psd(self, f: jax.Array, theta: jax.Array) -> jax.Array: ...


class PowerLawProcess(eqx.Module):
    """Power-law common process, S(f) = A^2/(12 pi^2) f_yr^(gamma-3) f^-gamma, enterprise names."""

    prefix: str = eqx.field(static=True, default="gw")

    @property
    def param_names(self) -> tuple[str, ...]:
        return (f"{self.prefix}_log10_A", f"{self.prefix}_gamma")

    def psd(self, f, theta):
        return powerlaw_psd(f, theta[0], theta[1])


def hellings_downs(pos: np.ndarray) -> np.ndarray:
    """Hellings-Downs correlation matrix, 1 on the diagonal (pulsar term included).

    Gamma_ab = 3/2 x ln x - x/4 + 1/2, x = (1 - cos zeta_ab)/2 (Hellings & Downs 1983;
    enterprise `utils.hd_orf`).

    Args:
        pos: unit vectors to the pulsars, shape (n_psr, 3).
    """
    pos = np.asarray(pos, dtype=np.float64)
    cosz = np.clip(pos @ pos.T, -1.0, 1.0)
    x = 0.5 * (1.0 - cosz)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = 1.5 * x * np.log(x) - 0.25 * x + 0.5
    gamma[x == 0.0] = 0.5  # x ln x -> 0 for coincident directions
    np.fill_diagonal(gamma, 1.0)
    return gamma


def red_noise_names(psr_names: Sequence[str]) -> tuple[str, ...]:
    """Enterprise names of the per-pulsar power-law red-noise parameters, in theta order."""
    return tuple(
        name for p in psr_names for name in (f"{p}_red_noise_log10_A", f"{p}_red_noise_gamma")
    )


def _check_blas_threads() -> None:
    """Warn when SciPy's OpenBLAS runs several threads on a CPU backend (see ptaflow/__init__).

    JAX's CPU Cholesky and triangular solves call it once per small matrix from XLA's worker
    threads; a multi-threaded OpenBLAS makes the HD likelihood over ten times slower on two
    cores. Lowering the thread count after OpenBLAS has started does not restore the speed, so
    OPENBLAS_NUM_THREADS=1 must be set before SciPy is imported, which importing ptaflow first
    does.
    """
    if jax.default_backend() != "cpu":
        return
    import scipy.linalg  # noqa: F401  (the OpenBLAS that jaxlib's CPU LAPACK kernels call)
    import threadpoolctl

    for info in threadpoolctl.threadpool_info():
        if "scipy_openblas-" in info.get("filepath", "") and info.get("num_threads", 1) > 1:
            warnings.warn(
                f"SciPy's OpenBLAS runs {info['num_threads']} threads, which slows JAX's CPU "
                "likelihoods down many times. Set OPENBLAS_NUM_THREADS=1 in the environment, or "
                "import ptaflow before scipy.",
                RuntimeWarning,
                stacklevel=3,
            )


def _chol_logdet_quad(A, d):
    """For SPD A and vector d: (sum ln diag chol(A), |chol(A)^-1 d|^2)."""
    L = jnp.linalg.cholesky(A)
    x = jax.scipy.linalg.solve_triangular(L, d, lower=True)
    return jnp.sum(jnp.log(jnp.diagonal(L))), jnp.sum(x * x)


# --- CURN: one whitened 2K x 2K system per pulsar and parameter vector ----------------------------
#
# ln L needs, per pulsar, only ln det A and d^T A^-1 d with A = I + D FNF D, d = D FNr. On a CPU,
# jaxlib factorises a batch of small matrices one LAPACK call at a time (~30 us for 60 x 60, plus
# ~15 us for the triangular solve). `_curn_terms_blocked` instead runs one Cholesky factorisation
# for a whole block of matrices at once, batch in the last axis so that every step is a SIMD loop
# over matrices, with the forward substitution fused in; about 4x faster per matrix.

#: Block-column width of the batched Cholesky factorisation (fastest measured on a 2-core AMD EPYC).
_BLOCK_WIDTH = 6
#: Matrices per pass of the batched factorisation: its lower block-columns, ~16 kB each for
#: 2K = 60, then stay in a 1 MB L2 cache.
_CACHE_BYTES = 2**20


def _curn_terms_lapack(sq, FNF, FNr):
    """Per-pulsar (1/2 ln det A, d^T A^-1 d), A = I + sq FNF sq, d = sq FNr, via LAPACK.

    Args:
        sq: (n_samples, n_psr, m) square roots of the prior variances [s], m = 2 n_rn.
        FNF: (n_psr, m, m); FNr: (n_psr, m).

    Returns:
        Two (n_samples, n_psr) arrays.
    """
    A = sq[..., :, None] * FNF * sq[..., None, :] + jnp.eye(sq.shape[-1], dtype=sq.dtype)
    per_psr = jax.vmap(jax.vmap(_chol_logdet_quad))
    return per_psr(A, sq * FNr)


def _nans(shapes, dtype, *_):
    """The not-taken branch of `_curn_terms_blocked`'s conditionals: NaN arrays of `shapes`."""
    return tuple(jnp.full(shape, jnp.nan, dtype) for shape in shapes)


def _panel(B, r):
    """Cholesky factor of one lower block-column, batch last.

    Args:
        B: (rows, w, N) columns of the trailing matrix, its leading (w, w) block the diagonal.
        r: (rows, N) the trailing right-hand side.

    Returns:
        L (rows, w, N) the factor's columns, x (w, N) their forward-substitution entries,
        sum ln diag L (N,), and the updated right-hand side (rows - w, N).
    """
    w, N = B.shape[1], B.shape[2]
    cols, xs, half_logdet = [], [], 0.0
    for t in range(w):
        v, rt = B[t:, t], r[t]
        for u in range(t):
            v = v - cols[u][t:] * cols[u][t]
            rt = rt - cols[u][t] * xs[u]
        piv = jnp.sqrt(v[0])
        half_logdet = half_logdet + jnp.log(piv)
        col = v / piv
        cols.append(jnp.concatenate([jnp.zeros((t, N), B.dtype), col]) if t else col)
        xs.append(rt / piv)
    L, x = jnp.stack(cols, axis=1), jnp.stack(xs)
    return L, x, half_logdet, r[w:] - jnp.sum(L[w:] * x[None], axis=1)


def _rank_update(L, blocks, offsets):
    """Trailing block-columns minus L L^T: blocks[i] (rows_i, w_i, N) starts offsets[i] rows
    below L's first row."""
    out = []
    for B, off in zip(blocks, offsets, strict=True):
        rows, top = L[off:], L[off : off + B.shape[1]]
        for t in range(L.shape[1]):
            B = B - rows[:, t][:, None] * top[:, t][None, :]
        out.append(B)
    return tuple(out)


def _curn_terms_blocked(sq, F, FNr_t, width):
    """Right-looking blocked Cholesky of all A = I + sq F sq at once, batch in the last axis.

    Args:
        sq: (m, n_samples, n_psr) square roots of the prior variances [s].
        F: (m, m, n_psr) FNF; FNr_t: (m, n_psr) FNr, both with pulsars last.
        width: block-column width.

    Returns:
        (1/2 ln det A, d^T A^-1 d), each (n_samples, n_psr).

    Every step is a loop over the n_samples n_psr matrices. Each block step runs inside a
    `lax.cond` on a runtime predicate (always true: sq >= 0, and NaN compares false), which
    stops XLA from fusing a block into its several consumers and recomputing it in each; the
    other branch returns NaN. A matrix that is not positive definite gets NaN, like LAPACK's.
    """
    m, S, P = sq.shape
    N, dt = S * P, sq.dtype
    eye = jnp.eye(m, dtype=dt)

    def block(sq, F, s, e):  # rows s: of columns s:e of A, (m - s, e - s, N)
        B = sq[s:, None] * F[s:, s:e, None, :] * sq[None, s:e] + eye[s:, s:e, None, None]
        return B.reshape(m - s, e - s, N)

    starts = list(range(0, m, width))
    ends = [min(s + width, m) for s in starts]
    pred = jnp.logical_not(sq[0, 0, 0] < 0)
    r = (sq * FNr_t[:, None, :]).reshape(m, N)
    half_logdet = quad = jnp.zeros(N, dt)
    blocks = [None] * len(starts)
    for c, (s, e) in enumerate(zip(starts, ends, strict=True)):
        shapes = ((m - s, e - s, N), (e - s, N), (N,), (m - e, N))
        if c == 0:  # A's first block-column is built inside the branch, fused into its reads
            args, first = (sq, F, r), lambda sq, F, r: _panel(block(sq, F, 0, ends[0]), r)
        else:
            args, first = (blocks[c], r), _panel
        L, x, lp, r = jax.lax.cond(pred, first, functools.partial(_nans, shapes, dt), *args)
        half_logdet, quad = half_logdet + lp, quad + jnp.sum(x * x, axis=0)
        rest = range(c + 1, len(starts))
        if not rest:
            break
        offsets = [starts[i] - s for i in rest]
        nans = [(m - starts[i], ends[i] - starts[i], N) for i in rest]
        if c == 0:
            args = (L, sq, F)

            def update(L, sq, F, rest=rest, offsets=offsets):
                return _rank_update(L, [block(sq, F, starts[i], ends[i]) for i in rest], offsets)
        else:
            args = (L, tuple(blocks[c + 1 :]))

            def update(L, trailing, offsets=offsets):
                return _rank_update(L, trailing, offsets)

        new = jax.lax.cond(pred, update, functools.partial(_nans, nans, dt), *args)
        blocks[c + 1 :] = list(new)
    return half_logdet.reshape(S, P), quad.reshape(S, P)


def _curn_terms_cpu(sq, FNF, FNr):
    """`_curn_terms_blocked` over cache-sized groups of parameter vectors (zero-padded)."""
    S, P, m = sq.shape
    F, FNr_t = jnp.moveaxis(FNF, 0, -1), FNr.T
    per_group = max(1, _CACHE_BYTES // (P * m * (m + _BLOCK_WIDTH) * 4))

    def run(sq_group):
        return _curn_terms_blocked(jnp.moveaxis(sq_group, -1, 0), F, FNr_t, _BLOCK_WIDTH)

    if S <= per_group:
        return run(sq)
    n_groups = -(-S // per_group)
    pad = n_groups * per_group - S
    sq = jnp.concatenate([sq, jnp.zeros((pad, P, m), sq.dtype)]) if pad else sq
    half_logdet, quad = jax.lax.map(run, sq.reshape(n_groups, per_group, P, m))
    return half_logdet.reshape(-1, P)[:S], quad.reshape(-1, P)[:S]


@jax.custom_jvp
@jax.custom_batching.custom_vmap
def _curn_terms(sq, FNF, FNr):
    """Per-pulsar (1/2 ln det A, d^T A^-1 d) of CURN, (n_samples, n_psr) each (see above).

    Values: on a CPU, the batched factorisation for two or more parameter vectors; LAPACK for
    one (faster there: too few matrices to vectorise over) and on other platforms. `jax.vmap`
    folds the mapped axis into n_samples, so `vmap(like)` runs the batched path too.
    Derivatives: those of the LAPACK expression, as before.
    """
    if sq.shape[0] == 1:
        return _curn_terms_lapack(sq, FNF, FNr)
    return jax.lax.platform_dependent(sq, FNF, FNr, cpu=_curn_terms_cpu, default=_curn_terms_lapack)


@_curn_terms.def_vmap
def _curn_terms_vmap(axis_size, in_batched, sq, FNF, FNr):
    sq_b, fnf_b, fnr_b = in_batched
    if fnf_b or fnr_b:  # different data per mapped element (unusual): plain vmap of LAPACK
        axes = tuple(0 if b else None for b in in_batched)
        return jax.vmap(_curn_terms_lapack, in_axes=axes)(sq, FNF, FNr), (True, True)
    B, S, P, m = sq.shape
    half_logdet, quad = _curn_terms(sq.reshape(B * S, P, m), FNF, FNr)
    return (half_logdet.reshape(B, S, P), quad.reshape(B, S, P)), (True, True)


@functools.partial(_curn_terms.defjvp, symbolic_zeros=True)
def _curn_terms_jvp(primals, tangents):
    live = [i for i, t in enumerate(tangents) if not isinstance(t, SymbolicZero)]

    def lapack(*xs):
        args = list(primals)
        for i, x in zip(live, xs, strict=True):
            args[i] = x
        return _curn_terms_lapack(*args)

    if not live:
        out = _curn_terms_lapack(*primals)
        return out, jax.tree_util.tree_map(jnp.zeros_like, out)
    return jax.jvp(lapack, [primals[i] for i in live], [tangents[i] for i in live])


def _noise_only_terms(FNF, FNr, freqs, tspan, rn):
    """(n, P) per-pulsar ln L terms 1/2 d^T A^-1 d - 1/2 ln det A with red noise alone, for the
    P pulsars of FNF (P, 2K, 2K), FNr (P, 2K) at rn (n, P, 2) = (log10_A, gamma)."""
    phi = powerlaw_psd(freqs, rn[..., :1], rn[..., 1:]) / tspan  # (n, P, n_rn)
    sq = jnp.sqrt(jnp.repeat(phi, 2, axis=-1))  # sin and cos share a variance
    half_logdet, quad = _curn_terms(sq, FNF, FNr)
    return 0.5 * quad - half_logdet


class _RowBatched(eqx.Module):
    """A likelihood of one parameter vector that also evaluates many (`batch`)."""

    def batch(
        self,
        thetas: jax.Array,
        chunk_size: int | None = None,
        devices: int | str | None = None,
    ) -> jax.Array:
        """ln L at many parameter vectors, (n_samples, n_dim) -> (n_samples,).

        Args:
            thetas: parameter vectors, one per row.
            chunk_size: evaluate this many rows at a time (vectorised) to bound memory, e.g.
                for HD with many pulsars; default all at once. With `devices`, per device.
            devices: None (the default device), "all" or n: split the rows into one block per
                local device (several GPUs, or CPU cores presented as devices, see
                `ptaflow.devices`). The values do not depend on it.
        """
        return map_rows(self, thetas, chunk_size, devices)


class PTALikelihood(_RowBatched):
    """ln L(theta) of per-pulsar power-law red noise plus one common process (CURN or HD).

    Build with `make_likelihood`. Call as `like(theta)` (scalar) or `like.batch(thetas)`.
    """

    FNF: jax.Array  # (n_psr, 2 n_rn, 2 n_rn)
    FNr: jax.Array  # (n_psr, 2 n_rn)
    const: jax.Array  # ()
    freqs: jax.Array  # (n_rn,) [Hz]
    tspan: float
    orf: jax.Array | None  # (n_psr, n_psr) correlation matrix Gamma, or None for CURN
    common: CommonProcess
    psr_names: tuple[str, ...] = eqx.field(static=True)
    n_gw: int = eqx.field(static=True)

    @property
    def n_psr(self) -> int:
        return len(self.psr_names)

    @property
    def correlation(self) -> str:
        return "curn" if self.orf is None else "hd"

    @property
    def param_names(self) -> tuple[str, ...]:
        return red_noise_names(self.psr_names) + tuple(self.common.param_names)

    @property
    def n_dim(self) -> int:
        return 2 * self.n_psr + len(self.common.param_names)

    def _variances(self, theta):
        """Per-frequency GP variances S(f_k)/T [s^2]: red noise (n_psr, n_rn), common (n_gw,)."""
        rn = theta[: 2 * self.n_psr].reshape(self.n_psr, 2)
        phi_rn = powerlaw_psd(self.freqs[None, :], rn[:, :1], rn[:, 1:]) / self.tspan
        phi_gw = self.common.psd(self.freqs[: self.n_gw], theta[2 * self.n_psr :]) / self.tspan
        return phi_rn, phi_gw

    def __call__(self, theta: jax.Array) -> jax.Array:
        """ln L at one parameter vector, shape (n_dim,) -> scalar."""
        phi_rn, phi_gw = self._variances(theta)
        if self.orf is None:
            return self._curn(phi_rn, phi_gw)
        return self._hd(phi_rn, phi_gw)

    def noise_only_terms(self, rn: jax.Array) -> jax.Array:
        """Each pulsar's term of ln L with the common process switched off (no SGWB at all).

        Without the common process the likelihood factorises over pulsars, for CURN and HD
        alike: ln L_0 = const + sum_a t_a(log10_A_a, gamma_a). This is the likelihood of the
        noise-only model (see `ptaflow.noise_only`), set by the model, not by a parameter value.

        Args:
            rn: (n, n_psr, 2) per-pulsar red-noise (log10_A, gamma) at n points.

        Returns:
            (n, n_psr) terms t_a; `const` is the likelihood's constant.
        """
        return _noise_only_terms(self.FNF, self.FNr, self.freqs, self.tspan, rn)

    def noise_only(self, theta_rn: jax.Array) -> jax.Array:
        """ln L_0 of the noise-only model at red-noise parameters theta_rn, shape (2 n_psr,)
        in theta's order ({psr}_red_noise_log10_A, {psr}_red_noise_gamma per pulsar)."""
        terms = self.noise_only_terms(jnp.reshape(theta_rn, (1, self.n_psr, 2)))
        return self.const + jnp.sum(terms)

    def _curn(self, phi_rn, phi_gw):
        phi = phi_rn.at[:, : self.n_gw].add(phi_gw[None, :])
        sq = jnp.sqrt(jnp.repeat(phi, 2, axis=1))  # (n_psr, 2 n_rn), sin/cos share a variance
        half_logdet, quad = _curn_terms(sq[None], self.FNF, self.FNr)
        return self.const + 0.5 * jnp.sum(quad) - jnp.sum(half_logdet)

    def _hd(self, phi_rn, phi_gw):
        n, c = self.n_psr, 2 * self.n_gw
        # Uncoupled frequencies (k > n_gw): per-pulsar Schur complement in whitened form.
        sq_u = jnp.sqrt(jnp.repeat(phi_rn[:, self.n_gw :], 2, axis=1))  # (n, 2(n_rn - n_gw))
        Fuu = self.FNF[:, c:, c:]
        Fcu = self.FNF[:, :c, c:]
        A_u = sq_u[:, :, None] * Fuu * sq_u[:, None, :] + jnp.eye(sq_u.shape[1])
        L_u = jnp.linalg.cholesky(A_u)
        rhs = jnp.concatenate([jnp.swapaxes(Fcu, 1, 2), self.FNr[:, c:, None]], axis=2)
        rhs = rhs * sq_u[:, :, None]
        tri = jax.vmap(lambda L, b: jax.scipy.linalg.solve_triangular(L, b, lower=True))
        sol = tri(L_u, rhs)
        Y, z = sol[:, :, :c], sol[:, :, c]  # (n, 2(n_rn-n_gw), c), (n, 2(n_rn-n_gw))
        B = self.FNF[:, :c, :c] - jnp.einsum("aki,akj->aij", Y, Y)  # (n, c, c)
        b = self.FNr[:, :c] - jnp.einsum("aki,ak->ai", Y, z)  # (n, c)
        logdet_u = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L_u, axis1=1, axis2=2)))
        # Coupled frequencies: Phi_k = Gamma phi_gw(k) + diag(phi_rn(., k)) = L_k L_k^T.
        Phi = self.orf[None] * phi_gw[:, None, None] + jax.vmap(jnp.diag)(phi_rn[:, : self.n_gw].T)
        Lk = jnp.repeat(jnp.linalg.cholesky(Phi), 2, axis=0)  # (c, n, n), per column i
        # K = I + L^T B L in frequency-major order (i, a):
        # K[i,a,j,b] = delta + sum_e Lk[i,e,a] B[e,i,j] Lk[j,e,b]
        K = jnp.einsum("iea,eij,jeb->iajb", Lk, B, Lk).reshape(c * n, c * n) + jnp.eye(c * n)
        v = jnp.einsum("iea,ei->ia", Lk, b).reshape(c * n)
        half_logdet_c, quad_c = _chol_logdet_quad(K, v)
        return self.const + 0.5 * (jnp.sum(z * z) + quad_c) - 0.5 * logdet_u - half_logdet_c


def make_likelihood(
    reduced: ReducedPTA,
    common: CommonProcess | None = None,
    *,
    correlation: str = "curn",
    n_rn: int = 30,
    n_gw: int = 14,
    orf: np.ndarray | None = None,
) -> PTALikelihood:
    """Build the CURN or HD likelihood of reduced pulsar data.

    Args:
        reduced: statistics from `ptaflow.data.reduce_pta` / `load_reduced`.
        common: common-process spectrum (default: power law with enterprise names gw_log10_A,
            gw_gamma); any object with `param_names` and a pure-JAX `psd(f, theta)` [s^3].
        correlation: "curn" (uncorrelated) or "hd" (Hellings-Downs).
        n_rn: red-noise frequencies K_rn (NANOGrav default 30).
        n_gw: common-process frequencies K_gw <= K_rn (NANOGrav default 14).
        orf: optional (n_psr, n_psr) correlation matrix replacing Hellings-Downs (must be
            positive definite), for correlation="hd".
    """
    if not jax.config.jax_enable_x64:
        raise DataError(
            "PTA likelihoods need float64: call jax.config.update('jax_enable_x64', True) first"
        )
    if correlation not in ("curn", "hd"):
        raise ParameterError(f"correlation={correlation!r}: expected 'curn' or 'hd'")
    if not 1 <= n_gw <= n_rn <= reduced.n_freq:
        raise ParameterError(
            f"n_gw={n_gw}, n_rn={n_rn}: expected 1 <= n_gw <= n_rn <= {reduced.n_freq} (the "
            "frequencies in the reduced data; reduce again with a larger n_freq)"
        )
    common = PowerLawProcess() if common is None else common
    _check_blas_threads()
    orf_matrix = None
    if correlation == "hd":
        gamma = hellings_downs(reduced.pos) if orf is None else np.asarray(orf, dtype=np.float64)
        if gamma.shape != (reduced.n_psr, reduced.n_psr):
            raise ParameterError(f"orf has shape {gamma.shape}, expected {(reduced.n_psr,) * 2}")
        try:
            np.linalg.cholesky(gamma)
            orf_matrix = jnp.asarray(gamma)
        except np.linalg.LinAlgError as exc:
            raise ParameterError("the correlation matrix is not positive definite") from exc
    m = 2 * n_rn
    return PTALikelihood(
        FNF=jnp.asarray(reduced.FNF[:, :m, :m]),
        FNr=jnp.asarray(reduced.FNr[:, :m]),
        const=jnp.asarray(np.sum(reduced.const)),
        freqs=jnp.asarray(reduced.freqs[:n_rn]),
        tspan=float(reduced.tspan),
        orf=orf_matrix,
        common=common,
        psr_names=tuple(reduced.names),
        n_gw=int(n_gw),
    )


class FreeSpectrumDensities(eqx.Module):
    """Per-frequency posterior densities of a free-spectrum analysis on a regular log10 rho grid.

    rho_k^2 = S(f_k)/T with S the one-sided timing-residual PSD [s^3] (ceffyl convention,
    Lamb, Taylor & van Haasteren 2023, arXiv:2303.15442).

    Attributes:
        log10_rho_grid: (n_grid,) regular grid of log10(rho / s).
        log_density: (n_freq, n_grid) natural-log density of log10 rho at each frequency.
        freqs: (n_freq,) f_k = k/T [Hz].
        tspan: T [s].
    """

    log10_rho_grid: jax.Array
    log_density: jax.Array
    freqs: jax.Array
    tspan: float
    source: str = eqx.field(static=True, default="")


def load_free_spectrum_densities(
    path: str | pathlib.Path | None = None, *, tspan: float | None = None
) -> FreeSpectrumDensities:
    """Read ceffyl-format densities: `freqs.npy`, `log10rhogrid.npy`, `density.npy`.

    Args:
        path: the folder; default the shipped NG15 HD free spectrum (`data/ng15_ceffyl_hd`,
            67 pulsars, 30 frequencies).
        tspan: T [s]; default 1/f_1 from `freqs.npy`.
    """
    from ._paths import DATA_DIR

    folder = pathlib.Path(path) if path is not None else DATA_DIR / "ng15_ceffyl_hd"
    files = {k: folder / f"{k}.npy" for k in ("freqs", "log10rhogrid", "density")}
    for key, file in files.items():
        if not file.is_file():
            raise DataError(
                f"free-spectrum densities: {file} is missing (expected {key}.npy in {folder})"
            )
    try:
        freqs = np.load(files["freqs"])
        grid = np.load(files["log10rhogrid"])
        dens = np.load(files["density"])
    except (ValueError, OSError) as exc:
        raise DataError(f"free-spectrum densities in {folder} could not be read: {exc}") from exc
    dens = dens.reshape(-1, dens.shape[-1]) if dens.ndim == 3 else dens
    if grid.ndim != 1 or dens.shape != (freqs.shape[0], grid.shape[0]):
        raise DataError(
            f"{folder}: density shape {dens.shape}, expected (n_freq={freqs.shape[0]}, "
            f"n_grid={grid.shape[0]}) matching freqs.npy and log10rhogrid.npy"
        )
    step = np.diff(grid)
    if not np.allclose(step, step[0], rtol=1e-6, atol=0):
        raise DataError(f"{folder}: log10rhogrid.npy is not a regular grid")
    if not np.isfinite(dens).all():
        raise DataError(f"{folder}: density.npy holds non-finite log-densities")
    return FreeSpectrumDensities(
        log10_rho_grid=jnp.asarray(grid),
        log_density=jnp.asarray(dens),
        freqs=jnp.asarray(freqs),
        tspan=float(1.0 / freqs[0] if tspan is None else tspan),
        source=str(folder),
    )


class RefitLikelihood(_RowBatched):
    """Free-spectrum 'refit' likelihood: ln L = sum_k ln p_k(0.5 log10(S(f_k; theta)/T)).

    p_k is linearly interpolated on the grid; values of log10 rho outside the grid take the
    edge value (below the grid the free-spectrum posterior is flat, noise-dominated).
    """

    densities: FreeSpectrumDensities
    common: CommonProcess
    n_freq: int = eqx.field(static=True)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.common.param_names)

    @property
    def n_dim(self) -> int:
        return len(self.common.param_names)

    def __call__(self, theta: jax.Array) -> jax.Array:
        d = self.densities
        f = d.freqs[: self.n_freq]
        log10_rho = 0.5 * jnp.log10(self.common.psd(f, theta) / d.tspan)
        interp = jax.vmap(jnp.interp, in_axes=(0, None, 0))
        return jnp.sum(interp(log10_rho, d.log10_rho_grid, d.log_density[: self.n_freq]))


def make_refit_likelihood(
    common: CommonProcess | None = None,
    densities: FreeSpectrumDensities | None = None,
    *,
    n_freq: int = 14,
) -> RefitLikelihood:
    """Build the refit likelihood (default: NG15 HD free spectrum, its 14 lowest frequencies,
    as in the NANOGrav 15-yr new-physics search, arXiv:2306.16219)."""
    densities = load_free_spectrum_densities() if densities is None else densities
    n_avail = int(densities.freqs.shape[0])
    if not 1 <= n_freq <= n_avail:
        raise ParameterError(
            f"n_freq={n_freq}: expected 1..{n_avail} (frequencies in the densities)"
        )
    common = PowerLawProcess() if common is None else common
    return RefitLikelihood(densities=densities, common=common, n_freq=int(n_freq))
