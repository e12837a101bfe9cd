"""DW-SM: domain walls annihilating into Standard-Model particles.

Peaked spectrum S(f/f_0; 3, b, c) with the causal f^3 tail below the peak;
arXiv:2306.16219 Sec. 4.2 (NG15 model file dw_sm.py v1.0.0).
"""

from ptaflow.priors import Uniform
from ptaflow.sources import dw_h2omega

name = "dw_sm"
description = "Domain walls decaying into SM particles (alpha_*, T_*, shape b, c)"
parameters = {
    "log10_alpha": Uniform(-3.0, 0.0, latex=r"\log_{10}\alpha_*"),
    "log10_T_star": Uniform(-4.0, 4.0, unit="GeV", latex=r"\log_{10}(T_*/\mathrm{GeV})"),
    "b": Uniform(0.5, 1.0, latex=r"b"),
    "c": Uniform(0.3, 3.0, latex=r"c"),
}


def spectrum(f, log10_alpha, log10_T_star, b, c):
    return dw_h2omega(f, log10_alpha, log10_T_star, b, c)
