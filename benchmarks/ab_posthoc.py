"""Post-hoc inference A/B: two source trees of midas_glmm in one process, their calls alternated.

    git worktree add --detach /tmp/w/base HEAD~1
    python benchmarks/ab_posthoc.py --base /tmp/w/base --new . --reps 5

Profile intervals (``conf_int(method="profile")``) of sleepstudy's (Days | Subject) and (1 | Subject)
and of Penicillin's crossed intercepts, and sleepstudy's Satterthwaite and Kenward-Roger tables, each
fitted once per tree (as ab_fit_many.py imports a tree whole); the tables' derivatives, which a
result keeps, are dropped before each call. Prints, and with --out appends as
Markdown, the median milliseconds of each tree, new / base, and the largest relative difference of
the two trees' tables.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def jobs(mg) -> dict:
    ss = mg.datasets.load("sleepstudy")
    slope = mg.MixedModel.from_formula("Reaction ~ Days + (Days|Subject)", ss).fit()
    inter = mg.MixedModel.from_formula("Reaction ~ Days + (1|Subject)", ss).fit()
    pen = mg.MixedModel.from_formula("diameter ~ 1 + (1|plate) + (1|sample)", mg.datasets.load("penicillin")).fit()

    def table(ddf):  # the derivatives a result keeps (its _ddf_cache) dropped: computed each call
        slope.__dict__.pop("_ddf_cache", None)
        return slope.coef_table(ddf=ddf)

    return {
        "profile sleepstudy (Days|Subject)": lambda: slope.conf_int(method="profile"),
        "profile sleepstudy (1|Subject)": lambda: inter.conf_int(method="profile"),
        "profile penicillin": lambda: pen.conf_int(method="profile"),
        "satterthwaite sleepstudy (Days|Subject)": lambda: table("satterthwaite"),
        "kenward-roger sleepstudy (Days|Subject)": lambda: table("kenward-roger"),
    }


def main() -> None:
    sys.path.insert(0, str(HERE))
    from ab_fit_many import load_tree
    from ab_inprocess import append_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", help="a Markdown file to append the table to")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    trees = {"base": load_tree(args.base), "new": load_tree(args.new)}
    calls = {}
    for side, mods in trees.items():
        sys.modules.update(mods)
        calls[side] = jobs(mods["midas_glmm"])
    rows = []
    for name in calls["base"]:
        times: dict[str, list[float]] = {"base": [], "new": []}
        tables = {}
        for _ in range(args.reps):
            for side, mods in trees.items():
                sys.modules.update(mods)
                t = time.perf_counter()
                tables[side] = calls[side][name]()
                times[side].append(time.perf_counter() - t)
        a, b = (np.median(times[s]) for s in ("base", "new"))
        va, vb = (tables[s].select_dtypes("number").to_numpy() for s in ("base", "new"))
        diff = np.nanmax(np.abs(va - vb) / np.maximum(np.abs(va), 1e-12))
        rows.append(f"| {name} | {a * 1e3:.1f} | {b * 1e3:.1f} | {b / a:.2f} | {diff:.1e} |")
        print(rows[-1], flush=True)
    header = ["call", "base median ms", "new median ms", "new / base", "max relative difference of the tables"]
    append_table(args.out, " ".join(["python benchmarks/ab_posthoc.py", *sys.argv[1:]]), header, rows)


if __name__ == "__main__":
    main()
