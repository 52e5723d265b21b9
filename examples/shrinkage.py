"""Shrinkage: BLUPs against raw group means (the seed's "borrowing strength").

For each school, the raw mean residual after the fixed effects is compared with its BLUP
n_j / (n_j + σ_e²/σ_u²) · mean: small schools are pulled hardest towards zero. With matplotlib
installed, also draws the shrinkage and caterpillar plots into the current directory.

Run:  python examples/shrinkage.py
"""

import numpy as np
import pandas as pd

from midas_glmm import MixedModel, datasets

schools = datasets.load("schools")
res = MixedModel.from_formula("score ~ hours + (1 | school)", schools).fit()
d = res.design
resid = d.y - res.predict(random_effects=False)
term = d.terms[0]
n_j = np.bincount(term.codes)
raw = np.bincount(term.codes, weights=resid) / n_j
blup = res.ranef()["school"]["(Intercept)"].to_numpy()
ratio = res.sigma**2 / res.varcorr()["vcov"].iloc[0]
table = pd.DataFrame(
    {"n": n_j, "raw mean": raw, "BLUP": blup, "factor n/(n+s2e/s2u)": n_j / (n_j + ratio), "BLUP/raw": blup / raw},
    index=term.levels,
).sort_values("n")
print(table.round(3).head(8).to_string())
print("...")
print(table.round(3).tail(4).to_string())
print(
    f"\nsigma_e^2/sigma_u^2 = {ratio:.2f}: a school of {n_j.min()} keeps {n_j.min() / (n_j.min() + ratio):.0%} of "
    f"its raw deviation, one of {n_j.max()} keeps {n_j.max() / (n_j.max() + ratio):.0%}."
)

try:
    from midas_glmm import plots

    plots.shrinkage(res, path="shrinkage.png")
    plots.caterpillar(res, path="caterpillar.png")
    print("wrote shrinkage.png and caterpillar.png")
except ValueError as exc:  # matplotlib not installed
    print(exc)
