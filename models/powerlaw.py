"""Power law with uniform priors: the generic common-process red-noise spectrum.

S(f) = A^2/(12 pi^2) f_yr^(gamma-3) f^-gamma, i.e. h^2 Omega_GW = 2 pi^2 A^2 f_yr^2 /
(3 (H0/h)^2) (f/f_yr)^(5-gamma); priors log10_A ~ U(-18, -11), gamma ~ U(0, 7)
(NANOGrav 15-yr GWB search, arXiv:2306.16213; arXiv:2306.16219 Sec. 2).
"""

from ptaflow.priors import Uniform
from ptaflow.spectra import powerlaw_h2omega

name = "powerlaw"
description = "Power law, log10_A ~ U(-18, -11), gamma ~ U(0, 7)"
parameters = {
    "log10_A": Uniform(-18.0, -11.0, latex=r"\log_{10} A"),
    "gamma": Uniform(0.0, 7.0, latex=r"\gamma"),
}


def spectrum(f, log10_A, gamma):
    return powerlaw_h2omega(f, log10_A, gamma)
