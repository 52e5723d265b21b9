"""fit_many A/B: two source trees of midas_glmm in one process, their calls alternated.

    python benchmarks/ab_fit_many.py --base /tmp/w/base --new . --reps 7 ri slope ri_2e4 slope_2e4 ri_1e5 crossed

Each tree's modules are imported whole (every submodule, so that no lazy import of one tree
resolves to the other) and swapped into ``sys.modules`` before each of its calls. Each shape's
model is built once per tree and fitted once untimed (compiling where its path compiles); then
``fit_many`` of 256 simulated Gaussian responses is timed ``--reps`` times per tree, alternating.
Prints the best and median seconds, new / base of the best, and the largest difference of the
two trees' log-likelihoods.

Shapes (seeded): ri / ri_2e4 / ri_1e5 ``~ x + (1|g)`` on 2,000 rows x 100 groups, 20,000 x 200 and
100,000 x 1,000; slope / slope_2e4 ``~ x + (x|g)`` on the first two; crossed
``~ age + (1|donor) + (1|batch)`` on 20,000 rows x 200 x 40 (benchmarks/fit_many.py's design);
nested ``~ x + (1|a/c)`` on 2,000 rows, 100 levels of a with 3 of c in each; uncorrelated
``~ x + (x || g)`` on 2,000 rows x 100 groups.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import warnings

import numpy as np
import pandas as pd

SIZES = {
    "ri": (2000, 100),
    "slope": (2000, 100),
    "uncorrelated": (2000, 100),
    "ri_1e4": (10_000, 200),
    "ri_2e4": (20_000, 200),
}
SIZES["slope_2e4"] = (20_000, 200)
SIZES["ri_1e5"] = (100_000, 1000)


def load_tree(path: str) -> dict:
    """Import every module of the midas_glmm at ``path``; return them by name (and unload them)."""
    sys.path.insert(0, path)
    try:
        pkg = importlib.import_module("midas_glmm")
        for info in pkgutil.walk_packages(pkg.__path__, "midas_glmm."):
            try:
                importlib.import_module(info.name)
            except ImportError:  # an optional extra (dask, matplotlib): not on the path timed
                pass
    finally:
        sys.path.pop(0)
    mods = {k: v for k, v in sys.modules.items() if k == "midas_glmm" or k.startswith("midas_glmm.")}
    for k in mods:
        del sys.modules[k]
    return mods


def shape(name: str, rng: np.random.Generator, K: int = 256):
    if name == "nested":  # a general sparse part: the block-sparse elimination
        n = 2000
        a, c, x = rng.integers(0, 100, n), rng.integers(0, 3, n), rng.standard_normal(n)
        df = pd.DataFrame({"x": x, "a": a.astype(str), "c": c.astype(str)})
        Y = x[:, None] + rng.standard_normal((100, K))[a] + 0.5 * rng.standard_normal((300, K))[a * 3 + c]
        return df, "~ x + (1|a/c)", Y + rng.standard_normal((n, K))
    if name == "crossed":
        n = 20_000
        d, b, age = rng.integers(0, 200, n), rng.integers(0, 40, n), rng.uniform(20, 80, n)
        df = pd.DataFrame({"age": age, "donor": d.astype(str), "batch": b.astype(str)})
        Y = 1 + 0.02 * age[:, None] + rng.standard_normal((200, K))[d] * rng.uniform(0, 2, K)
        Y += rng.standard_normal((40, K))[b] * rng.uniform(0, 1, K) + rng.standard_normal((n, K))
        return df, "~ age + (1|donor) + (1|batch)", Y
    n, G = SIZES[name]
    g, x = rng.integers(0, G, n), rng.standard_normal(n)
    df = pd.DataFrame({"x": x, "g": g.astype(str)})
    if name == "uncorrelated":  # intercepts and slopes drawn apart: (x || g), two scalar terms of g
        Y = x[:, None] + rng.standard_normal((G, K))[g] * rng.uniform(0, 2, K)
        Y += 0.7 * rng.standard_normal((G, K))[g] * x[:, None]
        return df, "~ x + (x || g)", Y + rng.standard_normal((n, K))
    slope = name.startswith("slope")
    Y = x[:, None] + rng.standard_normal((G, K))[g] * rng.uniform(0, 2, K) * (1 + x[:, None] if slope else 1)
    return df, "~ x + (x|g)" if slope else "~ x + (1|g)", Y + rng.standard_normal((n, K))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("shapes", nargs="+", choices=[*SIZES, "crossed", "nested"])
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    trees = {"base": load_tree(args.base), "new": load_tree(args.new)}
    rng = np.random.default_rng(5)
    for name in args.shapes:
        df, formula, Y = shape(name, rng)
        models, llf, times = {}, {}, {"base": [], "new": []}
        for side, mods in trees.items():
            sys.modules.update(mods)
            models[side] = mods["midas_glmm"].MixedModel.from_formula(formula, df)
            llf[side] = models[side].fit_many(Y).llf.to_numpy()
        for _ in range(args.reps):
            for side, mods in trees.items():
                sys.modules.update(mods)
                t = time.perf_counter()
                models[side].fit_many(Y)
                times[side].append(time.perf_counter() - t)
        tb, tn = np.array(times["base"]), np.array(times["new"])
        print(
            f"{name:10s} base best {tb.min():.3f} med {np.median(tb):.3f} | new best {tn.min():.3f} "
            f"med {np.median(tn):.3f} | new/base {tn.min() / tb.min():.2f} | "
            f"max |llf diff| {np.nanmax(np.abs(llf['new'] - llf['base'])):.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
