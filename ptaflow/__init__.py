"""ptaflow: normalizing-flow posteriors and Bayes factors for SGWB source models on PTA data."""

import os as _os

# jaxlib's CPU Cholesky and triangular solves call SciPy's OpenBLAS once per small matrix from
# XLA's worker threads; a multi-threaded OpenBLAS makes PTA likelihoods many times slower
# (HD, 10 pulsars, 2 cores: 35 vs 630 evaluations/s). Only a default: it takes effect if
# OpenBLAS has not been loaded yet, and a value you set is kept.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
