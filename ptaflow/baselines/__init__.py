"""Reference samplers that ptaflow's flow posteriors and evidences are checked against.

None of these is part of the flow pipeline (`ptaflow.inference`, `ptaflow.compare`); the tests
and `benchmarks/` use them as independent ground truth and as the cost to beat:

- `ptaflow.baselines.mcmc`: plain NUTS on the same z-space target (`run_nuts`, and
  `nuts_baseline` on a posterior), long reference runs pooled from parts (`combine_chains`),
  and chains as a `PosteriorResult` (`mcmc_result`).
- `ptaflow.baselines.nested`: the evidence by dynesty's nested sampling (optional dependency
  dynesty).
- `ptaflow.baselines.ptmcmc`: the community workflow, an enterprise PTA sampled by
  PTMCMCSampler (optional dependencies `ptaflow[enterprise]`).

Import the modules themselves; this package imports nothing.
"""
