"""Crossed random effects: lme4's Penicillin data — 6 samples each tested on 24 plates, every
plate with every sample. Plate and sample effects are crossed, not nested.

Run:  python examples/crossed_effects.py
"""

from midas_glmm import MixedModel, datasets

pen = datasets.load("penicillin")
res = MixedModel.from_formula("diameter ~ 1 + (1 | plate) + (1 | sample)", pen).fit()
print(res.summary())
print("\nshare of variance per factor (ICC):", res.icc().round(3).to_dict())
print("\nsample effects (BLUPs with conditional SDs):")
long = res.ranef(condvar=True)
print(long[long["grpvar"] == "sample"].round(4).to_string(index=False))
print("\nKenward-Roger test of the intercept:")
print(res.coef_table(ddf="kenward-roger").round(4).to_string())
