"""The seed's example: students in schools.

Fits score ~ hours + (1 | school) by REML, shows the variance components, ICC and design
effect, then refits by ML to compare AIC/BIC with a model without the hours effect (REML
criteria cannot compare models with different fixed effects).

Run:  python examples/schools.py
"""

import warnings

from midas_glmm import MixedModel, datasets

schools = datasets.load("schools")
model = MixedModel.from_formula("score ~ hours + (1 | school)", schools)

reml = model.fit(method="REML")
print(reml.summary())
print()
print("ICC:", reml.icc().round(3).to_dict(), " design effect:", reml.design_effect().round(2).to_dict())

print("\nComparing fixed effects needs ML fits:")
ml_full = model.fit(method="ML")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ml_null = MixedModel.from_formula("score ~ 1 + (1 | school)", schools).fit(method="ML")
for name, r in (("score ~ hours + (1|school)", ml_full), ("score ~ 1 + (1|school)", ml_null)):
    print(f"  {name:30s} AIC {r.aic():9.2f}  BIC {r.bic():9.2f}  logLik {r.llf:9.2f}")
