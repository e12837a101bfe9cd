"""META-LS: metastable cosmic strings decaying by monopole nucleation, GWs from loops and segments.

log10 h^2 Omega_GW tabulated against (log10_Gmu, sqrt_kappa, log10 f) in
data/ng15_model_tables/meta_ls.h5, where sqrt(kappa) is the ratio of the monopole mass to the
string scale; arXiv:2306.16219 Sec. 5 (NG15 model file meta_ls.py v1.0.0). The table has
a floor of 10^-99.45 where the spectrum vanishes.
"""

from ptaflow.priors import Uniform
from ptaflow.sources import cosmic_string_h2omega

name = "meta_ls"
description = "Metastable cosmic strings, loops and segments (G mu, sqrt(kappa))"
parameters = {
    "log10_Gmu": Uniform(-14.0, -1.5, latex=r"\log_{10} G\mu"),
    "sqrt_kappa": Uniform(7.0, 9.5, latex=r"\sqrt{\kappa}"),
}


def spectrum(f, log10_Gmu, sqrt_kappa):
    return cosmic_string_h2omega("meta_ls", f, log10_Gmu=log10_Gmu, sqrt_kappa=sqrt_kappa)
