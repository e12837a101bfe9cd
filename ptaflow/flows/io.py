"""Flow files and bytes, in one place: flows, checkpoints and the flows stored in results.

A flow is stored as its array leaves (`equinox.tree_serialise_leaves`); reading it back needs
a skeleton of the same structure, which `make_flow` rebuilds from the architecture
(`FlowConfig`) and the dimension. A flow file and a training checkpoint are one JSON header
(format, architecture or training state) followed by such leaves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pathlib
from typing import Any

import equinox as eqx
import jax
from flowjax.distributions import Transformed

from ..errors import DataError
from ..results import PosteriorResult, write_bytes_atomic
from ..settings import FlowConfig
from .construction import make_flow

__all__ = [
    "FORMAT",
    "flow_to_bytes",
    "flow_from_bytes",
    "read_leaves",
    "result_flow",
    "save_flow",
    "load_flow",
]

#: Format of flow files and checkpoints (their headers' "format").
FORMAT = 2


def flow_to_bytes(flow: Any) -> bytes:
    """The array leaves of a flow (any equinox pytree), serialised."""
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, flow)
    return buf.getvalue()


def read_leaves(data: bytes, skeleton: Any, what: str = "the stored flow") -> Any:
    """`skeleton` with its array leaves read from `data` (`flow_to_bytes` output).

    Raises:
        DataError: the bytes do not fit the skeleton (other structure, fewer or more leaves).
    """
    buf = io.BytesIO(data)
    try:
        tree = eqx.tree_deserialise_leaves(buf, skeleton)
    except (RuntimeError, ValueError, TypeError, EOFError) as exc:
        raise DataError(f"{what} does not fit its architecture ({exc})") from exc
    if buf.tell() != len(data):  # a skeleton with fewer leaves reads a prefix
        raise DataError(
            f"{what} does not fit its architecture: it read {buf.tell()} of the {len(data)} "
            "stored bytes (fewer or smaller leaves)"
        )
    return tree


def flow_from_bytes(data: bytes, n_dim: int, config: FlowConfig) -> Transformed:
    """Rebuild a flow from `flow_to_bytes` output, its dimension and its architecture."""
    return read_leaves(data, make_flow(jax.random.key(0), n_dim, config=config))


def result_flow(result: PosteriorResult) -> Transformed:
    """The trained flow stored in a posterior result (`PosteriorResult.flow_bytes`).

    Raises:
        DataError: the result stores no flow, or it does not fit the stored architecture.
    """
    if result.flow_bytes is None or not result.flow_config:
        raise DataError("this posterior result stores no flow (flow_bytes is None)")
    config = dict(result.flow_config)
    n_dim = int(config.pop("n_dim"))
    skeleton = make_flow(jax.random.key(0), n_dim, config=FlowConfig(**config))
    return read_leaves(result.flow_bytes, skeleton, f"the stored flow ({result.flow_config})")


def pack(header: dict, tree: Any) -> bytes:
    """One JSON header followed by the leaves of `tree`."""
    head = json.dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + flow_to_bytes(tree)


def unpack(path: pathlib.Path) -> tuple[dict, bytes]:
    """(header, leaves) of a file written with `pack`."""
    try:
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable ptaflow flow/checkpoint file ({exc})") from exc
    return header, raw[8 + n :]


def settings_hash(*parts: Any) -> str:
    """A short hash of settings (dataclasses or JSON-able values), for checkpoint headers."""
    text = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_flow(flow: Transformed, path: str | pathlib.Path, config: FlowConfig) -> None:
    """Write a flow (parameters + the architecture needed to rebuild it) atomically."""
    header = {"format": FORMAT, "n_dim": int(flow.shape[0])}
    header["flow_config"] = dataclasses.asdict(config)
    write_bytes_atomic(pathlib.Path(path), pack(header, flow))


def load_flow(path: str | pathlib.Path) -> tuple[Transformed, FlowConfig]:
    """Read a flow written by `save_flow`; returns (flow, its FlowConfig)."""
    path = pathlib.Path(path)
    header, payload = unpack(path)
    if header.get("format") != FORMAT or "flow_config" not in header:
        raise DataError(f"{path}: not a ptaflow flow file (format {header.get('format')})")
    config = FlowConfig(**header["flow_config"])
    return read_leaves(
        payload, make_flow(jax.random.key(0), int(header["n_dim"]), config=config), str(path)
    ), config
