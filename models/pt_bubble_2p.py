"""PT-BUBBLE, two-parameter variant: (log10_alpha, log10_T_star) free.

Fixed (all inside the published priors of arXiv:2306.16219 Sec. 4.1):
  a = 2.8, b = 1, c = 1: the envelope-approximation shape 3.8 x^2.8 / (1 + 2.8 x^3.8) of
      Huber & Konstandin 2008 (arXiv:0806.1828);
  log10_H_R = -0.5: beta/H = (8 pi)^(1/3) / (H R) = 9.3, a slow transition; the amplitude
      scales as (H R)^2, so only slow transitions reach the NG15 amplitude.
"""

from ptaflow.priors import Fixed, Uniform
from ptaflow.sources import pt_bubble_h2omega

name = "pt_bubble_2p"
description = "Phase transition, bubble collisions (alpha, T_*); H R, shape fixed"
parameters = {
    "log10_alpha": Uniform(-2.0, 1.0, latex=r"\log_{10}\alpha_*"),
    "log10_T_star": Uniform(-4.0, 4.0, unit="GeV", latex=r"\log_{10}(T_*/\mathrm{GeV})"),
    "log10_H_R": Fixed(-0.5, latex=r"\log_{10}(H_* R_*)"),
    "a": Fixed(2.8, latex=r"a"),
    "b": Fixed(1.0, latex=r"b"),
    "c": Fixed(1.0, latex=r"c"),
}


def spectrum(f, log10_alpha, log10_T_star, log10_H_R, a, b, c):
    return pt_bubble_h2omega(f, log10_alpha, log10_T_star, log10_H_R, a, b, c)
