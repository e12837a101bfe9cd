"""The `ptaflow` command line: parses arguments, calls the library, maps errors to exit codes."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from .batch.cli import add_batch_commands
from .errors import DataError, PtaflowError
from .profiling import use_compilation_cache
from .settings import CompareSettings, TrainConfig
from .threads import limit_blas_threads

__all__ = ["main", "EXIT_FLAGGED", "EXIT_FAILED"]


def _add_demo_command(sub) -> None:
    p = sub.add_parser("demo", help="run the default demonstration on the shipped NG15 data")
    p.add_argument("--n-psr", type=int, default=10, help="number of pulsars (default 10)")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from ._demo import run_demo

    run_demo(n_psr=args.n_psr)
    return 0


#: `ptaflow compare` exit statuses beyond 0 (every model ok, without warnings), 1 (an error
#: stopped the command) and 2 (a command-line usage error).
EXIT_FLAGGED = 3
EXIT_FAILED = 4

_COMPARE_DESCRIPTION = """\
Fit every model's posterior with a normalizing flow, estimate its evidence twice (learned
harmonic mean on exact chains, importance sampling) and print Bayes factors against a
reference model. With no arguments: the ten-model preset 'seed10' in refit mode on the
shipped NG15 free-spectrum densities. Results (JSON, CSV, HDF5, PNG) go to --out as each
model finishes; re-running skips finished models. Model names, the reference, --out and
(full mode) the data are checked before any fit."""

_COMPARE_EXIT_STATUS = f"""\
exit status:
  0  every model ok, without warnings
  1  an error stopped the command (unknown model or reference, invalid model file,
     unreadable data, --out not writable, an option the mode does not use, ...)
  2  command-line usage error
  {EXIT_FLAGGED}  no model failed, but at least one is flagged or has warnings (status with *)
  {EXIT_FAILED}  at least one model failed (the others completed)"""


def _add_compare_command(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="evidences and Bayes factors of SGWB models (default: the seed10 preset, refit)",
        description=_COMPARE_DESCRIPTION,
        epilog=_COMPARE_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("models", nargs="*", help="model names, model-file paths or presets")
    p.add_argument("--mode", choices=["refit", "full"], default="refit")
    p.add_argument(
        "--correlation",
        choices=["curn", "hd"],
        help="full mode: for models whose file declares no correlation (default curn)",
    )
    p.add_argument(
        "--pulsars",
        nargs="+",
        help="full mode: N (the N best by the ranking rule) or pulsar names (default 10)",
    )
    p.add_argument("--data", help="full mode: reduced-data HDF5 (default: shipped NG15 set)")
    p.add_argument("--reference", help="model name or file for the Bayes factors (default smbhb)")
    p.add_argument("--out", help="output folder (default runs/compare_<mode>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="flow training: max steps")
    p.add_argument("--batch", type=int, help="flow training: samples per step")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--exact", choices=["imh", "neutra"], help="exact chains (default imh: independence MH)"
    )
    p.add_argument(
        "--harmonic-flow",
        choices=["posterior", "separate"],
        help="harmonic-mean flow (default: posterior, concentrated; a separate flow where its "
        "terms have khat > 0.5)",
    )
    p.set_defaults(func=_run_compare)


def _run_compare(args) -> int:
    import dataclasses

    import jax

    jax.config.update("jax_enable_x64", True)
    from .compare import compare

    use_compilation_cache()  # PTAFLOW_JAX_CACHE=DIR or =off; default ~/.cache/ptaflow/jax
    # Options left out keep CompareSettings' defaults (so that refit mode, which refuses
    # full-mode options set away from them, never sees one the user did not give).
    given = {"correlation": args.correlation, "data": args.data, "reference": args.reference}
    if args.pulsars is not None:
        pulsars = args.pulsars
        one = len(pulsars) == 1 and pulsars[0].isdigit()
        given["pulsars"] = int(pulsars[0]) if one else tuple(pulsars)
    settings = CompareSettings(
        mode=args.mode,
        seed=args.seed,
        exact=args.exact or "imh",
        harmonic_flow=args.harmonic_flow,
        **{k: v for k, v in given.items() if v is not None},
    )
    # --steps / --batch ask for a reverse-KL stage (refit mode's default has none for one
    # or two parameters): they then apply to every model.
    train = settings.train
    if train is None and (args.steps is not None or args.batch is not None):
        train = TrainConfig(init="prior")
    if args.steps is not None:
        train = dataclasses.replace(train, max_steps=args.steps)
    if args.batch is not None:
        train = dataclasses.replace(train, num_samples=args.batch)
    settings = dataclasses.replace(settings, train=train)
    out = args.out or f"runs/compare_{args.mode}"
    table = compare(args.models or None, settings=settings, out_dir=out, plots=not args.no_plots)
    print()
    print(table)
    print(f"\nresults: {out}/comparison.json, .csv, .h5; plots: {out}/*.png")
    if any(not o.ok for o in table.outcomes):
        return EXIT_FAILED
    if any(o.status != "ok" or o.warnings for o in table.outcomes):
        return EXIT_FLAGGED
    return 0


def _add_reduce_command(sub) -> None:
    p = sub.add_parser(
        "reduce",
        help="reduce Feather pulsars to likelihood statistics (HDF5)",
        description="Read NG15-style Feather pulsars, fix the white noise, marginalise the "
        "timing model and write the Fourier-GP sufficient statistics to an HDF5 file.",
    )
    p.add_argument("source", help="folder of PSRNAME.feather files")
    p.add_argument("--out", required=True, help="HDF5 file to write")
    p.add_argument("--names", nargs="+", help="pulsar names to keep (default: all)")
    p.add_argument("--list-file", help="file with one pulsar name per line")
    p.add_argument("--noise-dict", help="white-noise JSON (default: each file's own)")
    p.add_argument("--n-freq", type=int, default=30, help="Fourier frequencies (default 30)")
    p.add_argument("--tspan", type=float, help="T [s] (default: span of the pulsars)")
    p.set_defaults(func=_run_reduce)


def _run_reduce(args) -> int:
    from .data import load_noise_dict, load_pulsars, reduce_pta, select_pulsars
    from .data.pulsars import _repeated_name

    names = args.names
    if names and (twice := _repeated_name(names)) is not None:
        raise DataError(f"pulsar names repeat: {twice!r} is given twice in --names")
    if args.list_file:
        names = select_pulsars(
            [p.stem for p in pathlib.Path(args.source).glob("*.feather")],
            list_file=args.list_file,
        )
    pulsars = load_pulsars(args.source, names=names)
    noise = load_noise_dict(args.noise_dict) if args.noise_dict else None
    reduced = reduce_pta(pulsars, noise, n_freq=args.n_freq, tspan=args.tspan, cache=args.out)
    print(
        f"wrote {args.out}: {reduced.n_psr} pulsars, {reduced.n_freq} frequencies, "
        f"T = {reduced.tspan:.1f} s"
    )
    return 0


def _add_models_commands(sub) -> None:
    """`ptaflow models ...`: list, show and check SGWB model files."""
    p = sub.add_parser(
        "models",
        help="list, show and check SGWB source models",
        description="Without a subcommand: list the built-in models with their parameters "
        "and priors.",
    )
    p.add_argument("--preset", help="list only the models of this preset (e.g. seed10)")
    p.set_defaults(func=_run_models_list)
    msub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    show = msub.add_parser("show", help="print one model: description, file, parameters, priors")
    show.add_argument("name", help="built-in model name or path of a model file")
    show.set_defaults(func=_run_models_show)
    check = msub.add_parser(
        "check", help="validate a model file (exit 0 with a summary, 1 with the error)"
    )
    check.add_argument("path", help="path of a .py model file (or a built-in name)")
    check.set_defaults(func=_run_models_check)


def _enable_x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _run_models_list(args) -> int:
    from . import models

    _enable_x64()
    names = models.list_models()
    if args.preset is not None:
        names = tuple(m.name for m in models.load_preset(args.preset, validate=False))
    print(f"SGWB source models ({models.MODELS_DIR}):")
    for name in names:
        model = models.load_model(name, validate=False)
        print(f"\n{name} ({model.n_dim} parameters): {model.description}")
        print(_parameter_table(model))
    if args.preset is None:
        print("\nUnavailable:")
        for name, reason in models.UNAVAILABLE.items():
            print(f"  {name}: {reason}")
        print("\nPresets:")
        for name, members in models.PRESETS.items():
            print(f"  {name}: {', '.join(members)}")
    print(
        "\n`ptaflow models show NAME` prints one model; `ptaflow models check FILE` validates one."
    )
    return 0


def _parameter_table(model) -> str:
    units = model.priors.units()
    lines = []
    for names, prior in zip(model.priors.block_names, model.priors.priors, strict=True):
        unit = "" if units[names[0]] == "1" else f"  [{units[names[0]]}]"
        lines.append(f"    {', '.join(names):<14s} {prior.describe()}{unit}")
    if model.smbhb:
        lines.append("    (SMBHB power law added: log10_A_bhb, gamma_bhb)")
    return "\n".join(lines)


def _run_models_show(args) -> int:
    from . import models

    _enable_x64()
    print(models.load_model(args.name, validate=False).describe())
    return 0


def _run_models_check(args) -> int:
    from . import models

    _enable_x64()
    model = models.load_model(args.path)
    print(f"OK: {model.path} is a valid model file")
    print(model.describe())
    print(
        "checked: the declarations against spectrum()'s signature; h^2 Omega_GW finite and "
        f"non-negative on 1e-09..1e-07 Hz at {models.DENSE_DRAWS} prior draws; at 8 of them "
        "jax.jit and jax.vmap give the same numbers as direct calls and gradients are finite"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptaflow",
        description="Normalizing-flow posteriors and Bayes factors for SGWB source models "
        "on pulsar-timing-array data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo_command(sub)
    _add_compare_command(sub)
    _add_reduce_command(sub)
    _add_models_commands(sub)
    add_batch_commands(sub)
    return parser


def _single_threaded_blas() -> None:
    """Run SciPy's OpenBLAS single-threaded unless the environment says otherwise.

    JAX's CPU likelihoods call it from many threads at once, and a multi-threaded OpenBLAS
    makes them many times slower (see `ptaflow.threads`). The variable is set before any
    command loads SciPy, and child processes (batch workers) inherit it; a value already in
    the environment is kept.
    """
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    if "scipy" in sys.modules:  # called from a process that has loaded OpenBLAS already
        limit_blas_threads()


def main(argv: list[str] | None = None) -> int:
    _single_threaded_blas()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PtaflowError as exc:
        print(f"ptaflow: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
