"""Fit one case with one Python tool in a fresh process and print a JSON line:
seconds (DataFrame to fitted results, standard errors included), log-likelihood, peak RSS.

    python benchmarks/worker.py {midas|statsmodels} CASE DATADIR [--method ML] [--wait]

A case whose ``task`` is "profile" is timed from the DataFrame to the profile-likelihood
intervals (fit included), which go into the JSON line as "ci". ``--method`` overrides the case's
REML/ML choice; a case with a ``dispformula`` (issue 25) passes it to ``from_formula``. ``--wait`` (for concurrency.py)
prints "ready" once libraries, warm-up and data are loaded, and starts the clock when a line
arrives on standard input. A fit that raises prints a JSON line with "error" (and exits 0), so
the table can show it.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from cases import BY_NAME  # noqa: E402


def rss_mb(field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process, in MB. Read from /proc:
    getrusage's maximum survives exec, so a worker would report its parent's peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def warm_up(tool: str) -> None:
    """One tiny fit before the clock starts, so that no tool is charged for its first-call
    costs (lazy imports, caches); fit_lme4.R does the same for lme4."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 480
    df = pd.DataFrame({"y": rng.normal(size=n), "x1": rng.normal(size=n), "g": np.arange(n) // 4})
    if tool == "midas":
        from midas_glmm import MixedModel

        # one small fit per engine path, so that every compiled kernel is loaded from numba's
        # cache before the clock starts (R has loaded all of lme4 with library(lme4)). g has 120
        # levels: past the 40 random effects of one term (engine.sparsity.SMALL_Q) and the 100 of
        # several (SMALL_Q_TERMS) a model is not factored densely; the first fit is a dense one.
        # One term takes its own factor (a diagonal one, or the level kernels for slopes:
        # FactorPlan.diagonal / blockdiag), several the general block-sparse kernels.
        MixedModel.from_formula("y ~ x1 + (1|g)", df.assign(g=df.g // 20)).fit()
        MixedModel.from_formula("y ~ x1 + (x1|g)", df).fit()
        df["h"], df["k"] = np.tile(np.arange(5), n // 5), np.arange(n) // 40
        yb = df.assign(y=(df.y > 0).astype(float))
        MixedModel.from_formula("y ~ x1 + (1|g)", df).fit()
        MixedModel.from_formula("y ~ x1 + (x1|g) + (x1|k)", df).fit()  # analytic gradient (4+ theta)
        MixedModel.from_formula("y ~ x1 + (x1 + h|g)", df).fit()  # one term's, on the level kernels
        MixedModel.from_formula("y ~ x1 + (1|g) + (1|h)", df).fit().ranef(condvar=True)  # crossed, tail
        MixedModel.from_formula("y ~ x1 + (1|g)", yb, family="binomial").fit()
        MixedModel.from_formula("y ~ x1 + (x1|g)", yb, family="binomial").fit()
        MixedModel.from_formula("y ~ x1 + (1|g)", yb, family="binomial").fit(nAGQ=5)
        MixedModel.from_formula("y ~ x1 + (1|g) + (1|h)", yb, family="binomial").fit()
        MixedModel.from_formula("y ~ x1 + (1|g)", df.assign(y=rng.poisson(2.0, len(df))), family="poisson").fit()
        try:  # a library before the ordinal family (ab.py's base side) has none to warm up
            ordinal = MixedModel.from_formula("y ~ x1 + (1|g)", df.assign(y=np.arange(len(df)) % 3), family="ordinal")
        except ValueError:
            ordinal = None
        if ordinal is not None:
            ordinal.fit(), ordinal.fit(nAGQ=5)
    else:
        import statsmodels.formula.api as smf

        smf.mixedlm("y ~ x1", df, groups=df["g"]).fit(reml=True)


def fit_statsmodels(case, df):
    """statsmodels MixedLM, REML: the old cases' one grouping factor, or a case's own spec
    (groups, re_formula, variance components)."""
    import statsmodels.formula.api as smf

    spec = case.statsmodels
    if not spec:
        fixed = case.formula.split("+ (")[0]
        re_formula = "~x1" if case.kind == "slope" else None
        return smf.mixedlm(fixed, df, groups=df["g"], re_formula=re_formula).fit(reml=True)
    return smf.mixedlm(
        spec["fixed"], df, groups=df[spec["groups"]], re_formula=spec.get("re_formula"), vc_formula=spec.get("vc")
    ).fit(reml=case.method != "ML")


def main() -> None:
    args = sys.argv[1:]
    wait = "--wait" in args
    method = None
    if "--method" in args:
        i = args.index("--method")
        method = args[i + 1]
        del args[i : i + 2]
    args = [a for a in args if a != "--wait"]
    tool, name, datadir = args[0], args[1], Path(args[2])
    case = BY_NAME[name]
    if method:
        from dataclasses import replace

        case = replace(case, method=method)
    # libraries are loaded before the clock starts (as R loads lme4 before its clock)
    import statsmodels.formula.api  # noqa: F401

    from midas_glmm import MixedModel

    warnings.simplefilter("ignore")
    warm_up(tool)
    rss_libs = rss_mb("VmRSS")
    df = pd.read_pickle(datadir / f"{name}.pkl")
    used = [c for c in df.columns]
    data_mb = sum(df[c].to_numpy().nbytes for c in used) / 2**20
    rss_loaded = rss_mb("VmRSS")
    warnings.simplefilter("ignore")
    if tool not in ("midas", "statsmodels"):
        raise SystemExit(f"unknown tool {tool}")
    # a full garbage collection now, not inside the timed fit: the warm-up's objects would
    # otherwise make one of the fit's collections cost tens of ms (the same for every tool)
    gc.collect()
    if wait:
        print("ready", flush=True)
        sys.stdin.readline()
    extra = {}
    t0 = time.perf_counter()
    try:
        if tool == "midas":
            kw = {"method": case.method} if case.method and case.is_lmm else {}
            zi = {"ziformula": case.ziformula} if case.ziformula else {}
            if case.dispformula:  # passed only when set: the other cases run on a library without it
                zi["dispformula"] = case.dispformula
            res = MixedModel.from_formula(case.formula, df, family=case.family, **zi).fit(nAGQ=case.nAGQ, **kw)
            _ = res.bse
            llf = res.llf
            crit = res.method if case.is_lmm else ("Laplace" if case.nAGQ == 1 else f"AGQ{case.nAGQ}")
            if case.task == "profile":
                ci = res.conf_int(method="profile")
                extra["ci"] = {str(k): [float(v) for v in row] for k, row in zip(ci.index, ci.to_numpy())}
        else:
            res = fit_statsmodels(case, df)
            _ = res.bse
            llf = res.llf
            crit = "ML" if case.method == "ML" else "REML"
            if case.task == "profile":
                raise RuntimeError("statsmodels has no profile intervals for this case")
    except Exception as e:  # noqa: BLE001 - the table shows the error, the run goes on
        seconds = time.perf_counter() - t0
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        print(json.dumps({"tool": tool, "case": name, "seconds": seconds, "llf": float("nan"), "error": msg}))
        return
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "tool": tool,
                "case": name,
                "seconds": seconds,
                "llf": float(llf),
                "crit": crit,
                "peak_rss_mb": rss_mb(),
                "rss_loaded_mb": rss_loaded,
                "rss_libs_mb": rss_libs,
                "data_mb": data_mb,
                **extra,
            }
        )
    )


if __name__ == "__main__":
    main()
