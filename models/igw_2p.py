"""IGW, two-parameter variant: (n_t, log10_r) free, reheating temperature fixed.

Fixed: log10_T_rh = 0 (T_rh = 1 GeV): the centre of the published prior U(-3, 3); it puts the
reheating turnover at f_rh = 2.5e-8 Hz, inside the PTA band (arXiv:2306.16219 Sec. 3.1).
"""

from ptaflow.priors import Fixed, Uniform
from ptaflow.sources import igw_h2omega

name = "igw_2p"
description = "Inflationary GWs (n_t, log10_r) with T_rh fixed at 1 GeV"
parameters = {
    "n_t": Uniform(0.0, 6.0, latex=r"n_t"),
    "log10_r": Uniform(-40.0, 0.0, latex=r"\log_{10} r"),
    "log10_T_rh": Fixed(0.0, unit="GeV", latex=r"\log_{10}(T_\mathrm{rh}/\mathrm{GeV})"),
}


def spectrum(f, n_t, log10_r, log10_T_rh):
    return igw_h2omega(f, n_t, log10_r, log10_T_rh)
