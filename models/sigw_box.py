"""SIGW-BOX: scalar-induced GWs from a flat curvature spectrum between f_min and f_max.

arXiv:2306.16219 Sec. 3.2 (NG15 model file sigw_box.py v1.0.0); kernel interpolated from
data/ng15_model_tables/sigw_box.h5, which holds a floor of 10^-25 where f_min >= f_max.
"""

from ptaflow.priors import Uniform
from ptaflow.sources import sigw_box_h2omega

name = "sigw_box"
description = "Scalar-induced GWs, box-shaped curvature spectrum (f_min, f_max, amplitude)"
parameters = {
    "log10_fmin": Uniform(-11.0, -5.0, unit="Hz", latex=r"\log_{10}(f_\mathrm{min}/\mathrm{Hz})"),
    "log10_fmax": Uniform(-11.0, -5.0, unit="Hz", latex=r"\log_{10}(f_\mathrm{max}/\mathrm{Hz})"),
    "log10_A": Uniform(-3.0, 1.0, latex=r"\log_{10} A"),
}


def spectrum(f, log10_fmin, log10_fmax, log10_A):
    return sigw_box_h2omega(f, log10_fmin, log10_fmax, log10_A)
