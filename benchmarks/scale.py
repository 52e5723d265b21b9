"""Issue 27: crossed models of MovieLens' shape, the exact engine beside the iterative one.

    python benchmarks/scale.py --size 2e6 --model lmm glmm --solver direct iterative
    python benchmarks/scale.py --size ml32m --model lmm --solver iterative

Each fit runs in its own process, from the rows in a parquet file (made once by
:mod:`movielens` and cached), and reports: the time to build the model (``from_formula``) and to
fit it, the process's peak memory (VmHWM, the DataFrame included, as a user would have it), the
estimates, and the iterative solver's Monte Carlo errors. The tables compare the iterative fit
with the direct one (variances' relative difference, fixed effects' difference in SEs, speed)
and with the simulation's true values. Written to ``--out`` (a RESULTS file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import movielens  # noqa: E402

FORMULAS = {
    "lmm": ("rating ~ x + (1|user) + (1|movie)", None),
    "glmm": ("liked ~ x + (1|user) + (1|movie)", "binomial"),
}


def data_path(size: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"movielens_{size}.parquet"
    if not path.exists():
        t = time.perf_counter()
        df = movielens.make(size)
        df.to_parquet(path)
        print(f"generated {size}: {len(df):,} rows in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return path


def child(args) -> None:
    """One fit in this process; prints a JSON line."""
    import numpy as np
    import pandas as pd

    from midas_glmm import MixedModel

    formula, family = FORMULAS[args.model]
    workers_peak = None
    if args.dask:  # a LocalCluster of two single-threaded workers, the rows read from parquet
        import threading

        import dask.dataframe as dd
        import distributed

        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        client = distributed.Client(cluster)
        limit = min(w["memory_limit"] for w in client.scheduler_info()["workers"].values())
        df = dd.read_parquet(args.path, split_row_groups=True)
        peaks, stop = [0.0], threading.Event()

        def watch():  # the workers' largest resident memory, sampled every 2 s
            import psutil

            while not stop.wait(2.0):
                try:
                    rss = client.run(lambda: psutil.Process().memory_info().rss)
                    peaks[0] = max(peaks[0], max(rss.values()) / 2**30)
                except Exception:  # noqa: BLE001 - a sample missed while the cluster is busy
                    pass

        threading.Thread(target=watch, daemon=True).start()
    else:
        df = pd.read_parquet(args.path)
    t0 = time.perf_counter()
    model = MixedModel.from_formula(formula, df, family=family)
    t1 = time.perf_counter()
    res = model.fit(method="ML" if family is None else None, solver=args.solver)
    t2 = time.perf_counter()
    if args.dask:
        stop.set()
        workers_peak = {"peak_gib": peaks[0], "limit_gib": limit / 2**30, "partitions": df.npartitions}
    peak = 0.0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 2**20  # kB -> GiB
    vc = res.varcorr()
    sds = {f"sd_{g}": float(s) for g, s in zip(vc["grp"], vc["sdcor"]) if g != "Residual"}
    if family is None:
        sds["sigma"] = float(res.sigma)
    err = res.solver_error
    out = {
        "solver": res.solver,
        "rows": int(res.nobs),
        "levels": {k: int(v) for k, v in res.ngroups.items()},
        "build_s": t1 - t0,
        "fit_s": t2 - t1,
        "peak_gib": peak,
        "llf": float(res.llf),
        "params": {k: float(v) for k, v in res.params.items()},
        "bse": {k: float(v) for k, v in res.bse.items()},
        "sd": sds,
        "mc_se": None if err is None else {k: float(v) for k, v in err.items()},
        "evaluations": None if res.estimates.solver is None else res.estimates.solver.evaluations,
        "dask_workers": workers_peak,
    }
    del np
    print("RESULT " + json.dumps(out), flush=True)


def run_one(path: Path, model: str, solver: str, timeout: float, dask: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", "--path", str(path), "--model", model, "--solver", solver]
    cmd += ["--dask"] if dask else []
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"solver": solver, "error": f"timed out after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (p.stderr or "").strip().splitlines()[-3:]
    return {"solver": solver, "error": f"failed after {time.perf_counter() - t:.0f} s: " + " | ".join(tail)}


def _fmt_sd(r: dict) -> str:
    return ", ".join(f"{k.replace('sd_', '')} {v:.5f}" for k, v in r["sd"].items())


def report(size: str, model: str, runs: dict[str, dict]) -> list[str]:
    n, users, movies = movielens.SIZES.get(size, (0, 0, 0))
    formula = FORMULAS[model][0]
    lines = [f"### {size}: `{formula}`" + (" (binomial, Laplace)" if model == "glmm" else " (ML)"), ""]
    lines.append("| solver | build | fit | peak memory | logLik | estimates (SDs) | fixed effects (SE) | MC SE |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for solver, r in runs.items():
        if "error" in r:
            lines.append(f"| {solver} | | | | | {r['error']} | | |")
            continue
        fe = ", ".join(f"{k} {v:.5f} ({r['bse'][k]:.5f})" for k, v in r["params"].items())
        mc = "" if not r["mc_se"] else ", ".join(f"{k} {v:.1e}" for k, v in r["mc_se"].items()).replace("|", "\\|")
        mem = f"{r['peak_gib']:.2f} GiB"
        if r.get("dask_workers"):
            dw = r["dask_workers"]
            mem += f" (client); workers ≤ {dw['peak_gib']:.2f} of {dw['limit_gib']:.1f} GiB"
            mem += f", {dw['partitions']} partitions"
        lines.append(
            f"| {solver} | {r['build_s']:.1f} s | {r['fit_s']:.1f} s | {mem} | {r['llf']:.2f} | "
            f"{_fmt_sd(r)} | {fe} | {mc} |"
        )
    lines.append("")
    d, it = runs.get("direct"), runs.get("iterative") or runs.get("iterative (Dask)")
    if d and it and "error" not in d and "error" not in it:
        var_rel = {k: abs(it["sd"][k] ** 2 / d["sd"][k] ** 2 - 1) for k in d["sd"]}
        beta_se = {k: abs(it["params"][k] - d["params"][k]) / d["bse"][k] for k in d["params"]}
        lines.append(
            "Iterative against direct: variances' relative differences "
            + ", ".join(f"{k.replace('sd_', '')} {v:.1e}" for k, v in var_rel.items())
            + " (target ≤ 1e-2); fixed effects' differences in SEs "
            + ", ".join(f"{k} {v:.1e}" for k, v in beta_se.items())
            + f" (target ≤ 0.02); logLik {it['llf'] - d['llf']:+.2f}; fit {d['fit_s'] / it['fit_s']:.1f}x faster "
            + "(target ≥ 5x)."
        )
        lines.append("")
    truth = movielens.TRUTH["rating" if model == "lmm" else "liked"]
    if it and "error" not in it:
        rel = {}
        for k, v in it["sd"].items():
            key = "sigma" if k == "sigma" else k.replace("sd_", "sd_")
            if key in truth:
                rel[key] = v / truth[key] - 1
        rel.update({k: it["params"][k] - truth[k] for k in it["params"] if k in truth})
        lines.append(
            "Iterative against the simulation's true values: SDs' relative errors "
            + ", ".join(f"{k} {v:+.2%}" for k, v in rel.items() if k.startswith("sd") or k == "sigma")
            + "; fixed effects' errors "
            + ", ".join(f"{k} {v:+.4f}" for k, v in rel.items() if not (k.startswith("sd") or k == "sigma"))
            + "."
        )
        lines.append("")
    del n, users, movies
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--size", default="2e6", choices=list(movielens.SIZES))
    ap.add_argument("--model", nargs="+", default=["lmm", "glmm"], choices=list(FORMULAS))
    ap.add_argument("--solver", nargs="+", default=["direct", "iterative"])
    ap.add_argument("--cache", default=os.environ.get("MOVIELENS_CACHE", "/tmp/midas_movielens"))
    ap.add_argument("--timeout", type=float, default=4 * 3600)
    ap.add_argument("--out", default="")
    ap.add_argument("--dask", action="store_true", help="read the parquet with Dask on a 2-worker LocalCluster")
    args = ap.parse_args()
    if args.child:
        args.solver = args.solver[0]
        args.model = args.model[0]
        child(args)
        return
    path = data_path(args.size, Path(args.cache))
    lines = [
        f"## MovieLens-shaped crossed models, {args.size} ({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, {platform.machine()})",
        "",
        "Each fit in its own process; build = `from_formula`, fit = `fit(method=..., solver=...)`; peak memory"
        " is the process's VmHWM (the DataFrame included).",
        "",
    ]
    for model in args.model:
        runs = {}
        for solver in args.solver:
            runs[solver + (" (Dask)" if args.dask else "")] = run_one(path, model, solver, args.timeout, args.dask)
            print(solver, model, json.dumps(list(runs.values())[-1])[:400], file=sys.stderr, flush=True)
        lines += report(args.size, model, runs)
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
