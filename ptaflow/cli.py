"""The `ptaflow` command line. Thin: parses arguments, calls the library, maps errors to exit codes."""

from __future__ import annotations

import argparse
import sys

from .errors import PtaflowError

__all__ = ["main"]


def _add_demo_command(sub) -> None:
    p = sub.add_parser("demo", help="run the default demonstration on the shipped NG15 data")
    p.add_argument("--n-psr", type=int, default=10, help="number of pulsars (default 10)")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from ._demo import run_demo

    run_demo(n_psr=args.n_psr)
    return 0


def _add_models_commands(sub) -> None:
    """`ptaflow models ...`: list, show and check SGWB model files."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptaflow",
        description="Normalizing-flow posteriors and Bayes factors for SGWB source models "
        "on pulsar-timing-array data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo_command(sub)
    _add_models_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
