"""Parametric bootstrap intervals (``conf_int(method="bootstrap")``): the refits as the library
chooses them (a Gaussian model's through fit_many's batch, a GLMM's one by one from the fit's θ̂)
against the refits one by one from each fit's own start (every model's path before), on the same
simulated responses.

    python benchmarks/bootstrap.py --n-boot 200 --reps 5 sleepstudy dyestuff penicillin nested_lmm_2e3

Per case: ``--reps`` alternations in one process, warm (best and median seconds of each path, and
the largest difference between the two tables relative to the interval's width); then
``--fresh`` fresh processes per path timing import, data, the fit and the bootstrap (numba's cache
as the user's: built by earlier runs), the cost a script pays. Prints, and with --out appends as
Markdown, the table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

FRESH = """
import sys, time, warnings
t0 = time.perf_counter()
warnings.simplefilter("ignore")
sys.path.insert(0, {bench!r})
import midas_glmm
from midas_glmm.posthoc import bootstrap
from ab_inprocess import case_of
data, formula, model_kw, fit_kw = case_of({name!r}, {{"midas_glmm": midas_glmm}})
if {one_by_one!r}:
    bootstrap._batched = lambda res: False
    bootstrap._refit_options = lambda res: dict(res.fit_options)
res = midas_glmm.MixedModel.from_formula(formula, data, **model_kw).fit(**fit_kw)
t1 = time.perf_counter()
res.conf_int(method="bootstrap", n_boot={n_boot}, seed=1)
print(t1 - t0, time.perf_counter() - t1)
"""


def fresh(name: str, n_boot: int, one_by_one: bool) -> tuple[float, float]:
    """(import + data + fit, bootstrap) seconds of one new process."""
    code = FRESH.format(bench=str(HERE), name=name, n_boot=n_boot, one_by_one=one_by_one)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=HERE.parent)
    if out.returncode != 0:
        raise RuntimeError(f"{name}: {out.stderr[-2000:]}")
    a, b = out.stdout.split()[-2:]
    return float(a), float(b)


def main() -> None:
    sys.path.insert(0, str(HERE))
    from ab_inprocess import append_table, case_of

    import midas_glmm
    from midas_glmm.posthoc import bootstrap

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--fresh", type=int, default=3, help="fresh processes per path (0: none)")
    ap.add_argument("--out", help="a Markdown file to append the table to")
    ap.add_argument("cases", nargs="+")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    chosen, options = bootstrap._batched, bootstrap._refit_options
    batches = []  # the library's fit_many calls: the path it took
    fit_many = midas_glmm.MixedModel.fit_many

    def counted(self, *a, **kw):
        batches.append(1)
        return fit_many(self, *a, **kw)

    midas_glmm.MixedModel.fit_many = counted
    rows = []
    for name in args.cases:
        data, formula, model_kw, fit_kw = case_of(name, {"midas_glmm": midas_glmm})
        res = midas_glmm.MixedModel.from_formula(formula, data, **model_kw).fit(**fit_kw)
        times: dict[str, list[float]] = {"library": [], "one by one": []}
        tables = {}
        batches.clear()
        for _ in range(args.reps):
            for path in times:
                bootstrap._batched = chosen if path == "library" else (lambda r: False)
                bootstrap._refit_options = options if path == "library" else (lambda r: dict(r.fit_options))
                t = time.perf_counter()
                tables[path] = res.conf_int(method="bootstrap", n_boot=args.n_boot, seed=1)
                times[path].append(time.perf_counter() - t)
        bootstrap._batched, bootstrap._refit_options = chosen, options
        width = (tables["one by one"]["upper"] - tables["one by one"]["lower"]).to_numpy()
        diff = np.abs(tables["library"].to_numpy() - tables["one by one"].to_numpy()).max(axis=1) / width
        lib, one = np.array(times["library"]), np.array(times["one by one"])
        cold = ""
        if args.fresh:
            fl = min(fresh(name, args.n_boot, False)[1] for _ in range(args.fresh))
            fo = min(fresh(name, args.n_boot, True)[1] for _ in range(args.fresh))
            cold = f" | {fl:.3f} | {fo:.3f}"
        rows.append(
            f"| {name} | {len(res.design.y):,} | {'fit_many' if batches else 'one by one'} | "
            f"{lib.min():.3f} / {np.median(lib):.3f} | {one.min():.3f} / {np.median(one):.3f} | "
            f"{np.median(one) / np.median(lib):.1f} | {diff.max():.1e}{cold} |"
        )
        print(rows[-1], flush=True)
    header = [
        "case",
        "rows",
        "library's path (warm)",
        "library best / median s",
        "one by one best / median s",
        "one by one / library",
        "max |table diff| / width",
    ]
    if args.fresh:
        header += ["fresh process: library s", "fresh process: one by one s"]
    append_table(args.out, " ".join(["python benchmarks/bootstrap.py", *sys.argv[1:]]), header, rows)


if __name__ == "__main__":
    main()
