"""SIGW-DELTA: scalar-induced GWs from a delta-function peak in the curvature spectrum.

Analytic kernel (Kohri & Terada 2018, arXiv:1804.08577); arXiv:2306.16219 Sec. 3.2 (NG15
model file sigw_delta.py v1.0.0). Exactly zero above 2 f_peak; the log singularity at
f = 2 f_peak / sqrt(3) is regularised at float64 resolution (see ptaflow.sources).
"""

from ptaflow.priors import Uniform
from ptaflow.sources import sigw_delta_h2omega

name = "sigw_delta"
description = "Scalar-induced GWs, delta-function curvature peak (f_peak, amplitude)"
parameters = {
    "log10_f_peak": Uniform(
        -11.0, -5.0, unit="Hz", latex=r"\log_{10}(f_\mathrm{peak}/\mathrm{Hz})"
    ),
    "log10_A": Uniform(-3.0, 1.0, latex=r"\log_{10} A"),
}


def spectrum(f, log10_f_peak, log10_A):
    return sigw_delta_h2omega(f, log10_f_peak, log10_A)
