"""SMBHB: supermassive black-hole binaries, a power law with the holodeck 2-D Gaussian prior.

The spectrum is the power law of `powerlaw.py`; the prior on (log10_A, gamma) is the 2-D
Gaussian fitted to the holodeck library astro-02-gw, mean (-15.61492963, 4.70709637),
covariance [[0.27871359, -0.00263617], [-0.00263617, 0.12415383]] (arXiv:2306.16219, Sec. 2;
PTArcade `bhb_priors["NG15"]`). It is the same prior `smbhb = True` adds to other models.
"""

from ptaflow.models import SMBHB_PRIOR
from ptaflow.priors import MultivariateNormal
from ptaflow.spectra import powerlaw_h2omega

name = "smbhb"
description = "SMBHB power law with the holodeck 2-D Gaussian prior on (log10_A, gamma)"
parameters = {
    ("log10_A", "gamma"): MultivariateNormal(
        SMBHB_PRIOR.mean, SMBHB_PRIOR.cov, latex=(r"\log_{10} A", r"\gamma")
    ),
}


def spectrum(f, log10_A, gamma):
    return powerlaw_h2omega(f, log10_A, gamma)
