"""One tool's fits of one case for pyports.py, in one process: a JSON line per fit on stdout.

    python benchmarks/pyports_worker.py SPEC.json      # SPEC: tool, formula, family, data, reps, ...
    python benchmarks/pyports_worker.py --versions TOOL

The tool is imported and the data read before anything is timed; then each fit starts when a line
arrives on stdin (pyports.py alternates the tools). Fits 0..reps are each timed with
time.perf_counter around the user's whole call (formula parsing included); pyports.py counts its
warm-ups among them. Each line
has the seconds, the log-likelihood the tool reports and its criterion ("REML", "ML", "Laplace"),
or the error. Runs under the project's python (midas) or the peers' (mixedlm, glmm), so it
imports nothing from the repository.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
import warnings


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def fitter(tool: str, formula: str, fam: str | None, weights: str | None):
    """The user's call, a function of the DataFrame (Gaussian: REML; else Laplace)."""
    if tool == "midas":
        from midas_glmm import MixedModel

        return lambda df: MixedModel.from_formula(formula, df, family=fam).fit(method="REML" if fam is None else None)
    if tool == "mixedlm":
        import mixedlm
        from mixedlm.families import Binomial, Poisson

        if fam is None:
            return lambda df: mixedlm.lmer(formula, df, REML=True)
        family = {"binomial": Binomial, "poisson": Poisson}[fam]()
        return lambda df: mixedlm.glmer(formula, df, family=family, weights=weights)
    import glmm

    name = {None: "gaussian", "nbinom2": "negativebinomial"}.get(fam, fam)
    return lambda df: glmm.fit(df, formula, name, reml=True if fam is None else None)


def loglik(tool: str, res, gaussian: bool) -> tuple[float, str]:
    """The log-likelihood the tool reports, and whether it is the REML, ML or Laplace one."""
    if tool == "midas":
        return res.llf, res.method if gaussian else "Laplace"
    if tool == "mixedlm":
        ll = res.logLik()
        return float(ll), ("REML" if ll.REML else "ML") if gaussian else "Laplace"
    return res.loglik, {"reml": "REML", "maximum_likelihood": "ML", "laplace": "Laplace"}.get(res.objective, "?")


def main() -> None:
    if sys.argv[1] == "--versions":
        import platform
        from importlib.metadata import version

        import numpy
        import pandas

        m = __import__({"midas": "midas_glmm"}.get(sys.argv[2], sys.argv[2]))
        v = getattr(m, "__version__", None) or version(m.__name__)
        return emit(
            python=platform.python_version(),
            numpy=numpy.__version__,
            pandas=pandas.__version__,
            tool=v,
            file=m.__file__,
        )
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    warnings.simplefilter("ignore")
    import pandas as pd

    call = fitter(spec["tool"], spec["formula"], spec["family"], spec.get("weights"))  # imports the tool
    df = pd.read_csv(spec["data"], dtype={c: str for c in spec["str_cols"]})
    emit(ready=True)
    for i in range(spec["reps"] + 1):
        if not sys.stdin.readline():  # the parent is gone
            return
        t0 = time.perf_counter()
        try:
            res = call(df)
        except Exception as e:  # the table shows the error
            traceback.print_exc()
            return emit(i=i, error=f"{type(e).__name__}: {e}"[:300])
        seconds = time.perf_counter() - t0
        llf, crit = loglik(spec["tool"], res, spec["family"] is None)
        emit(i=i, seconds=seconds, llf=float(llf), crit=crit)


if __name__ == "__main__":
    main()
