"""DW-SM, two-parameter variant: (log10_alpha, log10_T_star) free.

Fixed (inside the published priors of arXiv:2306.16219 Sec. 4.2):
  b = 1: the f^-1 fall-off above the peak found in simulations of annihilating walls
      (Hiramatsu, Kawasaki & Saikawa 2014, arXiv:1309.5001);
  c = 1: a peak of unit width, the geometric centre (0.95) of the prior U(0.3, 3).
"""

from ptaflow.priors import Fixed, Uniform
from ptaflow.sources import dw_h2omega

name = "dw_sm_2p"
description = "Domain walls decaying into SM particles (alpha_*, T_*); b = c = 1"
parameters = {
    "log10_alpha": Uniform(-3.0, 0.0, latex=r"\log_{10}\alpha_*"),
    "log10_T_star": Uniform(-4.0, 4.0, unit="GeV", latex=r"\log_{10}(T_*/\mathrm{GeV})"),
    "b": Fixed(1.0, latex=r"b"),
    "c": Fixed(1.0, latex=r"c"),
}


def spectrum(f, log10_alpha, log10_T_star, b, c):
    return dw_h2omega(f, log10_alpha, log10_T_star, b, c)
