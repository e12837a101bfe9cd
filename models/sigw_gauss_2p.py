"""SIGW-GAUSS, two-parameter variant: (log10_fpeak, log10_A) free, peak width fixed.

Fixed: width = 0.5, close to the geometric centre (0.55) of the published prior U(0.1, 3) and
a node of the kernel table, so the width axis needs no interpolation (arXiv:2306.16219 Sec. 3.2).
"""

from ptaflow.priors import Fixed, Uniform
from ptaflow.sources import sigw_gauss_h2omega

name = "sigw_gauss_2p"
description = "Scalar-induced GWs, log-normal curvature peak (f_peak, amplitude), width 0.5"
parameters = {
    "log10_fpeak": Uniform(-11.0, -5.0, unit="Hz", latex=r"\log_{10}(f_\mathrm{peak}/\mathrm{Hz})"),
    "width": Fixed(0.5, latex=r"\Delta"),
    "log10_A": Uniform(-3.0, 1.0, latex=r"\log_{10} A"),
}


def spectrum(f, log10_fpeak, width, log10_A):
    return sigw_gauss_h2omega(f, log10_fpeak, width, log10_A)
