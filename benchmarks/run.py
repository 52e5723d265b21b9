"""Side-by-side benchmark: midas_glmm, statsmodels MixedLM and lme4 (through Rscript when R and
lme4 are installed) on the same seeded data, in one run, alternating tools, several repetitions.

    python benchmarks/run.py                 # every case (the 1e7 case takes a while)
    python benchmarks/run.py --quick         # the small cases
    python benchmarks/run.py --cases ri_lmm_1e6 binary_glmm_1e5 --reps 5

Prints a table (median seconds, ratios, log-likelihood differences, midas peak memory) and
writes it, with the machine it ran on and a profile of where midas_glmm spends its time, to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from statistics import median

import pandas as pd

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from cases import BY_NAME, CASES, QUICK, make  # noqa: E402


def have_lme4() -> bool:
    if not shutil.which("Rscript"):
        return False
    r = subprocess.run(["Rscript", "-e", "library(lme4); library(data.table)"], capture_output=True)
    return r.returncode == 0


def run_tool(tool: str, case, datadir: Path, timeout: float) -> dict | None:
    if tool == "lme4":
        fam = case.family or "gaussian"
        cmd = ["Rscript", str(HERE / "fit_lme4.R"), case.name, str(datadir), case.formula, fam, str(case.nAGQ)]
    else:
        cmd = [sys.executable, str(HERE / "worker.py"), tool, case.name, str(datadir)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "case": case.name, "seconds": float("nan"), "llf": float("nan"), "timeout": True}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        print(f"  {tool} failed on {case.name}: {out.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    import numpy
    import scipy
    import statsmodels

    import midas_glmm

    r = "not installed"
    if have_lme4():
        r = subprocess.run(
            ["Rscript", "-e", 'cat(R.version.string, "lme4", format(packageVersion("lme4")))'],
            capture_output=True,
            text=True,
        ).stdout.strip()
    return (
        f"{platform.platform()}; CPU: {cpu}; {os.cpu_count()} cores; RAM {mem}; Python {platform.python_version()}, "
        f"midas_glmm {midas_glmm.__version__}, numpy {numpy.__version__}, scipy {scipy.__version__}, "
        f"statsmodels {statsmodels.__version__}; R: {r}"
    )


def profile_midas(case, df) -> str:
    """Where midas_glmm's time goes for one case: the stages, then the top functions."""
    from midas_glmm import MixedModel

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    m = MixedModel.from_formula(case.formula, df, family=case.family)
    t1 = time.perf_counter()
    pr = cProfile.Profile()
    pr.enable()
    m.fit(nAGQ=case.nAGQ)
    pr.disable()
    t2 = time.perf_counter()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(8)
    top = [ln for ln in s.getvalue().splitlines() if ln.strip() and ln.strip()[0].isdigit()]
    return (
        f"**{case.name}** ({case.rows_levels}): formula and design {t1 - t0:.2f} s, fit and standard "
        f"errors {t2 - t1:.2f} s. Top functions by own time:\n\n```\n" + "\n".join(top[:8]) + "\n```\n"
    )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--datadir", default=None)
    ap.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    ap.add_argument("--out", default="RESULTS.md", help="file (in benchmarks/) to write the table to")
    args = ap.parse_args(argv)
    names = args.cases or (QUICK if args.quick else [c.name for c in CASES])
    cases = [BY_NAME[n] for n in names]
    r_ok = have_lme4()
    datadir = Path(args.datadir or tempfile.mkdtemp(prefix="midas_bench_"))
    datadir.mkdir(parents=True, exist_ok=True)
    rows, profiles = [], []
    for case in cases:
        tools = [t for t in case.tools if t != "lme4" or r_ok]
        df = make(case)
        df.to_pickle(datadir / f"{case.name}.pkl")
        if "lme4" in tools:
            df.to_csv(datadir / f"{case.name}.csv", index=False)
        print(f"{case.name}: {len(df)} rows; tools {', '.join(tools)}", flush=True)
        runs: dict[str, list[dict]] = {t: [] for t in tools}
        for _ in range(args.reps):
            for tool in tools:  # alternate tools within each repetition
                out = run_tool(tool, case, datadir, args.timeout)
                if out:
                    runs[tool].append(out)
                    print(f"  {tool:12s} {out['seconds']:9.3f} s   llf {out['llf']:.6f}", flush=True)
        row = {"case": case.name, "rows x levels": case.rows_levels}
        med = {t: median(r["seconds"] for r in rs) if rs else float("nan") for t, rs in runs.items()}
        llf = {t: rs[0]["llf"] if rs else float("nan") for t, rs in runs.items()}
        row["midas s"] = med.get("midas")
        for t in ("statsmodels", "lme4"):
            row[f"{t} s"] = med.get(t, float("nan"))
            row[f"{t}/midas"] = med.get(t, float("nan")) / med["midas"]
            row[f"llf midas-{t}"] = llf.get("midas", float("nan")) - llf.get(t, float("nan"))
        mids = runs.get("midas") or []
        if mids:
            m0 = mids[0]
            row["midas peak MB"] = max(r["peak_rss_mb"] for r in mids)
            base = m0["rss_libs_mb"]
            row["memory / data"] = (row["midas peak MB"] - base) / m0["data_mb"]
            row["us per row"] = 1e6 * med["midas"] / case.n
        rows.append(row)
        if case.name in ("ri_lmm_1e6", "binary_glmm_1e5", "insteval_crossed", "ri_lmm_1e5", "binary_glmm_1e4"):
            profiles.append(profile_midas(case, df))
    table = pd.DataFrame(rows).set_index("case")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print(table)
    if not args.no_write:
        write_results(table, profiles, args)


def write_results(table: pd.DataFrame, profiles: list[str], args) -> None:
    fmt = table.copy()
    for c in fmt.columns:
        if pd.api.types.is_float_dtype(fmt[c]):
            fmt[c] = fmt[c].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    text = [
        "# Benchmark results",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `python benchmarks/run.py "
        + " ".join(f"--{k} {v}" for k, v in (("reps", args.reps),))
        + ("" if not args.cases else " --cases " + " ".join(args.cases))
        + ("" if not args.quick else " --quick")
        + "`.",
        "",
        f"Machine: {machine()}",
        "",
        "Times are medians over repetitions, each in a fresh process, tools alternating; they run from the",
        "DataFrame (R: data.frame) to the fitted model with standard errors. `llf midas-X` is the log-likelihood",
        "difference (REML log-likelihood for Gaussian models; AGQ on the Laplace scale). `memory / data` is",
        "midas_glmm's peak resident memory beyond the interpreter, over the size of the data's numeric columns.",
        "statsmodels' REML log-likelihood is defined with other constants, so its difference is not comparable",
        "to zero; lme4's is.",
        "",
        _markdown(fmt),
        "",
        "## Where the time goes",
        "",
        *profiles,
    ]
    (HERE / args.out).write_text("\n".join(text) + "\n")
    print(f"wrote {HERE / args.out}")


def _markdown(df: pd.DataFrame) -> str:
    cols = [df.index.name or ""] + list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in row]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
