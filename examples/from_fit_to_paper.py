"""From a fit to the numbers a paper reports: ANOVA tables, marginal means and contrasts, R²,
residual checks, prediction intervals and tests of the random effects.

The same steps in R need lmerTest, emmeans, performance and DHARMa (see docs/lme4_users.md).
Run: python examples/from_fit_to_paper.py
"""

import warnings

import numpy as np
import pandas as pd

from midas_glmm import MixedModel, datasets

warnings.simplefilter("ignore")

# --- a linear mixed model: reaction times over days of sleep deprivation, per subject
sleep = datasets.load("sleepstudy")
sleep["phase"] = np.where(sleep.Days < 5, "early", "late")
res = MixedModel.from_formula("Reaction ~ C(phase) + Days + (Days | Subject)", sleep).fit()
print(res.summary(ddf="satterthwaite", anova=True))

print("\nSequential (type 1) ANOVA, Kenward-Roger df:")
print(res.anova(type=1, ddf="kenward-roger"))

print("\nDropping each term (lmerTest's drop1) and a custom contrast (lmerTest's contest):")
print(res.drop1())
L = [[0, 1, 0], [0, 0, 1]]  # late vs early, and the Days slope, jointly and one by one
print(res.wald_test(L, ddf="kenward-roger"))
print(res.t_test(L))

print("\nEstimated marginal means of phase (Days at its mean) and their contrast:")
print(res.emmeans("phase"))
print(res.contrasts("phase"))

print("\nNakagawa R²:")
print(res.r2())

print("\nDo the random slopes matter? (likelihood-ratio tests of the random terms)")
print(res.ranova())

new = pd.DataFrame({"Days": [0, 9, 9], "phase": ["early", "late", "late"], "Subject": ["308", "308", "a new subject"]})
print("\nPredictions with 95% intervals (a known and a new subject):")
print(res.get_prediction(new).summary_frame().round(2))

# --- a binomial GLMM: contagious bovine pleuropneumonia in herds over four periods
cbpp = datasets.load("cbpp")
glmm = MixedModel.from_formula(
    "cbind(incidence, size - incidence) ~ C(period) + (1|herd)", cbpp, family="binomial"
).fit()
print("\nType 3 Wald chi-square tests (car::Anova):")
print(glmm.anova())
print("\nIncidence per period on the probability scale, and Tukey-adjusted comparisons:")
print(glmm.emmeans("period", type="response").round(4))
print(glmm.contrasts("period").round(4))
print("\nPearson residuals (first five):", glmm.resid_pearson.head().round(3).tolist())
print("Deviance residuals (first five):", glmm.resid_deviance.head().round(3).tolist())

q = glmm.simulate_residuals(n=250, seed=1)
print("\nSimulation-based residual checks (DHARMa's tests):")
print(q.summary().round(4))
