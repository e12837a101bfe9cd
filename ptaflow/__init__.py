"""ptaflow: normalizing-flow posteriors and Bayes factors for SGWB source models on PTA data."""

__version__ = "0.1.0"
