"""PT-SOUND, two-parameter variant: (log10_alpha, log10_T_star) free.

Fixed (all inside the published priors of arXiv:2306.16219 Sec. 4.1):
  a = 3, b = 4, c = 3.5: the sound-shell shape x^3 (7 / (4 + 3 x^2))^(7/2) of Hindmarsh et al.
      2017 (arXiv:1704.05871);
  log10_H_R = -0.5: beta/H = (8 pi)^(1/3) / (H R) = 9.3, a slow transition; the amplitude
      grows with H R, so only slow transitions reach the NG15 amplitude.
"""

from ptaflow.priors import Fixed, Uniform
from ptaflow.sources import pt_sound_h2omega

name = "pt_sound_2p"
description = "Phase transition, sound waves (alpha, T_*); H R, shape fixed"
parameters = {
    "log10_alpha": Uniform(-2.0, 1.0, latex=r"\log_{10}\alpha_*"),
    "log10_T_star": Uniform(-4.0, 4.0, unit="GeV", latex=r"\log_{10}(T_*/\mathrm{GeV})"),
    "log10_H_R": Fixed(-0.5, latex=r"\log_{10}(H_* R_*)"),
    "a": Fixed(3.0, latex=r"a"),
    "b": Fixed(4.0, latex=r"b"),
    "c": Fixed(3.5, latex=r"c"),
}


def spectrum(f, log10_alpha, log10_T_star, log10_H_R, a, b, c):
    return pt_sound_h2omega(f, log10_alpha, log10_T_star, log10_H_R, a, b, c)
