"""Zero-inflated counts: glmmTMB's ziformula on its Salamanders data.

Salamander counts by species and mining at 23 sites (a random intercept per site). Many
surveys find none: some of those zeros are "structural" (the species is not there at all), the
rest are counts that happened to be 0. A zero-inflated model has a logit part for the
probability of a structural zero.

1. Poisson, zero-inflated Poisson and zero-inflated NB2 with `ziformula="~ spp + mined"`,
   compared by AIC and a likelihood-ratio test (zero-inflation on the boundary: the warning says so).
2. The summary's "Zero-inflation model" block; predictions of the mean (1 - pi) mu, the
   conditional mean mu and pi itself (glmmTMB's type = "response", "conditional", "zprob").
3. Does the model reproduce the zeros? The share of zeros in simulated data against the data's.

Run:  python examples/zero_inflated_counts.py
"""

import warnings

import numpy as np
import pandas as pd

import midas_glmm as mg
from midas_glmm import MixedModel, datasets

sal = datasets.load("salamanders")
formula = "count ~ spp + mined + (1 | site)"
plain = MixedModel.from_formula(formula, sal, family="poisson").fit()
zip_ = MixedModel.from_formula(formula, sal, family="poisson", ziformula="~ spp + mined").fit()
zinb = MixedModel.from_formula(formula, sal, family="nbinom2", ziformula="~ spp + mined").fit()
print(zinb.summary())
print("\nAIC:", {name: round(r.aic(), 1) for name, r in [("Poisson", plain), ("ZIP", zip_), ("ZINB2", zinb)]})

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    table = mg.compare(plain, zip_)
print(table[["npar", "AIC", "logLik", "Chisq", "Df", "Pr(>Chisq)"]].to_string())
print("note:", caught[0].message)

new = pd.DataFrame({"spp": ["GP", "GP"], "mined": ["yes", "no"], "site": ["R-1", "R-1"]})
for kind in ("response", "conditional", "zprob"):
    print(f"{kind:>11}: mined {zinb.predict(new, kind=kind)[0]:.3f}, unmined {zinb.predict(new, kind=kind)[1]:.3f}")

sims = zinb.simulate(200, seed=1)
print(
    f"\nshare of zeros: data {np.mean(sal['count'] == 0):.3f}, ZINB2 simulations {np.mean(sims == 0):.3f}, "
    f"Poisson simulations {np.mean(plain.simulate(200, seed=1) == 0):.3f}"
)
