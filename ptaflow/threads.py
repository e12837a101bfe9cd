"""Single-threaded BLAS for JAX's CPU likelihoods.

On a CPU, jaxlib's Cholesky factorisations and triangular solves call SciPy's OpenBLAS once
per small matrix, from XLA's worker threads. A multi-threaded OpenBLAS then makes the PTA
likelihoods many times slower (Hellings-Downs, 10 pulsars, 2 cores: 35 instead of 630
evaluations per second). Importing ptaflow changes nothing in the process; the `ptaflow`
command limits OpenBLAS itself, and scripts that evaluate likelihoods on a CPU (HD above all)
should do one of:

- set ``OPENBLAS_NUM_THREADS=1`` in the environment before Python starts (this also covers
  child processes), or
- call `limit_blas_threads()` at the top of the script, or use it as a context manager
  around the computation.

The limit can be applied at any time: lowering the thread count of an OpenBLAS that has
already run multi-threaded restores the single-threaded speed.
"""

from __future__ import annotations

from .errors import ParameterError

__all__ = ["limit_blas_threads"]


def limit_blas_threads(n_threads: int = 1):
    """Limit the BLAS libraries loaded in this process (SciPy's and NumPy's OpenBLAS).

    Loads `scipy.linalg` first (its OpenBLAS is the one jaxlib's CPU LAPACK kernels call), so
    that it is limited too, then sets the thread count with threadpoolctl. A BLAS library
    loaded later is not affected. On GPU backends the limit is harmless.

    Args:
        n_threads: threads per BLAS call (default 1).

    Returns:
        The `threadpoolctl.threadpool_limits` object. Used as a context manager, the previous
        thread counts are restored when the block ends; otherwise the limit stays in force
        (`restore_original_limits()` undoes it).

    Example::

        import ptaflow as pf

        pf.limit_blas_threads()              # for the rest of the script
        with pf.limit_blas_threads():        # or for one block only
            ...
    """
    if int(n_threads) != n_threads or n_threads < 1:
        raise ParameterError(f"n_threads={n_threads!r}: expected a positive integer")
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS, so that it is limited too)
    import threadpoolctl

    return threadpoolctl.threadpool_limits(limits=int(n_threads), user_api="blas")
