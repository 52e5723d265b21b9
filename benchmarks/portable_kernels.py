"""What compiled kernels built for a portable CPU would cost: a planning input for shipping them
prebuilt (issue 28: the first fit after install within 3 s).

    python benchmarks/portable_kernels.py --reps 7 --out benchmarks/RESULTS_PORTABLE.md \\
        slope_binary_2e3 nested_slopes_lmm insteval_crossed binary_agq10_1e4

numba compiles for the machine it runs on (its CPU name and features), and its cache is keyed by
them. Kernels shipped in a wheel would have to be compiled for a CPU every user's machine has:
``NUMBA_CPU_NAME=generic`` (x86-64's baseline, SSE2) or a later level (``x86-64-v3``: AVX2, FMA).
Per case and CPU setting (``host`` = numba's default), one process with its own cache directory
fits the case twice untimed (compiling, then loading nothing), then ``--reps`` times: the fit's
best and median. Then, per setting, fresh processes with that cache already built (what a shipped
cache would give a first fit after install, import and data included): the best of three. The
log-likelihoods must agree across settings (the same arithmetic, other instructions).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ab_inprocess import append_table  # noqa: E402

TIMED = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {bench!r})
import numpy as np
import midas_glmm
from ab_inprocess import case_of
data, formula, model_kw, fit_kw = case_of({name!r}, {{"midas_glmm": midas_glmm}})
fit = lambda: midas_glmm.MixedModel.from_formula(formula, data, **model_kw).fit(**fit_kw)
fit(); fit()
ts = []
for _ in range({reps}):
    t = time.perf_counter(); res = fit(); ts.append(time.perf_counter() - t)
print(json.dumps({{"best": min(ts), "median": float(np.median(ts)), "llf": res.llf}}))
"""

FRESH = """
import sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {bench!r})
import midas_glmm
from ab_inprocess import case_of
data, formula, model_kw, fit_kw = case_of({name!r}, {{"midas_glmm": midas_glmm}})
midas_glmm.MixedModel.from_formula(formula, data, **model_kw).fit(**fit_kw)
"""


def env_for(cpu: str, cache: Path) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(HERE.parent))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("NUMBA_CPU_NAME", None)
    if cpu != "host":
        env["NUMBA_CPU_NAME"] = cpu
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--cpus", nargs="+", default=["host", "generic", "x86-64-v3"])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            found = {}
            for cpu in args.cpus:
                env = env_for(cpu, Path(tmp) / f"{name}-{cpu}")
                code = TIMED.format(bench=str(HERE), name=name, reps=args.reps)
                out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{name} ({cpu}): {out.stderr[-2000:]}")
                timed = json.loads(out.stdout.strip().splitlines()[-1])
                fresh = []
                for _ in range(3):
                    t = time.perf_counter()
                    subprocess.run(
                        [sys.executable, "-c", FRESH.format(bench=str(HERE), name=name)], env=env, check=True
                    )
                    fresh.append(time.perf_counter() - t)
                found[cpu] = (timed, min(fresh))
            host = found[args.cpus[0]][0]
            for cpu, (timed, fresh) in found.items():
                rows.append(
                    f"| {name} | {cpu} | {1e3 * timed['best']:.2f} | {1e3 * timed['median']:.2f} | "
                    f"{timed['median'] / host['median']:.3f} | {fresh:.2f} | {timed['llf'] - host['llf']:+.1e} |"
                )
                print(rows[-1], flush=True)
    host = args.cpus[0]
    append_table(
        args.out,
        f"python benchmarks/portable_kernels.py --reps {args.reps} --cpus {' '.join(args.cpus)} ...",
        ["case", "CPU", "best ms", "median ms", f"median / {host}", "fresh process, cache built, s", f"llf - {host}"],
        rows,
    )


if __name__ == "__main__":
    main()
