"""IGW: blue-tilted primordial tensor spectrum from inflation, with reheating.

arXiv:2306.16219 Sec. 3.1 (NG15 model file igw.py v1.0.0): tensor spectrum
r A_s (f/f_cmb)^n_t, radiation-era transfer with the degrees of freedom at horizon
crossing, and a turnover above f_rh, the frequency of the mode entering at reheating.
"""

from ptaflow.priors import Uniform
from ptaflow.sources import igw_h2omega

name = "igw"
description = "Inflationary GWs: tensor index n_t, tensor-to-scalar ratio r, reheating T_rh"
parameters = {
    "n_t": Uniform(0.0, 6.0, latex=r"n_t"),
    "log10_r": Uniform(-40.0, 0.0, latex=r"\log_{10} r"),
    "log10_T_rh": Uniform(-3.0, 3.0, unit="GeV", latex=r"\log_{10}(T_\mathrm{rh}/\mathrm{GeV})"),
}


def spectrum(f, n_t, log10_r, log10_T_rh):
    return igw_h2omega(f, n_t, log10_r, log10_T_rh)
