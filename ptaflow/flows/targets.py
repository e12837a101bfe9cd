"""Target evaluation at many points, in compiled chunks of one shape.

A target is a `ptaflow.posterior.Posterior` (or another `AbstractPosterior`; tempering scales
its likelihood part) or any function z -> ln p(z). Every evaluation of a target at many points
(prior draws, refinement pools, importance samples, chains) goes through one compiled function
of `TARGET_CHUNK` rows, so a target compiles once whatever the number of points.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..devices import device_mesh, fixed_chunks, map_rows
from ..errors import ParameterError
from ..posterior import AbstractPosterior

__all__ = ["TARGET_CHUNK", "split_target", "target_parts"]


def split_target(target) -> Callable:
    """z -> (tempered part, untempered part); a posterior tempers only its likelihood."""
    if isinstance(target, AbstractPosterior):
        return target.log_prob_parts
    if callable(target):
        return lambda z: (target(z), jnp.zeros(()))
    raise ParameterError(
        f"target {target!r}: expected a ptaflow Posterior or a function z -> ln p(z)"
    )


#: Rows per compiled target evaluation: every evaluation of a target at many points (prior
#: draws, refinement pools, importance samples, chains) goes through one function of this
#: shape, compiled once per target.
TARGET_CHUNK = 4096


@eqx.filter_jit
def _target_parts_chunk(target, z, devices=None):
    split = split_target(target)
    if devices is None:
        return jax.vmap(split)(z)
    return map_rows(split, z, None, devices)


def target_parts(
    target, z, *, chunk: int = TARGET_CHUNK, devices: int | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(tempered part, untempered part) of the target at the rows of z (host arrays).

    For a `Posterior`, (ln L, ln pi + ln |det dtheta/dz|); for a function, (ln p, 0). Rows
    go through one compiled function of `chunk` rows (the last chunk padded), so a target
    compiles once whatever the number of points: prior draws, refinement pools and
    importance samples share it. With `devices` (as `TrainConfig.devices`), each chunk is
    split into one equal block per device (`ptaflow.devices.map_rows`); the values do not
    depend on it.
    """
    # As a device count, so that "all" and its number share one compiled function.
    mesh = None if devices is None else device_mesh(devices, what="devices")
    n_dev = None if mesh is None or mesh.size == 1 else mesh.size
    return fixed_chunks(lambda x: _target_parts_chunk(target, x, n_dev), np.asarray(z), chunk)
