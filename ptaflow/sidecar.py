"""A helper process beside a model comparison: it checks model files ahead of the fits and
draws the per-model figures behind them.

Two parts of a refit comparison are per-model work that need not wait in line with the fits:
the numerical checks of each model file (`ptaflow.models.validate_model`, about a second each,
mostly one compilation) and each model's figures (corner plot and spectrum draws,
`ptaflow.plots.comparison.model_figure`, about a second, mostly matplotlib). On a machine
with a second core, `Sidecar` runs them in one separate Python process while the fits run in
the calling one: every model is checked while the first one fits, and each model's figures
are drawn while the next one fits.

The helper is a fresh interpreter (`python -m ptaflow.sidecar`) that reads one JSON request
per line on its standard input and answers each with a reply file. It is not a fork or a
multiprocessing child, so it never re-runs the caller's script, and it runs JAX on the CPU
so that it takes no memory on an accelerator. It only ever saves work: where it cannot
start, dies, or fails on a request for any reason other than the answer itself (a model that
fails its checks), `reply` returns None and the caller does that piece of work itself, with
the same code, so the results are those of a run without it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from .devices import usable_cores
from .errors import ModelError
from .models import load_model
from .plots.comparison import model_figure
from .results import write_bytes_atomic

__all__ = ["Sidecar"]

#: Seconds `Sidecar.reply` waits for one answer before the caller does the work itself.
WAIT_S = 600.0
#: Seconds between looks for a reply file.
_POLL_S = 0.005


class Sidecar:
    """One helper process that answers requests in the order given (see the module notes).

        side = Sidecar()
        i = side.submit("check", model="models/powerlaw.py")
        ...
        answer = side.reply(i)   # {"status": ...}, or None: do the work here
        side.close()

    Requests: "check" (model=path): the model's numerical checks; its answer has status "ok",
    or "invalid" with the `ModelError` message, and the file's `stat` ([mtime_ns, size]) as
    checked. "figures" (the arguments of
    `ptaflow.plots.comparison.model_figure`): status "ok" with the spectrum draws in the .npy
    file `draws`, or "skipped" with the reason no figure was drawn.

    Args:
        parallel: start the helper process (default: where this process may use more than
            one core). Without it every `reply` is None.
    """

    def __init__(self, *, parallel: bool | None = None) -> None:
        self._dir = pathlib.Path(tempfile.mkdtemp(prefix="ptaflow-sidecar-"))
        self._n = 0
        self._proc: subprocess.Popen | None = None
        self._log = None
        self.note = ""  # why the helper is not running, once known
        if parallel is None:
            parallel = usable_cores() > 1
        if parallel:
            self._start()

    def _start(self) -> None:
        env = dict(os.environ, JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1")
        here = str(pathlib.Path(__file__).resolve().parents[1])  # this copy of ptaflow first
        env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
        cache = _cache_dir()
        try:
            self._log = open(self._dir / "sidecar.log", "wb")
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "ptaflow.sidecar", *([cache] if cache else [])],
                stdin=subprocess.PIPE,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        except OSError as exc:
            self.note = f"the helper process did not start ({exc})"
            self._proc = None
            return
        if hasattr(os, "setpriority"):  # the lowest priority from the start, imports included
            with contextlib.suppress(OSError):  # (the helper lowers its own priority as well)
                os.setpriority(os.PRIO_PROCESS, self._proc.pid, 19)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def submit(self, kind: str, **args) -> int:
        """Queue a request; returns its number for `reply`."""
        i, self._n = self._n, self._n + 1
        if self.running:
            req = {"kind": kind, "args": args, "reply": str(self._dir / f"{i}.json")}
            try:
                self._proc.stdin.write((json.dumps(req) + "\n").encode())
                self._proc.stdin.flush()
            except OSError:  # it died: reply() says so
                pass
        return i

    def reply(self, i: int) -> dict | None:
        """The answer to request `i` once it is there, or None where the helper cannot give
        one (not running, died, failed on it, or slower than `WAIT_S`)."""
        path = self._dir / f"{i}.json"
        t0 = time.perf_counter()
        while not path.exists():
            if self._proc is None or time.perf_counter() - t0 > WAIT_S:
                return None
            if self._proc.poll() is not None:  # ended: a reply written just before counts
                if not path.exists():
                    self._stopped()
                    return None
                break
            time.sleep(_POLL_S)
        answer = json.loads(path.read_text())
        return None if answer["status"] == "error" else answer

    def _stopped(self) -> None:
        if self._proc is not None and not self.note:
            tail = (self._dir / "sidecar.log").read_bytes()[-600:].decode(errors="replace")
            self.note = f"the helper process ended with status {self._proc.returncode}"
            self.note += f": {tail.strip()}" if tail.strip() else ""

    def close(self) -> None:
        """Stop the helper and remove its files."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check(model: str) -> dict:
    path = pathlib.Path(model)
    stat = path.stat()
    checked = [stat.st_mtime_ns, stat.st_size]  # the version of the file the verdict is for
    try:
        load_model(path)
    except ModelError as exc:
        return {"status": "invalid", "message": str(exc), "stat": checked}
    return {"status": "ok", "stat": checked}


def _figures(reply: pathlib.Path, **args) -> dict:
    got = model_figure(**args)
    if isinstance(got, str):
        return {"status": "skipped", "message": got}
    draws = reply.with_suffix(".npy")
    buf = io.BytesIO()
    np.save(buf, np.asarray(got))
    write_bytes_atomic(draws, buf.getvalue())
    return {"status": "ok", "draws": str(draws)}


_HANDLERS: dict[str, Callable[..., dict]] = {
    "check": lambda reply, model: _check(model),
    "figures": _figures,
}


def _serve(lines) -> None:
    """The helper's loop: one request per line, each answered by its reply file."""
    for line in lines:
        if not line.strip():
            continue
        req = json.loads(line)
        reply = pathlib.Path(req["reply"])
        try:
            answer = _HANDLERS[req["kind"]](reply, **req["args"])
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # the caller does this piece itself
            answer = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
        write_bytes_atomic(reply, json.dumps(answer).encode())


def _cache_dir() -> str:
    """The persistent compilation cache directory this process uses ("" for none)."""
    if "jax" not in sys.modules:
        return ""
    import jax

    return jax.config.jax_compilation_cache_dir or ""


if __name__ == "__main__":
    if hasattr(os, "nice"):  # use the cores the fits leave idle, not theirs
        os.nice(19)
    if len(sys.argv) > 1:
        from .profiling import use_compilation_cache

        use_compilation_cache(sys.argv[1])
    _serve(sys.stdin)
