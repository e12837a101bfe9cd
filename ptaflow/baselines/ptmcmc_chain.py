"""PTMCMCSampler chains read from disk: `load_ptmcmc_chain` and its `PtmcmcResult`.

A chain file (`chain_1.txt`) holds one row per written iteration: the parameters, then
ln posterior, ln likelihood, acceptance rate and parallel-tempering swap acceptance rate
(PTMCMCSampler `_writeToFile`). Chains written by `ptaflow.baselines.ptmcmc.run_ptmcmc` or by
any other enterprise/PTMCMCSampler run can be read; reading needs only NumPy.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np

from ..errors import DataError, ParameterError

__all__ = ["CHAIN_FILE", "PtmcmcResult", "load_ptmcmc_chain"]

#: PTMCMCSampler writes the T = 1 chain of a run without parallel tempering here.
CHAIN_FILE = "chain_1.txt"


@dataclasses.dataclass(frozen=True)
class PtmcmcResult:
    """A PTMCMCSampler chain after burn-in (arrays read-only).

    Attributes:
        samples: (n_samples, n_dim) parameter values, columns in `param_names` order.
        param_names: names of the columns.
        log_likelihood: (n_samples,) ln L as the sampler computed it (enterprise's constant).
        log_posterior: (n_samples,) ln L + ln prior (unnormalised posterior).
        acceptance_rate: fraction of proposed jumps accepted over the whole run.
        wall_time_s: sampling wall time [s] (nan for a chain read from disk).
        n_iterations: sampler iterations the whole chain (burn-in included) represents.
        outdir: the folder holding the chain.
    """

    samples: np.ndarray
    param_names: tuple[str, ...]
    log_likelihood: np.ndarray
    log_posterior: np.ndarray
    acceptance_rate: float
    wall_time_s: float
    n_iterations: int
    outdir: pathlib.Path

    @property
    def n_dim(self) -> int:
        return len(self.param_names)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def _check_order(order: Sequence[str], available: Sequence[str], what: str) -> tuple[str, ...]:
    order = tuple(order)
    if len(set(order)) != len(order) or sorted(order) != sorted(available):
        missing = sorted(set(available) - set(order))
        unknown = sorted(set(order) - set(available))
        raise ParameterError(
            f"{what} must be a permutation of the chain's parameters {tuple(available)}; "
            f"missing {missing}, unknown {unknown}"
        )
    return order


def load_ptmcmc_chain(
    path: str | pathlib.Path,
    *,
    param_names: Sequence[str] | None = None,
    burn_fraction: float = 0.25,
    thin: int = 10,
) -> PtmcmcResult:
    """Read a PTMCMCSampler chain file (`chain_1.txt`).

    Columns: the n_dim parameters, then ln posterior, ln likelihood, acceptance rate and
    parallel-tempering swap acceptance rate (PTMCMCSampler `_writeToFile`).

    Args:
        path: the chain file, or the folder holding `chain_1.txt`.
        param_names: names of the parameter columns, in file order; default the lines of
            `pars.txt` beside the chain (written by enterprise_extensions and `run_ptmcmc`).
        burn_fraction: fraction of the rows dropped from the start, in [0, 1).
        thin: iterations per row (PTMCMCSampler's `thin`, default 10), for `n_iterations`.

    Raises:
        DataError: the file is missing, unreadable, or its column count does not match the
            names (the message names the file).
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / CHAIN_FILE
    if not path.is_file():
        raise DataError(f"PTMCMC chain {path} does not exist")
    if not 0.0 <= burn_fraction < 1.0:
        raise ParameterError(f"burn_fraction={burn_fraction!r}: expected a value in [0, 1)")
    if param_names is None:
        pars = path.parent / "pars.txt"
        if not pars.is_file():
            raise DataError(
                f"PTMCMC chain {path}: no pars.txt beside it to name the columns; pass "
                "param_names=[...] in column order"
            )
        names = tuple(line.strip() for line in pars.read_text().splitlines() if line.strip())
        source = f"{pars}"
    else:
        names = tuple(str(n) for n in param_names)
        source = "param_names"
    if len(set(names)) != len(names):
        raise DataError(f"PTMCMC chain {path}: parameter names repeat in {source}: {names}")
    try:
        chain = np.loadtxt(path, ndmin=2)
    except ValueError as exc:
        raise DataError(f"PTMCMC chain {path} could not be read as a table: {exc}") from exc
    if chain.shape[0] == 0:
        raise DataError(f"PTMCMC chain {path} holds no rows")
    n_dim = len(names)
    if chain.shape[1] != n_dim + 4:
        raise DataError(
            f"PTMCMC chain {path} has {chain.shape[1]} columns; expected {n_dim + 4} = "
            f"{n_dim} parameters (from {source}) + ln posterior, ln likelihood, acceptance, "
            "PT acceptance"
        )
    keep = chain[int(burn_fraction * chain.shape[0]) :]
    return PtmcmcResult(
        samples=_readonly(keep[:, :n_dim]),
        param_names=names,
        log_likelihood=_readonly(keep[:, n_dim + 1]),
        log_posterior=_readonly(keep[:, n_dim]),
        acceptance_rate=float(chain[-1, n_dim + 2]),
        wall_time_s=float("nan"),
        n_iterations=int((chain.shape[0] - 1) * thin),
        outdir=path.parent,
    )


def _reorder(result: PtmcmcResult, order: tuple[str, ...], **changes) -> PtmcmcResult:
    idx = [result.param_names.index(n) for n in order]
    return dataclasses.replace(
        result, samples=_readonly(result.samples[:, idx]), param_names=order, **changes
    )
