"""Overdispersed counts and proportions: glmmTMB's negative binomial and beta families.

1. glmmTMB's Salamanders: salamander counts by species and mining, a random intercept per site.
   Poisson, NB2 (variance mu + mu^2/theta) and NB1 (variance mu (1 + phi)) compared by AIC, and
   the Poisson-vs-NB2 likelihood-ratio test (on the boundary theta = infinity: the warning says so).
2. glmmTMB's Owls: sibling negotiation calls per nest, with brood size as exposure (an offset),
   NB1 as in glmmTMB's vignette.
3. A beta model for proportions strictly inside (0, 1).

Run:  python examples/overdispersed_counts.py
"""

import warnings

import numpy as np
import pandas as pd

import midas_glmm as mg
from midas_glmm import MixedModel, datasets

sal = datasets.load("salamanders")
formula = "count ~ spp + mined + (1 | site)"
fits = {fam: MixedModel.from_formula(formula, sal, family=fam).fit() for fam in ("poisson", "nbinom2", "nbinom1")}
print(fits["nbinom2"].summary())
print("\nAIC:", {fam: round(r.aic(), 1) for fam, r in fits.items()})
print(f"NB2 size theta = {fits['nbinom2'].dispersion:.3f}; NB1 phi = {fits['nbinom1'].dispersion:.3f}")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    table = mg.compare(fits["poisson"], fits["nbinom2"])
print(table[["npar", "AIC", "logLik", "Chisq", "Df", "Pr(>Chisq)"]].to_string())
print("note:", caught[0].message)
print("rate ratio, unmined vs mined (NB2):", round(float(np.exp(fits["nbinom2"].params["mined[T.no]"])), 2))

owls = datasets.load("owls")
owl = MixedModel.from_formula(
    "NCalls ~ FoodTreatment * SexParent + offset(np.log(BroodSize)) + (1 | Nest)", owls, family="nbinom1"
).fit()
print("\nOwls, NB1: calls per chick")
print(np.exp(owl.params).round(3).to_string())
print(f"dispersion phi = {owl.dispersion:.3f}, random-intercept SD = {np.sqrt(owl.varcorr()['vcov'].iloc[0]):.3f}")

rng = np.random.default_rng(3)
g = np.repeat(np.arange(25), 16)
x = rng.normal(size=g.size)
mu = 1 / (1 + np.exp(-(-0.5 + 0.7 * x + rng.normal(0, 0.4, 25)[g])))
prop = pd.DataFrame({"cover": rng.beta(mu * 12, (1 - mu) * 12), "x": x, "plot": g})
beta = MixedModel.from_formula("cover ~ x + (1 | plot)", prop, family="beta").fit()
print(f"\nbeta: slope {beta.params['x']:.3f} (SE {beta.bse['x']:.3f}), precision phi = {beta.dispersion:.2f}")
