"""PT-SOUND: first-order phase transition, GWs from sound waves in the plasma.

v_w = 1, efficiency kappa(alpha), finite sound-wave lifetime (arXiv:2007.08537), peaked
spectrum S(f/f_0; a, b, c); arXiv:2306.16219 Sec. 4.1 (NG15 model file pt_sound.py v1.0.0).
"""

from ptaflow.priors import Uniform
from ptaflow.sources import pt_sound_h2omega

name = "pt_sound"
description = "Phase transition, sound waves (alpha, T_*, H R, shape a, b, c)"
parameters = {
    "log10_alpha": Uniform(-2.0, 1.0, latex=r"\log_{10}\alpha_*"),
    "log10_T_star": Uniform(-4.0, 4.0, unit="GeV", latex=r"\log_{10}(T_*/\mathrm{GeV})"),
    "log10_H_R": Uniform(-3.0, 0.0, latex=r"\log_{10}(H_* R_*)"),
    "a": Uniform(3.0, 5.0, latex=r"a"),
    "b": Uniform(2.0, 4.0, latex=r"b"),
    "c": Uniform(3.0, 5.0, latex=r"c"),
}


def spectrum(f, log10_alpha, log10_T_star, log10_H_R, a, b, c):
    return pt_sound_h2omega(f, log10_alpha, log10_T_star, log10_H_R, a, b, c)
