"""Normalizing flows (flowjax) for PTA posteriors: construction, training, refinement, files.

- `construction`: the architecture (spline layers + a final affine map) and the Laplace start;
- `targets`: evaluating a posterior at many points in compiled chunks of one shape;
- `initial`: where a fit starts (Laplace approximation or prior-draw moments);
- `variational`: reverse-KL training as init / step / run around a `TrainState`
  (`fit_variational`), checkpoints being that state serialised;
- `refine`: the forward-KL refinement rounds that follow it;
- `maximum_likelihood`: fits to existing samples (`fit_to_samples`);
- `io`: flow files, checkpoints and the flows stored in posterior results, in one place.

The settings (`FlowConfig`, `TrainConfig`) live in `ptaflow.settings` and are re-exported here.
The stages and why they are there: docs/design.md, section 3.
"""

from __future__ import annotations

from ..settings import FlowConfig, TrainConfig
from .construction import draw_with_log_q, laplace_approximation, make_flow, reset_coordinates
from .io import flow_from_bytes, flow_to_bytes, load_flow, result_flow, save_flow
from .maximum_likelihood import fit_to_samples
from .refine import REFINE_TRACES
from .targets import TARGET_CHUNK, target_parts
from .variational import STEP_TRACES, FitInfo, TrainState, VariationalFit, fit_variational

__all__ = [
    "FlowConfig",
    "TrainConfig",
    "FitInfo",
    "TrainState",
    "VariationalFit",
    "make_flow",
    "reset_coordinates",
    "laplace_approximation",
    "draw_with_log_q",
    "fit_variational",
    "fit_to_samples",
    "target_parts",
    "TARGET_CHUNK",
    "flow_to_bytes",
    "flow_from_bytes",
    "result_flow",
    "save_flow",
    "load_flow",
    "STEP_TRACES",
    "REFINE_TRACES",
]
