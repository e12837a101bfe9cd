"""ptaflow: normalizing-flow posteriors and Bayes factors for SGWB source models on PTA data.

The names an analysis script needs are available from the package itself::

    import ptaflow as pf

    pf.limit_blas_threads()                       # CPU runs: single-threaded OpenBLAS
    post = pf.make_refit_posterior("pt_bubble")   # or pf.make_posterior(..., correlation="hd")
    fit = pf.fit_posterior(post)
    table = pf.compare(["pt_bubble", "smbhb"], settings=pf.CompareSettings(mode="refit"))

Each name is imported from its home module on first use, so `import ptaflow` itself is fast
(JAX and SciPy load only when a name that needs them is used) and changes nothing in the
process: in particular it does not set OPENBLAS_NUM_THREADS (see `ptaflow.threads`).

The pipeline, the layers and which module owns what: docs/design.md in the repository.

`ptaflow.compare` is the function `ptaflow.compare.compare`, not the module of that name;
import the module's other names with ``from ptaflow.compare import ...``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.2.0"

#: The public API: home module -> names defined there.
_API: dict[str, tuple[str, ...]] = {
    "ptaflow.data.pulsars": ("load_pulsars",),
    "ptaflow.data.reduction": ("ReducedPTA", "reduce_pta", "save_reduced", "load_reduced"),
    "ptaflow.models": ("SourceModel", "load_model", "list_models", "load_preset"),
    "ptaflow.likelihood": ("make_likelihood",),
    "ptaflow.posterior": ("Posterior", "make_posterior", "make_refit_posterior"),
    "ptaflow.settings": ("FlowConfig", "TrainConfig", "CompareSettings"),
    "ptaflow.inference": ("fit_posterior",),
    "ptaflow.evidence": (
        "EvidenceResult",
        "estimate_evidence_importance",
        "estimate_evidence_harmonic",
    ),
    "ptaflow.quadrature": ("estimate_evidence_quadrature",),
    "ptaflow.compare": ("compare",),
    "ptaflow.results": ("PosteriorResult", "save_posterior", "load_posterior"),
    "ptaflow.priors": (
        "AbstractPrior",
        "Uniform",
        "LogUniform",
        "Normal",
        "TruncatedNormal",
        "MultivariateNormal",
        "Fixed",
        "JointPrior",
        "make_joint_prior",
    ),
    "ptaflow.errors": ("PtaflowError",),
    "ptaflow.threads": ("limit_blas_threads",),
}

_HOME = {name: module for module, names in _API.items() for name in names}

__all__ = [
    # data
    "load_pulsars",
    "ReducedPTA",
    "reduce_pta",
    "save_reduced",
    "load_reduced",
    # SGWB source models
    "SourceModel",
    "load_model",
    "list_models",
    "load_preset",
    # likelihoods and posteriors
    "make_likelihood",
    "Posterior",
    "make_posterior",
    "make_refit_posterior",
    # flow fits and evidences
    "FlowConfig",
    "TrainConfig",
    "fit_posterior",
    "EvidenceResult",
    "estimate_evidence_importance",
    "estimate_evidence_harmonic",
    "estimate_evidence_quadrature",
    # model comparison
    "CompareSettings",
    "compare",
    # result files
    "PosteriorResult",
    "save_posterior",
    "load_posterior",
    # priors
    "AbstractPrior",
    "Uniform",
    "LogUniform",
    "Normal",
    "TruncatedNormal",
    "MultivariateNormal",
    "Fixed",
    "JointPrior",
    "make_joint_prior",
    # errors and process settings
    "PtaflowError",
    "limit_blas_threads",
]

if TYPE_CHECKING:  # the same names, for type checkers and editors
    from .compare import compare
    from .data.pulsars import load_pulsars
    from .data.reduction import ReducedPTA, load_reduced, reduce_pta, save_reduced
    from .errors import PtaflowError
    from .evidence import EvidenceResult, estimate_evidence_harmonic, estimate_evidence_importance
    from .inference import fit_posterior
    from .likelihood import make_likelihood
    from .models import SourceModel, list_models, load_model, load_preset
    from .posterior import Posterior, make_posterior, make_refit_posterior
    from .priors import (
        AbstractPrior,
        Fixed,
        JointPrior,
        LogUniform,
        MultivariateNormal,
        Normal,
        TruncatedNormal,
        Uniform,
        make_joint_prior,
    )
    from .quadrature import estimate_evidence_quadrature
    from .results import PosteriorResult, load_posterior, save_posterior
    from .settings import CompareSettings, FlowConfig, TrainConfig
    from .threads import limit_blas_threads


def __getattr__(name: str):
    """Import a public name from its home module on first use (PEP 562)."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups find it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The type of the `ptaflow` module: keeps `ptaflow.compare` the function.

    Importing the submodule `ptaflow.compare` (from anywhere) makes Python bind it as the
    package attribute `compare`; the function of that name is bound instead, so that
    `ptaflow.compare` is the same object however the submodule was first imported.
    """

    def __setattr__(self, name: str, value) -> None:
        if name == "compare" and isinstance(value, types.ModuleType):
            value = getattr(value, "compare", value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
