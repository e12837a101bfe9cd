"""Spreading batches of independent evaluations over several devices: GPUs, or CPU cores.

JAX runs a computation on one device. On a node with several GPUs, or on a multi-core CPU that
JAX has been asked to present as several CPU devices, splitting a batch of parameter vectors (or
a training batch of flow draws) into one block per device uses all of them at once:

- `PTALikelihood.batch(thetas, devices="all")` and `RefitLikelihood.batch(...)`;
- `TrainConfig(devices="all")` for flow training (`ptaflow.flows`).

XLA's CPU runtime runs one computation on one core. To use every core of a CPU, expose them as
CPU devices before JAX starts: `ptaflow.devices.use_cpu_cores()` first thing in a script, or
`JAX_NUM_CPU_DEVICES=8` in the environment (for the command line: `JAX_NUM_CPU_DEVICES=8
ptaflow compare ...`). Without that, a CPU is one device and `devices="all"` is one block.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh

from .errors import ParameterError

__all__ = ["use_cpu_cores", "device_mesh"]

#: Name of the mesh axis along which batches are split.
AXIS = "batch"


def use_cpu_cores(n: int | None = None) -> int:
    """Present n CPU cores (default: all this process may use) to JAX as n CPU devices.

    Must run before JAX's first computation (also before building a likelihood): the number of
    CPU devices is fixed when JAX starts its CPU backend. Equivalent to setting
    JAX_NUM_CPU_DEVICES=n in the environment.

    Returns:
        The number of CPU devices asked for.

    Raises:
        ParameterError: n is not a positive integer, or JAX has already started with another
            number of CPU devices.
    """
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError(f"use_cpu_cores: n={n!r}; expected a positive integer")
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError as exc:
        raise ParameterError(
            f"use_cpu_cores({n}): JAX has already started its CPU backend with "
            f"{len(jax.devices('cpu'))} CPU device(s). Call it before any JAX computation, or set "
            f"JAX_NUM_CPU_DEVICES={n} in the environment before starting Python."
        ) from exc
    return int(n)


def device_mesh(
    devices: int | str | None, *, what: str, divides: tuple[str, int] | None = None
) -> Mesh | None:
    """A one-axis mesh over the first n local devices, or None for the default device.

    Args:
        devices: None (the default device), "all" (every local device) or a positive integer n.
        what: the option's name for error messages, e.g. "TrainConfig.devices".
        divides: (name, size): n must divide size (a batch split into equal blocks).

    Raises:
        ParameterError: an invalid value, more devices than this process has, or an n that
            does not divide `divides`.
    """
    if devices is None:
        return None
    if devices != "all" and (
        isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1
    ):
        raise ParameterError(
            f"{what}={devices!r}: expected None, 'all' or a positive integer number of devices"
        )
    local = jax.local_devices()
    n = len(local) if devices == "all" else int(devices)
    if n > len(local):
        raise ParameterError(
            f"{what}={n}: this machine has {len(local)} {local[0].platform} device(s); ask for "
            f"at most {len(local)}"
            + (
                " (to use several CPU cores, set JAX_NUM_CPU_DEVICES before starting Python)"
                if local[0].platform == "cpu"
                else ""
            )
        )
    if divides is not None and divides[1] % n:
        name, size = divides
        raise ParameterError(
            f"{what}={devices!r} ({n} devices) does not divide {name}={size}; each device takes "
            f"an equal share: choose {name} as a multiple of {n}"
        )
    return Mesh(np.asarray(local[:n]), (AXIS,))
