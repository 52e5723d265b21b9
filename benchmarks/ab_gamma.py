"""Gamma GLMM fits (log link, one random intercept, simulated) of two source trees, alternated in one process.

    git worktree add --detach /tmp/w/base HEAD~1
    python benchmarks/ab_gamma.py --base /tmp/w/base --new . --reps 10

cases.py has no Gamma case (its R scripts map no Gamma family): y ~ Gamma(shape 4, mean
exp(0.5 + 0.3 x + u_g)), u_g ~ N(0, 0.5²), at 1e3, 1e4 and 1e5 rows. Prints a Markdown row per size:
best and median milliseconds of ``MixedModel.from_formula(...).fit()`` per tree (two untimed
repetitions first), new / base, the optimizer's evaluations and the log-likelihoods' difference.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_fit_many import load_tree  # noqa: E402

SIZES = ((1_000, 50), (10_000, 200), (100_000, 2_000))


def data(n: int, groups: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, groups, n)})
    mu = np.exp(0.5 + 0.3 * d.x + rng.normal(0, 0.5, groups)[d.g])
    d["y"] = rng.gamma(4.0, mu / 4.0)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    trees = {"base": load_tree(args.base), "new": load_tree(args.new)}
    print(
        "| model | base best ms | base median ms | new best ms | new median ms | new/base median | new/base best "
        "| evaluations base / new | llf new - base |\n|---|---|---|---|---|---|---|---|---|"
    )
    for n, groups in SIZES:
        d = data(n, groups)
        times, out = {"base": [], "new": []}, {}
        for rep in range(args.reps + 2):
            for side, mods in trees.items():
                sys.modules.update(mods)
                mg = mods["midas_glmm"]
                t = time.perf_counter()
                res = mg.MixedModel.from_formula("y ~ x + (1|g)", d, family=mg.family("gamma", link="log")).fit()
                if rep >= 2:
                    times[side].append(1e3 * (time.perf_counter() - t))
                out[side] = (res.llf, res.estimates.opt.nfev)
        b, w = np.array(times["base"]), np.array(times["new"])
        print(
            f"| Gamma (log), {n:,} rows x {groups:,} g | {b.min():.1f} | {np.median(b):.1f} | {w.min():.1f} | "
            f"{np.median(w):.1f} | {np.median(w) / np.median(b):.3f} | {w.min() / b.min():.3f} | "
            f"{out['base'][1]} / {out['new'][1]} | {out['new'][0] - out['base'][0]:+.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
