"""Likelihood speed: ptaflow (JAX) against enterprise on the same NANOGrav 15-yr pulsars.

Prints one JSON object per line per case (correlation x pulsars x batch x mode) on stdout;
progress goes to stderr. See benchmarks/README.md for the options and every field.

    python benchmarks/likelihood.py                    # all cases, enterprise side by side
    python benchmarks/likelihood.py --quick            # smoke test, well under a minute on 2 cores
    python benchmarks/likelihood.py --no-enterprise    # e.g. on a GPU machine without enterprise

ptaflow cases: CURN or HD (`make_likelihood`) on the `ReducedPTA.best(n)` pulsars of the shipped
reduced NG15 file (all of them when n is the file's pulsar count); "value" times ln L, and
"value_and_grad" times ln L with its gradient for every parameter vector
(`jax.value_and_grad` mapped over the batch). Batch 1 is the unbatched call; larger batches
run `like.batch(thetas, chunk_size)` (and the same chunked map for gradients), with the chunk
size bounding memory. Each function is compiled once per case (time reported as compile_s),
called once to warm up, then timed with `block_until_ready` until --min-seconds have passed or
--max-repeats calls were made. A case whose full batch would overrun --max-case-seconds is timed
on fewer evaluations of the same chunked shape (batch_timed < batch); nothing is extrapolated.

enterprise baseline: enterprise_extensions `model_2a` (CURN) / `model_3a` (HD) on the same
pulsars read with `FeatherPulsar.read_feather`, fixed white noise from noise_dict_15yr.json,
30 red-noise and 14 common-process frequencies on the same span T as the reduced file; its
per-call rate of `pta.get_lnlikelihood(x)` over prior draws is the baseline of every row.

The ptaflow cases run in a child process watched by this one: XLA's CPU runtime has been seen
to stop inside a computation (jaxlib 0.10: block_until_ready never returned, all threads idle).
A case that stalls is reported from the calls completed before the stall, or retried once in a
fresh process, or printed with "skipped" and the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pathlib
import queue
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(REPO))

N_RN, N_GW = 30, 14  # NANOGrav defaults: red-noise and common-process frequencies
#: Uniform prior ranges of the parameter draws (enterprise_extensions defaults), by name suffix.
PRIOR_RANGES = {
    "red_noise_log10_A": (-20.0, -11.0),
    "red_noise_gamma": (0.0, 7.0),
    "gw_log10_A": (-18.0, -11.0),
    "gw_gamma": (0.0, 7.0),
}
#: Working memory per evaluation in units of the factorised matrices' bytes (measured with
#: XLA's memory_analysis on CPU: ~2 for values, ~5-7 for values and gradients; rounded up).
MEMORY_FACTOR = {"value": 3.0, "value_and_grad": 10.0}
COMPILE_ALLOWANCE_S = 600.0  # wait this long for a compilation before declaring a stall
N_CHECK = 8  # prior draws on which ln L is compared with enterprise
#: Targets: batched CURN, 10 pulsars, >= 50 x enterprise on a CPU;
#: on a GPU, batched 10-pulsar CURN >= 2e6 and HD >= 3e5 evaluations per second.
CPU_RATIO_TARGET = 50.0
GPU_RATE_TARGET = {"curn": 2e6, "hd": 3e5}
#: Batched value_and_grad: at most this many values' time (`grad_cost`, 10 pulsars, batch > 1),
#: and on a GPU at least these rates.
GRAD_COST_TARGET = 3.0
GPU_GRAD_RATE_TARGET = {"curn": 5e5, "hd": 1.2e5}


def _parse(argv):
    p = argparse.ArgumentParser(
        description="ptaflow likelihood speed against enterprise; one JSON object per case.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n-psr", type=int, nargs="+", help="pulsar counts [default 10 48; quick 10]")
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes [1 1024 16384; quick 1 64]")
    p.add_argument("--correlations", nargs="+", choices=("curn", "hd"), default=["curn", "hd"])
    p.add_argument(
        "--modes",
        nargs="+",
        choices=("value", "value_and_grad"),
        default=["value", "value_and_grad"],
    )
    p.add_argument(
        "--devices",
        nargs="+",
        default=["1"],
        help="split each batched case over this many devices, one row per value: integers or "
        "'all' (every GPU; on a CPU every core, presented to JAX as CPU devices)",
    )
    p.add_argument("--no-enterprise", action="store_true", help="skip the enterprise baseline")
    p.add_argument("--data", type=pathlib.Path, default=REPO / "data" / "ng15_48psr_reduced_k30.h5")
    p.add_argument(
        "--shared",
        type=pathlib.Path,
        default=REPO.parent / "shared" / "data" / "ng15",
        help="folder of NG15 Feather pulsars and noise_dict_15yr.json (enterprise baseline)",
    )
    p.add_argument("--quick", action="store_true", help="small batches, short timing (smoke test)")
    p.add_argument(
        "--max-case-seconds", type=float, help="budget per case, warm-up included [60; quick 5]"
    )
    p.add_argument("--min-seconds", type=float, help="timed seconds to aim for [1.5; quick 0.2]")
    p.add_argument("--max-repeats", type=int, help="most timed calls per case [1000; quick 50]")
    p.add_argument(
        "--memory-gb",
        type=float,
        help="working memory per chunk [2 on CPU, 40%% of GPU memory; quick 0.05 so that the "
        "chunked path runs]",
    )
    p.add_argument("--chunk-size", type=int, help="fix the chunk size instead of --memory-gb")
    p.add_argument(
        "--stall-seconds",
        type=float,
        help="a step stalls when it takes this long beyond 2x its expected time [30; quick 15]",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--enterprise-threads", type=int, default=1, help="BLAS threads of the enterprise baseline"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run the ptaflow cases
    p.add_argument("--enterprise-worker", help=argparse.SUPPRESS)  # internal: the baseline
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "n_psr": [10] if quick else [10, 48],
        "batches": [1, 64] if quick else [1, 1024, 16384],
        "max_case_seconds": 5.0 if quick else 60.0,
        "min_seconds": 0.2 if quick else 1.5,
        "max_repeats": 50 if quick else 1000,
        "memory_gb": 0.05 if quick else None,  # None: decided by the worker from the device
        "stall_seconds": 15.0 if quick else 30.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.batches) < 1 or min(args.n_psr) < 1:
        p.error("--batches and --n-psr must be positive")
    args.batches = sorted(set(args.batches))  # ascending: each case's timing sizes the next
    for d in args.devices:
        if d != "all" and not (d.isdigit() and int(d) >= 1):
            p.error(f"--devices {d}: expected a positive integer or 'all'")
    args.devices = [d if d == "all" else int(d) for d in dict.fromkeys(args.devices)]
    return args


def _prior_draws(names, n, rng) -> np.ndarray:
    """(n, len(names)) uniform prior draws, columns in the order of `names`."""
    lo, hi = np.array(
        [next(r for k, r in PRIOR_RANGES.items() if name.endswith(k)) for name in names]
    ).T
    return lo + (hi - lo) * rng.random((n, len(names)))


def _case_name(correlation, n_psr, batch, mode, devices=1):
    name = f"{correlation}-{n_psr}psr-b{batch}-{mode}"
    return name if devices == 1 else f"{name}-d{devices}"


# ----------------------------------------------------------- enterprise baseline (child process)


def _enterprise_baselines(args, groups, names_by_n, tspan, tmpdir) -> dict:
    """Per-call rate of enterprise's ln L for every (correlation, n_psr) group.

    Runs in a child process whose BLAS uses --enterprise-threads threads: multi-threaded
    OpenBLAS on a small, shared CPU makes enterprise's small Cholesky factorisations erratic
    (seconds instead of milliseconds per call); a sampler would run it single-threaded.
    """
    spec = {
        "shared": str(args.shared),
        "groups": [[c, n, list(names_by_n[n])] for c, n in groups],
        "tspan": tspan,
        "seed": args.seed,
        "min_seconds": args.min_seconds,
        "max_repeats": args.max_repeats,
        "max_case_seconds": args.max_case_seconds,
        "out": str(tmpdir),
    }
    path = tmpdir / "enterprise-spec.json"
    path.write_text(json.dumps(spec))
    threads = str(args.enterprise_threads)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
    env["MKL_NUM_THREADS"] = threads
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--enterprise-worker", str(path)]
    rc = subprocess.run(cmd, env=env, stdout=sys.stderr, cwd=REPO).returncode
    if rc != 0:
        raise SystemExit(
            f"the enterprise baseline failed (status {rc}, see above); enterprise and "
            "enterprise_extensions must be importable (pip install ptaflow[enterprise]) and "
            "--shared must hold the NG15 Feather files; or pass --no-enterprise"
        )
    out = json.loads((tmpdir / "enterprise.json").read_text())
    for base in out.values():
        base["enterprise_blas_threads"] = args.enterprise_threads
    return {(c, n): out[f"{c}-{n}"] for c, n in groups}


def _enterprise_worker(spec_path) -> int:
    spec = json.loads(pathlib.Path(spec_path).read_text())
    shared, out_dir = pathlib.Path(spec["shared"]), pathlib.Path(spec["out"])
    import enterprise
    from enterprise.pulsar import FeatherPulsar
    from enterprise_extensions import models

    wanted = max((names for _, _, names in spec["groups"]), key=len)
    psrs = {n: FeatherPulsar.read_feather(str(shared / f"{n}.feather")) for n in wanted}
    noisedict = json.loads((shared / "noise_dict_15yr.json").read_text())
    build = {"curn": models.model_2a, "hd": models.model_3a}
    rng = np.random.default_rng(spec["seed"] + 1)
    out = {}
    for corr, n_psr, names in spec["groups"]:
        t0 = time.perf_counter()
        pta = build[corr](
            [psrs[n] for n in names],
            noisedict=noisedict,
            n_rnfreqs=N_RN,
            n_gwbfreqs=N_GW,
            Tspan=spec["tspan"],
        )
        build_s = time.perf_counter() - t0
        params = list(pta.param_names)
        for x in _prior_draws(params, 2, rng):  # warm-up: the first calls fill caches
            pta.get_lnlikelihood(x)
        times, draws, values = [], [], []
        while True:
            x = _prior_draws(params, 1, rng)[0]
            t0 = time.perf_counter()
            lnl = pta.get_lnlikelihood(x)
            times.append(time.perf_counter() - t0)
            if len(draws) < N_CHECK:
                draws.append(x)
                values.append(lnl)
            total = sum(times)
            enough = total >= spec["min_seconds"] and len(times) >= 3
            if enough or len(times) >= spec["max_repeats"] or total >= spec["max_case_seconds"]:
                break
        check = out_dir / f"enterprise-{corr}-{n_psr}.npz"
        np.savez(check, names=np.array(params), draws=np.array(draws), lnl=np.array(values))
        out[f"{corr}-{n_psr}"] = {
            "enterprise_evals_per_s": len(times) / total,
            "enterprise_n_calls": len(times),
            "enterprise_timed_s": total,
            "enterprise_build_s": build_s,
            "enterprise_version": enterprise.__version__,
            "check_file": str(check),
        }
        print(
            f"enterprise {corr} {n_psr} psr: {1e3 * total / len(times):.2f} ms per call "
            f"({len(times)} calls)",
            file=sys.stderr,
            flush=True,
        )
    (out_dir / "enterprise.json").write_text(json.dumps(out))
    return 0


# ---------------------------------------------------------------------- ptaflow cases (worker)


def _emit(**event):
    print(json.dumps(event), flush=True)


def _device_info(jax):
    dev = jax.devices()[0]
    name = dev.device_kind
    if dev.platform == "cpu":
        with contextlib.suppress(OSError):
            for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        name = f"{name} ({len(os.sched_getaffinity(0))} cores)"
    return {"device": name, "platform": dev.platform}


def _blas_threads() -> int | None:
    """Most threads of any loaded BLAS (jaxlib's CPU LAPACK kernels call SciPy's OpenBLAS)."""
    try:
        import scipy.linalg  # noqa: F401
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    threads = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(threads, default=None)


def _memory_bytes(jax, spec_gb) -> float:
    if spec_gb is not None:
        return spec_gb * 1e9
    dev = jax.devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return 0.4 * stats["bytes_limit"]
    return 2e9


def _chunk_size(like, mode, batch, memory_bytes, fixed) -> int:
    """Rows vectorised at once: the largest power of two whose working memory fits."""
    if fixed:
        return min(batch, fixed)
    matrices = like.n_psr * (2 * N_RN) ** 2
    if like.correlation == "hd":
        matrices += (like.n_psr * 2 * N_GW) ** 2
    per_eval = MEMORY_FACTOR[mode] * 8 * matrices
    return min(batch, 2 ** max(0, int(math.floor(math.log2(max(memory_bytes / per_eval, 1))))))


def _functions(jax, mode, devices):
    """(single, batched) functions of (like, thetas) for one mode; chunk is a Python int."""
    import functools

    from ptaflow.devices import map_rows

    def single(like, theta):
        return like(theta) if mode == "value" else jax.value_and_grad(like)(theta)

    def batched(like, thetas, chunk):
        if mode == "value":
            return like.batch(thetas, chunk_size=chunk, devices=devices)
        return map_rows(jax.value_and_grad(like), thetas, chunk, devices)

    return single, lambda chunk: functools.partial(batched, chunk=chunk)


def _finite(jax, out) -> bool:
    return bool(all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(out)))


def _compile(jax, fn, like, x):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(like, x).compile()
    return compiled, time.perf_counter() - t0


def _run_case(jax, cfg, like, case, estimates, checks) -> None:
    """Time one case, reporting progress as events (see _Watch for their use)."""
    t_case = time.perf_counter()
    corr, n_psr, batch, mode = case["correlation"], case["n_psr"], case["batch"], case["mode"]
    devices = case.get("devices", 1)
    name = _case_name(**case)
    key = f"{corr}-{n_psr}-{mode}-{devices}"
    budget = cfg["max_case_seconds"]
    rng = np.random.default_rng([cfg["seed"], zlib.crc32(name.encode())])
    n_devices = len(jax.local_devices()) if devices == "all" else devices
    single, batched = _functions(jax, mode, None if devices == 1 else devices)
    chunk = _chunk_size(like, mode, batch, cfg["memory_bytes"], cfg["chunk_size"])
    _emit(ev="begin", case=name, expect_s=None)
    note = None
    if batch > 1 and key not in estimates:  # size the case from a small timed probe
        n_probe = min(batch, chunk, 8 * n_devices)
        x = jax.device_put(_prior_draws(like.param_names, n_probe, rng))
        probe, _ = _compile(jax, batched(n_probe), like, x)
        _emit(ev="probe", case=name, expect_s=budget)
        jax.block_until_ready(probe(like, x))
        t0 = time.perf_counter()
        jax.block_until_ready(probe(like, x))
        estimates[key] = (time.perf_counter() - t0) / n_probe
    n_run = batch
    est = estimates.get(key)
    if est is not None and 2 * est * batch > budget:  # warm-up + one call would overrun
        n_fit = int(budget / (2 * est))
        if n_fit < 1:
            _emit(
                ev="skip",
                case=name,
                reason=f"one evaluation takes ~{est:.3g} s (measured on smaller batches), more "
                f"than half of --max-case-seconds={budget:g}",
            )
            return
        n_run = chunk * (n_fit // chunk) if n_fit >= chunk else 2 ** int(math.log2(n_fit))
        chunk = min(chunk, n_run)
        note = (
            f"the full batch would take ~{est * batch:.3g} s per call (from smaller batches); "
            f"timed {n_run} of {batch} evaluations per call in the same chunked shape"
        )
    thetas = _prior_draws(like.param_names, n_run, rng)
    x = jax.device_put(thetas[0] if batch == 1 else thetas)
    fn = single if batch == 1 else batched(chunk)
    compiled, compile_s = _compile(jax, fn, like, x)
    mem = compiled.memory_analysis()
    temp_mb = None if mem is None else mem.temp_size_in_bytes / 1e6
    _emit(
        ev="compiled",
        case=name,
        compile_s=compile_s,
        compiled_temp_mb=temp_mb,
        chunk_size=None if batch == 1 else chunk,
        n_devices=n_devices,
        batch_timed=n_run,
        note=note,
        expect_s=budget if est is None else est * n_run,
    )
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(like, x))
    warmup_s = time.perf_counter() - t0
    _emit(ev="warmup", case=name, warmup_s=warmup_s, finite=_finite(jax, out), expect_s=warmup_s)
    timed, n_rep, last_emit = 0.0, 0, time.perf_counter()
    while True:
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(like, x))
        dt = time.perf_counter() - t0
        timed, n_rep = timed + dt, n_rep + 1
        done = (
            timed >= cfg["min_seconds"]
            or n_rep >= cfg["max_repeats"]
            or warmup_s + timed + dt > budget
        )
        if done or n_rep == 1 or time.perf_counter() - last_emit > 0.5:
            _emit(ev="calls", case=name, n_repeats=n_rep, timed_s=timed, expect_s=dt)
            last_emit = time.perf_counter()
        if done:
            break
    estimates[key] = timed / (n_rep * n_run)
    end = {"ev": "end", "case": name}
    check = checks.get(f"{corr}-{n_psr}")
    if check and batch == 1 and mode == "value":  # ln L against enterprise at the same draws
        data = np.load(check)
        order = [list(data["names"]).index(p) for p in like.param_names]
        ours = np.array([float(compiled(like, jax.device_put(d[order]))) for d in data["draws"]])
        diff = ours - data["lnl"]
        end.update(lnl_minus_enterprise=float(np.mean(diff)), lnl_offset_spread=float(np.ptp(diff)))
    _emit(**end, wall_s=time.perf_counter() - t_case)


def _worker(spec_path) -> int:
    spec = json.loads(pathlib.Path(spec_path).read_text())
    cfg = spec["config"]
    if any(case.get("devices", 1) != 1 for case in spec["cases"]):
        # XLA runs a computation on one CPU core: present the cores as CPU devices (on a GPU
        # machine this adds CPU devices and changes nothing else).
        os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(len(os.sched_getaffinity(0))))
    import jax

    import ptaflow

    ptaflow.limit_blas_threads()  # JAX's CPU LAPACK kernels call SciPy's OpenBLAS: one thread

    jax.config.update("jax_enable_x64", True)  # PTA ln L ~ 1e5 needs float64
    from ptaflow.data import load_reduced
    from ptaflow.likelihood import make_likelihood

    _emit(
        ev="device",
        jax_version=jax.__version__,
        ptaflow_version=ptaflow.__version__,
        blas_threads=_blas_threads(),
        **_device_info(jax),
    )
    cfg["memory_bytes"] = _memory_bytes(jax, cfg["memory_gb"])
    reduced = load_reduced(cfg["data"])
    estimates, likes = dict(spec["estimates"]), {}
    for case in spec["cases"]:
        corr, n_psr = case["correlation"], case["n_psr"]
        if (corr, n_psr) not in likes:
            subset = reduced if n_psr == reduced.n_psr else reduced.best(n_psr)
            likes[corr, n_psr] = make_likelihood(subset, correlation=corr, n_rn=N_RN, n_gw=N_GW)
        print(f"ptaflow {_case_name(**case)}", file=sys.stderr, flush=True)
        _run_case(jax, cfg, likes[corr, n_psr], case, estimates, spec["checks"])
    return 0


# --------------------------------------------------------------- watching the worker (parent)


class _Watch:
    """Run the ptaflow cases in child processes, restarting one that stalls or dies."""

    def __init__(self, args, cases, baselines, tmpdir):
        self.args, self.pending, self.baselines, self.tmpdir = args, list(cases), baselines, tmpdir
        self.estimates, self.checks, self.attempts = {}, {}, {}
        self.device, self.failed = None, 0
        self.value_rates = {}  # (correlation, n_psr, batch, devices) -> values per second
        from ptaflow.results import _git_revision

        self.commit, self.dirty = _git_revision()

    def run(self):
        while self.pending:
            self._one_worker()

    def _spec(self) -> pathlib.Path:
        a = self.args
        cfg = {
            k: getattr(a, k)
            for k in (
                "max_case_seconds",
                "min_seconds",
                "max_repeats",
                "memory_gb",
                "chunk_size",
                "seed",
            )
        }
        cfg["data"] = str(a.data)
        checks = {f"{c}-{n}": b["check_file"] for (c, n), b in self.baselines.items()}
        spec = {"config": cfg, "cases": self.pending, "estimates": self.estimates, "checks": checks}
        path = self.tmpdir / f"spec-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(spec))
        return path

    def _one_worker(self):
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", str(self._spec())]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
        lines: queue.Queue = queue.Queue()

        def pump():
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        state, wait = {}, COMPILE_ALLOWANCE_S
        while True:
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                proc.kill()
                proc.wait()
                self._stalled(state, wait)
                return
            if line is None:
                rc = proc.wait()
                if self.pending:
                    if self.device is None:
                        raise SystemExit(f"the benchmark worker failed to start (status {rc})")
                    self.failed += 1
                    self._finish(state, skipped=f"the worker process exited with status {rc}")
                return
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:  # a library printed to stdout
                sys.stderr.write(line)
                continue
            kind = ev.pop("ev")
            expect = ev.pop("expect_s", None)
            wait = COMPILE_ALLOWANCE_S if expect is None else 2 * expect + self.args.stall_seconds
            if kind == "device":
                self.device = ev
            elif kind == "begin":
                state = {}
            elif kind == "skip":
                self._finish(state, skipped=ev["reason"])
                state = {}
            else:
                ev.pop("case")
                state.update(ev)
                if kind == "end":
                    self._finish(state)
                    state = {}

    def _stalled(self, state, wait):
        case = self.pending[0]
        name = _case_name(**case)
        msg = f"no progress for {wait:.0f} s"
        print(f"{name}: {msg}; worker restarted", file=sys.stderr, flush=True)
        if state.get("n_repeats"):
            self._finish(
                state,
                note=f"the computation then stalled ({msg}); rate from the "
                f"{state['n_repeats']} timed calls completed before",
            )
            return
        self.attempts[name] = self.attempts.get(name, 0) + 1
        if self.attempts[name] >= 2:
            self.failed += 1
            self._finish(state, skipped=f"stalled twice ({msg}) before a timed call completed")

    def _finish(self, state, skipped=None, note=None):
        case = self.pending.pop(0)
        for key in ("lnl_minus_enterprise", "lnl_offset_spread"):
            if key in state:
                self.checks.setdefault((case["correlation"], case["n_psr"]), {})[key] = state[key]
        row = self._row(case, state, skipped, note)
        if row["evals_per_s"]:
            key = f"{case['correlation']}-{case['n_psr']}-{case['mode']}-{case.get('devices', 1)}"
            self.estimates[key] = 1.0 / row["evals_per_s"]
        print(json.dumps(row), flush=True)

    def _row(self, case, state, skipped, note):
        corr, n_psr, batch, mode = case["correlation"], case["n_psr"], case["batch"], case["mode"]
        n_rep = state.get("n_repeats") if not skipped else None
        rate = n_rep * state["batch_timed"] / state["timed_s"] if n_rep else None
        base = self.baselines.get((corr, n_psr), {})
        ent = base.get("enterprise_evals_per_s")
        ratio = rate / ent if rate and ent else None
        platform = (self.device or {}).get("platform")
        same = (corr, n_psr, batch, state.get("n_devices", case.get("devices", 1)))
        if mode == "value" and rate:
            self.value_rates[same] = rate
        value_rate = self.value_rates.get(same) if mode == "value_and_grad" else None
        grad_cost = value_rate / rate if value_rate and rate else None
        target = meets = None
        if batch > 1 and mode == "value" and n_psr == 10:
            if platform == "cpu" and corr == "curn":
                target = {"metric": "ratio", "min": CPU_RATIO_TARGET}
                meets = None if ratio is None else ratio >= CPU_RATIO_TARGET
            elif platform in ("gpu", "cuda"):
                target = {"metric": "evals_per_s", "min": GPU_RATE_TARGET[corr]}
                meets = None if rate is None else rate >= GPU_RATE_TARGET[corr]
        elif batch > 1 and mode == "value_and_grad" and n_psr == 10:
            if platform in ("gpu", "cuda"):
                target = {"metric": "evals_per_s", "min": GPU_GRAD_RATE_TARGET[corr]}
                meets = None if rate is None else rate >= GPU_GRAD_RATE_TARGET[corr]
            else:
                target = {"metric": "grad_cost", "max": GRAD_COST_TARGET}
                meets = None if grad_cost is None else grad_cost <= GRAD_COST_TARGET
        check = self.checks.get((corr, n_psr), {})
        notes = [n for n in (state.get("note"), note) if n]
        row = {
            "case": _case_name(**case),
            "correlation": corr,
            "n_psr": n_psr,
            "batch": batch,
            "mode": mode,
            "devices": state.get("n_devices", case.get("devices", 1)),
            "evals_per_s": rate,
            "enterprise_evals_per_s": ent,
            "ratio": ratio,
            "grad_cost": grad_cost,
            "target": target,
            "meets_target": meets,
            "batch_timed": state.get("batch_timed") if n_rep else None,
            "chunk_size": state.get("chunk_size"),
            "n_repeats": n_rep,
            "n_evals_timed": n_rep * state["batch_timed"] if n_rep else None,
            "timed_s": state.get("timed_s") if n_rep else None,
            "compile_s": state.get("compile_s"),
            "warmup_s": state.get("warmup_s"),
            "wall_s": state.get("wall_s"),
            "compiled_temp_mb": state.get("compiled_temp_mb"),
            "finite": state.get("finite"),
            "lnl_minus_enterprise": check.get("lnl_minus_enterprise"),
            "lnl_offset_spread": check.get("lnl_offset_spread"),
            "enterprise_n_calls": base.get("enterprise_n_calls"),
            "enterprise_timed_s": base.get("enterprise_timed_s"),
            "enterprise_version": base.get("enterprise_version"),
            "enterprise_blas_threads": base.get("enterprise_blas_threads"),
            "device": (self.device or {}).get("device"),
            "platform": platform,
            "jax_version": (self.device or {}).get("jax_version"),
            "ptaflow_version": (self.device or {}).get("ptaflow_version"),
            "commit": self.commit,
            "dirty": self.dirty,
            "blas_threads": (self.device or {}).get("blas_threads"),
            "x64": True,
            "n_rn": N_RN,
            "n_gw": N_GW,
            "quick": self.args.quick,
            "load_avg_1min": os.getloadavg()[0],
            "note": "; ".join(notes) or None,
        }
        if skipped:
            row["skipped"] = skipped
        return row


def main(argv=None) -> int:
    args = _parse(argv)
    if args.worker:
        return _worker(args.worker)
    if args.enterprise_worker:
        return _enterprise_worker(args.enterprise_worker)
    from ptaflow.data import load_reduced

    reduced = load_reduced(args.data)
    if max(args.n_psr) > reduced.n_psr:
        raise SystemExit(f"--n-psr {max(args.n_psr)}: {args.data} holds {reduced.n_psr} pulsars")
    names_by_n = {
        n: reduced.names if n == reduced.n_psr else reduced.best(n).names for n in args.n_psr
    }
    groups = [(c, n) for c in args.correlations for n in args.n_psr]
    cases = [
        {"correlation": c, "n_psr": n, "batch": b, "mode": m, "devices": d}
        for c, n in groups
        for m in args.modes
        for b in args.batches
        for d in (args.devices if b > 1 else [1])
    ]
    with tempfile.TemporaryDirectory(prefix="ptaflow-bench-") as tmp:
        tmpdir = pathlib.Path(tmp)
        baselines = {}
        if not args.no_enterprise:
            baselines = _enterprise_baselines(args, groups, names_by_n, reduced.tspan, tmpdir)
        watch = _Watch(args, cases, baselines, tmpdir)
        watch.run()
    return 1 if watch.failed else 0


if __name__ == "__main__":
    sys.exit(main())
