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

`release_compiled_code()` frees the compiled code of fits a long-lived process has finished.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from .errors import ParameterError
from .settings import DEVICES_RULE, _check

__all__ = [
    "usable_cores",
    "use_cpu_cores",
    "check_devices",
    "device_mesh",
    "map_rows",
    "release_compiled_code",
]

#: Name of the mesh axis along which batches are split.
AXIS = "batch"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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
        n = usable_cores()
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


def check_devices(devices: int | str | None, *, what: str) -> None:
    """Raise ParameterError unless `devices` is None, "all" or a positive integer (whether the
    machine has that many is checked by `device_mesh`, where the work runs)."""
    _check(what, devices, DEVICES_RULE)


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
    check_devices(devices, what=what)
    if devices is None:
        return None
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


def map_rows(
    fn: Callable[[jax.Array], jax.Array],
    thetas: jax.Array,
    chunk_size: int | None,
    devices: int | str | None = None,
):
    """fn (one parameter vector -> array or tuple of arrays) on every row of thetas.

    Args:
        fn: a JAX function of one row, e.g. a likelihood or `jax.value_and_grad` of one.
        thetas: (n_rows, n_dim).
        chunk_size: rows vectorised at once (`jax.lax.map` over chunks) to bound memory;
            default all of them. With `devices`, per device.
        devices: None, "all" or n (see `device_mesh`): split the rows into one equal block per
            device (the last block padded with copies of the first row, whose values are
            dropped). The values do not depend on it.

    Returns:
        fn's outputs stacked along a leading axis of length n_rows.
    """
    thetas = jnp.asarray(thetas)
    if thetas.ndim != 2:
        raise ParameterError(f"thetas has shape {thetas.shape}; expected (n_samples, n_dim)")

    def local(rows):
        if chunk_size is None or chunk_size >= rows.shape[0]:
            return jax.vmap(fn)(rows)
        return jax.lax.map(fn, rows, batch_size=int(chunk_size))

    mesh = device_mesh(devices, what="devices")
    if mesh is None or mesh.size == 1:
        return local(thetas)
    n_rows, n_dev = thetas.shape[0], mesh.size
    per_device = -(-n_rows // n_dev)
    pad = per_device * n_dev - n_rows
    if pad:  # equal blocks: repeat the first row, drop its values afterwards
        thetas = jnp.concatenate([thetas, jnp.broadcast_to(thetas[:1], (pad, thetas.shape[1]))])

    def block(all_rows):
        # Replicated in and out (XLA cannot lay out unevenly split arrays such as the
        # gradient of n_rows % n_dev != 0 rows): each device takes its block of rows and
        # every device ends with all values.
        start = jax.lax.axis_index(AXIS) * per_device
        rows = jax.lax.dynamic_slice_in_dim(all_rows, start, per_device)
        return jax.lax.all_gather(local(rows), AXIS, tiled=True)

    # check_vma=False: every row is independent, and the batched CURN factorisation's
    # never-taken NaN branches are built from constants, not from the per-device rows.
    split = jax.shard_map(
        block, mesh=mesh, in_specs=PartitionSpec(), out_specs=PartitionSpec(), check_vma=False
    )
    return jax.tree.map(lambda out: out[:n_rows], split(thetas))


def fixed_chunks(fn: Callable, rows: np.ndarray, chunk: int) -> tuple[np.ndarray, ...]:
    """fn on the rows of a host array in chunks of one shape (the last one padded with copies
    of its first row, whose values are dropped), so that fn compiles once whatever the number
    of rows. fn returns an array or a tuple of arrays with a leading row axis; the result is
    always a tuple of host arrays."""
    outs = []
    for s in range(0, rows.shape[0], chunk):
        block = rows[s : s + chunk]
        n = block.shape[0]
        padded = np.concatenate([block, np.repeat(block[:1], chunk - n, axis=0)])
        out = fn(jnp.asarray(padded))
        outs.append(tuple(np.asarray(o)[:n] for o in (out if isinstance(out, tuple) else (out,))))
    return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))


def release_compiled_code() -> None:
    """Free the compiled XLA executables that JAX has cached in this process.

    Each executable that XLA's CPU JIT keeps alive holds memory mappings (measured on a CPU: 3
    for a tiny function, about 8 with a Cholesky solve). A long-lived process that fits many
    independent models (a comparison of many models, a batch worker running task after task, a
    test session) would otherwise accumulate them until it reaches the kernel's limit on
    mappings (`vm.max_map_count`, 65530 by default), where the next compilation aborts in LLVM
    ("Unable to allocate section memory"). Call it between independent fits; functions still in
    use just compile again.
    """
    jax.clear_caches()
    gc.collect()
