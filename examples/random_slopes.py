"""Random slopes: reaction time by days of sleep deprivation, each subject with their own
intercept and slope (lme4's sleepstudy), correlated and uncorrelated, compared by LRT.

Run:  python examples/random_slopes.py
"""

import warnings

from midas_glmm import MixedModel, compare, datasets

sleep = datasets.load("sleepstudy")
correlated = MixedModel.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit()
print(correlated.summary(ddf="satterthwaite"))
print("\nvariance components (lme4's VarCorr):")
print(correlated.varcorr())
print("\nfirst subjects' intercept and slope deviations:")
print(correlated.ranef()["Subject"].head())

uncorrelated = MixedModel.from_formula("Reaction ~ Days + (Days || Subject)", sleep).fit()
intercept_only = MixedModel.from_formula("Reaction ~ Days + (1 | Subject)", sleep).fit()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # compare() says it refits with ML
    print("\nlikelihood-ratio tests (refitted by ML):")
    print(compare(intercept_only, uncorrelated, correlated).round(4).to_string())
