"""Physical constants and unit conversions, each with its value, unit and source.

Values follow the conventions of enterprise (PTA likelihoods) and of the NANOGrav 15-yr
new-physics model files (PTArcade `models_utils`), so that spectra agree with both.
"""

from __future__ import annotations

#: Seconds per Julian year [s]; enterprise.constants.yr = 365.25 * 86400.
YEAR_S = 365.25 * 86400.0
#: Seconds per day [s].
DAY_S = 86400.0
#: Reference frequency f_yr = 1/yr [Hz], enterprise.constants.fyr.
FYR_HZ = 1.0 / YEAR_S
#: Hubble constant divided by h: H0/h = 100 km/s/Mpc expressed in Hz [Hz].
#: 100 km/s/Mpc = 1e5 m/s / 3.0856775814913673e22 m (IAU 2015 parsec).
H0_OVER_H_HZ = 1.0e5 / 3.0856775814913673e22
