"""Fit one case with one Python tool in a fresh process and print a JSON line:
seconds (DataFrame to fitted results, standard errors included), log-likelihood, peak RSS.

    python benchmarks/worker.py {midas|statsmodels} CASE DATADIR
"""

from __future__ import annotations

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
    df = pd.DataFrame({"y": rng.normal(size=60), "x1": rng.normal(size=60), "g": np.repeat(np.arange(6), 10)})
    if tool == "midas":
        from midas_glmm import MixedModel

        MixedModel.from_formula("y ~ x1 + (1|g)", df).fit()
        MixedModel.from_formula("y ~ x1 + (1|g)", df.assign(y=(df.y > 0).astype(float)), family="binomial").fit()
    else:
        import statsmodels.formula.api as smf

        smf.mixedlm("y ~ x1", df, groups=df["g"]).fit(reml=True)


def main() -> None:
    tool, name, datadir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    case = BY_NAME[name]
    # libraries are loaded before the clock starts (as R loads lme4 before its clock)
    import statsmodels.formula.api as smf

    from midas_glmm import MixedModel

    warnings.simplefilter("ignore")
    warm_up(tool)
    rss_libs = rss_mb("VmRSS")
    df = pd.read_pickle(datadir / f"{name}.pkl")
    used = [c for c in df.columns]
    data_mb = sum(df[c].to_numpy().nbytes for c in used) / 2**20
    rss_loaded = rss_mb("VmRSS")
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    if tool == "midas":
        res = MixedModel.from_formula(case.formula, df, family=case.family).fit(nAGQ=case.nAGQ)
        _ = res.bse
        llf = res.llf
    elif tool == "statsmodels":
        fixed = case.formula.split("+ (")[0]
        re_formula = "~x1" if case.kind == "slope" else None
        res = smf.mixedlm(fixed, df, groups=df["g"], re_formula=re_formula).fit(reml=True)
        _ = res.bse
        llf = res.llf
    else:
        raise SystemExit(f"unknown tool {tool}")
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "tool": tool,
                "case": name,
                "seconds": seconds,
                "llf": float(llf),
                "peak_rss_mb": rss_mb(),
                "rss_loaded_mb": rss_loaded,
                "rss_libs_mb": rss_libs,
                "data_mb": data_mb,
            }
        )
    )


if __name__ == "__main__":
    main()
