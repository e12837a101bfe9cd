"""STABLE-C: stable cosmic strings (Nambu-Goto network), loop emission from cusps.

log10 h^2 Omega_GW tabulated against (log10_Gmu, log10 f) in
data/ng15_model_tables/stable_c.h5; arXiv:2306.16219 Sec. 5 (NG15 model file
stable_c.py v1.0.0).
"""

from ptaflow.priors import Uniform
from ptaflow.sources import cosmic_string_h2omega

name = "stable_c"
description = "Stable cosmic strings, cusps (string tension G mu)"
parameters = {
    "log10_Gmu": Uniform(-14.0, -6.0, latex=r"\log_{10} G\mu"),
}


def spectrum(f, log10_Gmu):
    return cosmic_string_h2omega("stable_c", f, log10_Gmu=log10_Gmu)
