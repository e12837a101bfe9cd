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

# --- Cosmology and particle-physics constants of the NANOGrav 15-yr new-physics models -----
# These are the values of PTArcade 1.1.5 `ptarcade.models_utils` (NANOGrav NG15 new-physics
# model files v1.0.0, arXiv:2306.16219, Zenodo 8084351), where they are computed with `natpy`
# from CODATA 2018 / PDG inputs. They are copied to full precision (as recorded in
# ../shared/data/ng15_model_reference/reference_spectra.json, block `ptarcade_constants`)
# so that ptaflow's spectra reproduce the published model files to rounding. Natural units
# (hbar = c = k_B = 1) are used for energies and temperatures.

#: Conversion of an energy to an angular frequency, 1 GeV / hbar [Hz / GeV] (natpy, PDG hbar).
GEV_TO_HZ = 1.519267447878626e24
#: Newton's constant G = 6.67430e-11 m^3 kg^-1 s^-2 (CODATA 2018) in natural units [GeV^-2].
G_NEWTON_GEV = 6.708830746231456e-39
#: Reduced Planck mass M_pl = (8 pi G)^(-1/2) [GeV].
M_PL_GEV = 2.4353234600842885e18
#: CMB temperature today, T_0 = 2.7255 K (Fixsen 2009) in energy units [GeV].
T0_GEV = 2.348654180597668e-13
#: Redshift of matter-radiation equality (Planck 2018), dimensionless.
Z_EQ = 3402.0
#: Temperature at matter-radiation equality, T_0 (1 + z_eq) [GeV].
T_EQ_GEV = 7.992470176573865e-10
#: Reduced Hubble parameter h = H_0 / (100 km/s/Mpc) used by the model files (Planck 2018).
H_LITTLE = 0.674
#: Hubble constant H_0 = h x 100 km/s/Mpc in energy units [GeV].
H0_GEV = 1.4377226630738714e-42
#: Hubble constant H_0 = h x 100 km/s/Mpc [Hz]; H0_HZ / H_LITTLE equals H0_OVER_H_HZ.
H0_HZ = 2.1842852410855023e-18
#: Dark-energy density parameter today (Planck 2018), dimensionless.
OMEGA_V = 0.6847
#: Matter density parameter today (Planck 2018), dimensionless.
OMEGA_M = 0.3153
#: Radiation density parameter today Omega_r (not h^2 Omega_r; Planck 2018), dimensionless.
OMEGA_R = 9.2188e-5
#: Amplitude of the primordial scalar power spectrum, A_s = exp(3.044) x 1e-10 (Planck 2018).
A_S = 2.0989031673191437e-9
#: Frequency today of the CMB pivot scale k = 0.05 / Mpc [Hz].
F_CMB_HZ = 7.7314e-17
#: Relativistic degrees of freedom in the energy density today, g_rho(T_0); the first row of
#: g_star.dat (Saikawa & Shirai 2020, arXiv:2005.03544), dimensionless.
G_RHO_0 = 3.38308
#: Relativistic degrees of freedom in the entropy density today, g_s(T_0); first row of
#: g_star.dat (Saikawa & Shirai 2020), dimensionless.
G_S_0 = 3.93094
