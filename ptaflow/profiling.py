"""Where a fit's time goes, and keeping compiled code between runs.

* `PhaseTimes`: an optional recorder that `fit_posterior`, `fit_variational` and
  `ptaflow.evaluation.evaluate_model` fill with the wall time, JAX compilations and work counts
  (training steps, refinement rounds) of each phase of a fit:

      times = PhaseTimes()
      fit = fit_posterior(post, timings=times)
      times.to_dict()   # {"initialise": {"wall_s": ..., "compile_s": ..., "compiles": ...}, ...}

  Compilations are counted with `jax.monitoring` (the duration events JAX records when it
  traces, lowers and compiles a function); a compilation served from the persistent cache
  counts too, with the seconds it took to read.
* `use_compilation_cache`: JAX's persistent compilation cache in a directory, so that a
  second run of the same fits in a new process reads its compiled code from disk instead of
  compiling again. The `ptaflow compare` command turns it on; Python users call it first
  thing. The directory is `PTAFLOW_JAX_CACHE` if set (`off` disables it), else
  `$XDG_CACHE_HOME/ptaflow/jax` (default `~/.cache/ptaflow/jax`).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import threading
import time

__all__ = [
    "PhaseTimes",
    "compile_stats",
    "default_cache_dir",
    "use_compilation_cache",
    "CACHE_ENV",
]

#: Environment variable naming the persistent compilation cache directory ("off": none).
CACHE_ENV = "PTAFLOW_JAX_CACHE"

_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_BACKEND = "/jax/core/compile/backend_compile_duration"
_HIT = "/jax/compilation_cache/cache_hits"
_MISS = "/jax/compilation_cache/cache_misses"

_lock = threading.Lock()
_stats = {"trace_s": 0.0, "lower_s": 0.0, "compile_s": 0.0, "compiles": 0, "cache_hits": 0}
_stats["cache_misses"] = 0
_listening = False


def _on_duration(event: str, duration: float, **_kwargs) -> None:
    with _lock:
        if event == _TRACE:
            _stats["trace_s"] += duration
        elif event == _LOWER:
            _stats["lower_s"] += duration
        elif event == _BACKEND:
            _stats["compile_s"] += duration
            _stats["compiles"] += 1


def _on_event(event: str, **_kwargs) -> None:
    with _lock:
        if event == _HIT:
            _stats["cache_hits"] += 1
        elif event == _MISS:
            _stats["cache_misses"] += 1


def _listen() -> None:
    global _listening
    if _listening:
        return
    import jax.monitoring

    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    jax.monitoring.register_event_listener(_on_event)
    _listening = True


def compile_stats() -> dict:
    """This process's JAX compilation totals since counting began (the first `PhaseTimes` or
    call of this function): seconds tracing (`trace_s`), lowering (`lower_s`) and compiling
    or reading from the persistent cache (`compile_s`), compilations (`compiles`), persistent
    cache hits and misses."""
    _listen()
    with _lock:
        return dict(_stats)


class PhaseTimes:
    """Wall seconds, JAX compilations and work counts per named phase (accumulated).

    Phases may nest (the compilations of the inner one count in the outer one too). Pass an
    instance as `timings=` to the fitting functions; read it with `to_dict()`.
    """

    def __init__(self) -> None:
        _listen()
        self._phases: dict[str, dict] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        """Time the enclosed block as phase `name` (added to earlier blocks of that name)."""
        before = compile_stats()
        t0 = time.perf_counter()
        try:
            yield self
        finally:
            wall = time.perf_counter() - t0
            after = compile_stats()
            rec = self._phases.setdefault(
                name, {"wall_s": 0.0, "compile_s": 0.0, "trace_s": 0.0, "compiles": 0}
            )
            rec["wall_s"] += wall
            for k in ("compile_s", "trace_s", "compiles"):
                rec[k] += after[k] - before[k]

    def count(self, name: str, **counts: int) -> None:
        """Add work counts (e.g. steps=, rounds=) to phase `name`."""
        rec = self._phases.setdefault(
            name, {"wall_s": 0.0, "compile_s": 0.0, "trace_s": 0.0, "compiles": 0}
        )
        for k, v in counts.items():
            rec[k] = rec.get(k, 0) + v

    def to_dict(self) -> dict[str, dict]:
        """{phase: {"wall_s", "compile_s", "trace_s", "compiles", counts...}}, rounded."""
        return {
            name: {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}
            for name, rec in self._phases.items()
        }


def _phase(timings: PhaseTimes | None, name: str):
    """`timings.phase(name)`, or a no-op context when no recorder is given."""
    return contextlib.nullcontext() if timings is None else timings.phase(name)


def default_cache_dir() -> pathlib.Path | None:
    """The persistent compilation cache directory: `PTAFLOW_JAX_CACHE` if set (None when it is
    "off", "0" or empty), else `$XDG_CACHE_HOME/ptaflow/jax` (`~/.cache/ptaflow/jax`)."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return (
            None
            if env.strip().lower() in ("", "0", "off", "none", "false")
            else (pathlib.Path(env).expanduser())
        )
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "ptaflow" / "jax"


def use_compilation_cache(
    path: str | os.PathLike | None = None, *, min_compile_time_s: float = 0.0
) -> pathlib.Path | None:
    """Keep JAX's compiled code on disk so that later processes skip compiling it again.

    Call it before the first compilation. Entries are keyed by the computation, the JAX
    version and the device, so a stale entry is never used; the directory can be deleted at
    any time.

    Args:
        path: cache directory (default `default_cache_dir()`, which honours
            PTAFLOW_JAX_CACHE; with PTAFLOW_JAX_CACHE=off and no path nothing is changed).
        min_compile_time_s: compilations faster than this are not stored (JAX's default of
            1 s would leave out most of a refit model's functions: a seed-10 refit
            comparison compiles ~400, most in tens of milliseconds, ~30 s in all).

    Returns:
        The directory in use, or None when the cache is switched off.
    """
    import jax

    directory = pathlib.Path(path).expanduser() if path is not None else default_cache_dir()
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
