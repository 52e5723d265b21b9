"""Many responses, one design: fit_many on simulated expression data.

Two hundred "genes" measured on the sleepstudy design's rows are simulated (a few with a Days
effect), one model is fitted to all of them, and the genes with a Days effect are found at a 5%
false discovery rate. Prints what it shows.
"""

import warnings

import numpy as np
import pandas as pd

from midas_glmm import MixedModel, datasets

sleep = datasets.load("sleepstudy")
rng = np.random.default_rng(2026)
subject = sleep.Subject.astype("category").cat.codes.to_numpy()
genes = {}
for g in range(200):
    slope = 0.8 if g < 20 else 0.0  # the first 20 genes change with Days
    genes[f"gene{g:03d}"] = 5 + slope * sleep.Days + rng.normal(0, 1.0, 18)[subject] + rng.normal(0, 2, len(sleep))
expr = pd.DataFrame(genes, index=sleep.index)
expr.iloc[[3, 17], 5] = np.nan  # gene005 has two missing measurements

model = MixedModel.from_formula("~ Days + (1 | Subject)", sleep)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the collection's summary warnings (singular fits)
    res = model.fit_many(expr)
print(res)

adjusted = res.pvalues_adjusted("fdr_bh")["Days"]
found = adjusted.index[adjusted < 0.05]
hits = sum(f < "gene020" for f in found)
print(f"genes with a Days effect at 5% FDR: {len(found)} (true: 20; found among them: {hits})")
print("rows used by gene005:", res.nobs["gene005"], "of", len(sleep))
print(res.to_frame().head(4).to_string(index=False))

one = res["gene000"]  # the full result of one gene
print(one.params.round(4).to_dict(), round(one.llf, 4))
