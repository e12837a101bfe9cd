"""SIGW-GAUSS: scalar-induced GWs from a log-normal peak in the curvature power spectrum.

arXiv:2306.16219 Sec. 3.2 (NG15 model file sigw_gauss.py v1.0.0); the induced-GW kernel
integral is interpolated from data/ng15_model_tables/sigw_gauss.h5.
"""

from ptaflow.priors import Uniform
from ptaflow.sources import sigw_gauss_h2omega

name = "sigw_gauss"
description = "Scalar-induced GWs, log-normal curvature peak (f_peak, width, amplitude)"
parameters = {
    "log10_fpeak": Uniform(-11.0, -5.0, unit="Hz", latex=r"\log_{10}(f_\mathrm{peak}/\mathrm{Hz})"),
    "width": Uniform(0.1, 3.0, latex=r"\Delta"),
    "log10_A": Uniform(-3.0, 1.0, latex=r"\log_{10} A"),
}


def spectrum(f, log10_fpeak, width, log10_A):
    return sigw_gauss_h2omega(f, log10_fpeak, width, log10_A)
