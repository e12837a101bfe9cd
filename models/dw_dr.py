"""DW-DR: domain walls annihilating into dark radiation.

As DW-SM with the wall energy fraction set by the dark radiation, alpha_* =
Delta N_eff / (13.6 g_* / g_s*^(4/3)); the prior bound Delta N_eff < 0.39 is the
CMB/BBN limit. arXiv:2306.16219 Sec. 4.2 (NG15 model file dw_ds.py v1.0.0).
"""

import math

from ptaflow.priors import Uniform
from ptaflow.sources import dw_dr_h2omega

name = "dw_dr"
description = "Domain walls decaying into dark radiation (Delta N_eff, T_*, shape b, c)"
parameters = {
    "log10_N_eff": Uniform(-3.0, math.log10(0.39), latex=r"\log_{10}\Delta N_\mathrm{eff}"),
    "log10_T_star": Uniform(-4.0, 4.0, unit="GeV", latex=r"\log_{10}(T_*/\mathrm{GeV})"),
    "b": Uniform(0.5, 1.0, latex=r"b"),
    "c": Uniform(0.3, 3.0, latex=r"c"),
}


def spectrum(f, log10_N_eff, log10_T_star, b, c):
    return dw_dr_h2omega(f, log10_N_eff, log10_T_star, b, c)
