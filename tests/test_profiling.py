"""Phase timings and the persistent compilation cache (in child processes, so that the test
session's own JAX configuration and the user's cache directory are never touched)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from ptaflow.profiling import CACHE_ENV, PhaseTimes, default_cache_dir

_SCRIPT = """
import json
import jax, jax.numpy as jnp
from ptaflow.profiling import compile_stats, use_compilation_cache
where = use_compilation_cache(min_compile_time_s=0.0)
compile_stats()  # start counting
f = jax.jit(lambda x: jnp.linalg.cholesky(x @ x.T + 3.0 * jnp.eye(x.shape[0])))
f(jnp.ones((40, 40))).block_until_ready()
print(json.dumps({"dir": str(where), **compile_stats()}))
"""


def _child(env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_reads_compiled_code_from_the_cache(tmp_path):
    env = {**os.environ, CACHE_ENV: str(tmp_path / "jax")}
    first, second = _child(env), _child(env)
    assert first["dir"] == str(tmp_path / "jax") and any((tmp_path / "jax").iterdir())
    assert first["compiles"] >= 1 and first["cache_hits"] == 0
    assert second["cache_hits"] >= 1 and second["cache_misses"] == 0


def test_cache_off_and_default_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, "off")
    assert default_cache_dir() is None
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == pathlib.Path(tmp_path) / "ptaflow" / "jax"
    env = {**os.environ, CACHE_ENV: "off"}
    assert _child(env)["dir"] == "None"


def test_phase_times_accumulate_and_count():
    times = PhaseTimes()
    for _ in range(2):
        with times.phase("a"):
            pass
    times.count("a", steps=3)
    times.count("a", steps=2)
    d = times.to_dict()["a"]
    assert d["steps"] == 5 and d["wall_s"] >= 0 and d["compiles"] == 0
