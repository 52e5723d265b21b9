"""A binomial and a Poisson GLMM.

1. lme4's cbpp data: new cases of bovine pleuropneumonia out of herd size, by period, with a
   random intercept per herd — Laplace, then adaptive quadrature with 25 nodes.
2. Simulated counts with an exposure offset: events ~ Poisson(exposure · exp(η)).

Run:  python examples/glmm_binomial_poisson.py
"""

import warnings

import numpy as np
import pandas as pd

from midas_glmm import MixedModel, datasets

cbpp = datasets.load("cbpp")
model = MixedModel.from_formula("cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", cbpp, family="binomial")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the Laplace caution about small groups is the point of step 2
    laplace = model.fit()
agq = model.fit(nAGQ=25)
print(laplace.summary())
print(f"\nlog-likelihood: Laplace {laplace.llf:.4f}, AGQ(25) {agq.llf:.4f}")
print("odds ratios (AGQ):", np.exp(agq.params).round(3).to_dict())
print("latent-scale ICC (pi^2/3 residual variance):", agq.icc().round(3).to_dict())

rng = np.random.default_rng(7)
hospitals = np.repeat(np.arange(40), 12)
exposure = rng.uniform(0.5, 3, hospitals.size)
x = rng.normal(size=hospitals.size)
eta = 0.2 + 0.4 * x + rng.normal(0, 0.5, 40)[hospitals]
counts = pd.DataFrame(
    {
        "events": rng.poisson(exposure * np.exp(eta)),
        "x": x,
        "exposure": exposure,
        "hospital": [f"h{i:02d}" for i in hospitals],
    }
)
pois = MixedModel.from_formula("events ~ x + offset(np.log(exposure)) + (1 | hospital)", counts, family="poisson").fit()
print()
print(pois.summary())
print("rate ratio per unit x:", round(float(np.exp(pois.params["x"])), 3), "(simulated: 1.492)")
