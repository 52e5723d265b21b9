"""Many responses, one design: MixedModel.fit_many against loops of single fits, side by side.

What it measures: the wall-clock time to fit the same Gaussian LMM (REML) to K responses on one
design four ways, in one run: (a) ``fit_many`` with n_jobs=1, (b) ``fit_many`` with n_jobs=2,
(c) a Python loop of single midas_glmm fits as a user writes it, (d) the same loop over lme4's
lmer in R; and whether the four give the same answers (log-likelihoods, fixed effects in SEs).

    python benchmarks/fit_many.py                                  # K = 2000, every loop fit run
    python benchmarks/fit_many.py --loop-sample 200                # loops on 200 responses, scaled
    python benchmarks/fit_many.py --responses 40 --loop-sample 10 --out /tmp/fm.md   # smoke test
    python benchmarks/fit_many.py --skip-r                         # without lme4

The data (seeded): 20,000 rows, two crossed grouping factors drawn at random per row, ``donor``
(200 levels) and ``batch`` (40 levels), and a numeric covariate ``age``. Response k is
1 + 0.02 age + donor effect (SD drawn uniform(0, 2) for that response) + batch effect (SD drawn
uniform(0, 1)) + N(0, 1) noise, so some responses have a donor or batch variance near zero and
their fits are singular, as in real screens.

Timings (time.perf_counter, wall clock, after a small warm-up fit of each engine):

- fit_many: ``MixedModel.from_formula("~ age + (1|donor) + (1|batch)", df).fit_many(Y, n_jobs=)``
  and reading ``params``, ``bse``, ``llf`` (model building and the worker processes' start
  included); run ``--repeats`` times (default 3) each way, n_jobs=1 and 2 in turn, the median
  reported with every run listed;
- midas loop: ``MixedModel.from_formula("y ~ age + (1|donor) + (1|batch)", df.assign(y=Y[:, k]))
  .fit()`` per response, reading params, bse, llf (warnings suppressed);
- lme4 loop: ``lmer(y ~ age + (1|donor) + (1|batch), REML = TRUE)`` per response, collecting
  fixef, SEs and logLik, timed inside R with proc.time() around the loop only (not R's start nor
  the CSV reading).

``--loop-sample M`` runs the two loops on the first M responses only and scales their times by
K / M (the output says so). The agreement checks are over those M responses: fit_many against
the single fits and against lme4, max |llf difference| and max |fixed-effect difference| / SE.
Targets (the issue's): fit_many >= 20x faster than the midas loop, >= 5x faster than the lme4
loop, and n_jobs=2 near 2x faster than n_jobs=1 (taken here as >= 1.8x).

Writes benchmarks/RESULTS_FIT_MANY.md (``--out`` for another path; a relative path is taken from
the current directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from run import have_lme4, machine, midas_source  # noqa: E402

ROWS, DONORS, BATCHES = 20_000, 200, 40
SEED = 20_260_501
FORMULA_MANY = "~ age + (1|donor) + (1|batch)"
FORMULA_ONE = "y ~ age + (1|donor) + (1|batch)"
TARGETS = {  # ratio name -> (at least, how the issue says it)
    "midas loop / fit_many(n_jobs=1)": (20.0, ">= 20x"),
    "lme4 loop / fit_many(n_jobs=1)": (5.0, ">= 5x"),
    "fit_many(n_jobs=1) / fit_many(n_jobs=2)": (1.8, "near 2x (>= 1.8x)"),
}

R_LOOP = r"""
# lme4 loop for benchmarks/fit_many.py: Rscript loop.R DATADIR
suppressPackageStartupMessages({ library(lme4); library(data.table) })
dir <- commandArgs(trailingOnly = TRUE)[1]
d <- as.data.frame(fread(file.path(dir, "design.csv")))
d$donor <- factor(d$donor); d$batch <- factor(d$batch)
Y <- as.data.frame(fread(file.path(dir, "Y.csv")))
# one tiny fit before the clock starts (first-call costs), as fit_lme4.R does
w <- data.frame(y = rnorm(60), x1 = rnorm(60), g = factor(rep(1:6, each = 10)), h = factor(rep(1:5, 12)))
invisible(suppressMessages(lmer(y ~ x1 + (1 | g) + (1 | h), w)))
M <- ncol(Y)
out <- matrix(NA_real_, M, 6, dimnames = list(NULL, c("b0", "b1", "se0", "se1", "llf", "singular")))
errs <- character(0)
t0 <- proc.time()[["elapsed"]]
for (j in seq_len(M)) {
  d$y <- Y[[j]]
  r <- tryCatch({
    m <- suppressMessages(suppressWarnings(lmer(y ~ age + (1 | donor) + (1 | batch), d, REML = TRUE)))
    c(fixef(m), sqrt(diag(as.matrix(vcov(m)))), as.numeric(logLik(m)), isSingular(m))
  }, error = function(e) { errs <<- c(errs, conditionMessage(e)); NULL })
  if (!is.null(r)) out[j, ] <- r
}
secs <- proc.time()[["elapsed"]] - t0
write.csv(out, file.path(dir, "lme4_out.csv"), row.names = FALSE)
cat(sprintf('{"seconds": %.6f, "fits": %d, "errors": %d, "lme4": "%s", "R": "%s"}\n', secs, M, length(errs),
            format(packageVersion("lme4")), R.version$version.string))
"""


# ----------------------------------------------------------------------------- the data
def make_data(K: int, seed: int = SEED) -> tuple[pd.DataFrame, np.ndarray]:
    """The design (donor, batch, age) and the K responses (ROWS x K), seeded."""
    rng = np.random.default_rng(seed)
    donor = rng.integers(0, DONORS, ROWS)
    batch = rng.integers(0, BATCHES, ROWS)
    age = np.round(rng.uniform(20, 80, ROWS), 1)
    df = pd.DataFrame({"donor": donor, "batch": batch, "age": age})
    sd_donor = rng.uniform(0, 2, K)
    sd_batch = rng.uniform(0, 1, K)
    Y = np.empty((ROWS, K))
    fixed = (1.0 + 0.02 * age)[:, None]
    for a in range(0, K, 250):  # in chunks of responses: no n x K temporaries
        b = min(K, a + 250)
        u_d = rng.normal(size=(DONORS, b - a)) * sd_donor[a:b]
        u_b = rng.normal(size=(BATCHES, b - a)) * sd_batch[a:b]
        Y[:, a:b] = fixed + u_d[donor] + u_b[batch] + rng.normal(size=(ROWS, b - a))
    return df, Y


# ----------------------------------------------------------------------------- the runs
def warm_up(df: pd.DataFrame, Y: np.ndarray) -> None:
    """Small fits of both midas_glmm paths before any clock starts (lazy imports, compiled
    kernels loaded from cache); the R script warms lme4 up the same way."""
    from midas_glmm import MixedModel

    small = df.iloc[:2000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MixedModel.from_formula(FORMULA_ONE, small.assign(y=Y[:2000, 0])).fit()
        MixedModel.from_formula(FORMULA_MANY, small).fit_many(Y[:2000, :2])


def run_fit_many(df: pd.DataFrame, Y: np.ndarray, n_jobs: int) -> dict:
    from midas_glmm import MixedModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = MixedModel.from_formula(FORMULA_MANY, df).fit_many(Y, n_jobs=n_jobs)
        params, bse, llf = res.params.to_numpy(), res.bse.to_numpy(), res.llf.to_numpy()
        secs = time.perf_counter() - t0
    return {
        "seconds": secs,
        "params": params,
        "bse": bse,
        "llf": llf,
        "singular": res.singular.to_numpy(),
        "converged": res.converged.to_numpy(),
        "errors": res.errors,
        "coef_names": list(res.params.columns),
    }


def run_midas_loop(df: pd.DataFrame, Y: np.ndarray, M: int) -> dict:
    from midas_glmm import MixedModel

    params, bse, llf, singular, errors = [], [], [], [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        for g in range(M):
            try:
                res = MixedModel.from_formula(FORMULA_ONE, df.assign(y=Y[:, g])).fit()
                params.append(res.params.to_numpy())
                bse.append(res.bse.to_numpy())
                llf.append(res.llf)
                singular.append(res.singular)
            except Exception:  # noqa: BLE001 - a failed fit is counted, not fatal (a user's loop would stop)
                errors += 1
                params.append(np.full(2, np.nan))
                bse.append(np.full(2, np.nan))
                llf.append(np.nan)
                singular.append(False)
        secs = time.perf_counter() - t0
    return {
        "seconds": secs,
        "params": np.array(params),
        "bse": np.array(bse),
        "llf": np.array(llf),
        "singular": np.array(singular, dtype=bool),
        "errors": errors,
    }


def run_lme4_loop(df: pd.DataFrame, Y: np.ndarray, M: int) -> dict:
    """The lme4 loop in a fresh Rscript over CSV files in a temporary directory."""
    tmp = Path(tempfile.mkdtemp(prefix="midas_fitmany_"))
    try:
        print(f"  writing the design and {M} responses as CSV for R (not timed) ...", flush=True)
        df.to_csv(tmp / "design.csv", index=False)
        pd.DataFrame(Y[:, :M], columns=[f"y{j}" for j in range(M)]).to_csv(
            tmp / "Y.csv", index=False, float_format="%.17g"
        )
        (tmp / "loop.R").write_text(R_LOOP)
        t0 = time.perf_counter()
        proc = subprocess.run(["Rscript", str(tmp / "loop.R"), str(tmp)], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"the lme4 loop failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
        info = json.loads(lines[-1])
        out = pd.read_csv(tmp / "lme4_out.csv")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "seconds": info["seconds"],
        "process_wall": wall,
        "params": out[["b0", "b1"]].to_numpy(dtype=float),
        "bse": out[["se0", "se1"]].to_numpy(dtype=float),
        "llf": out["llf"].to_numpy(dtype=float),
        "singular": out["singular"].fillna(0).to_numpy() > 0.5,
        "errors": info["errors"],
        "versions": f"{info['R']}, lme4 {info['lme4']}",
    }


# ----------------------------------------------------------------------------- comparisons
def agreement(many: dict, other: dict, M: int) -> dict:
    """fit_many's first M responses against another tool's fits of them: largest |llf
    difference|, fit_many's llf minus the other's at its lowest, largest |beta difference| / SE
    (the other's SE) and largest |SE difference| / SE."""
    d_llf = many["llf"][:M] - other["llf"]
    d_beta = np.abs(many["params"][:M] - other["params"]) / other["bse"]
    d_se = np.abs(many["bse"][:M] - other["bse"]) / other["bse"]
    ok = np.isfinite(d_llf)
    worst = int(np.nanargmax(np.abs(d_llf))) if ok.any() else -1
    return {
        "compared": int(ok.sum()),
        "max_abs_llf": float(np.nanmax(np.abs(d_llf))) if ok.any() else np.nan,
        "min_llf_diff": float(np.nanmin(d_llf)) if ok.any() else np.nan,
        "worst": f"y{worst}" if worst >= 0 else "",
        "worst_singular": bool(many["singular"][worst]) if worst >= 0 else False,
        "max_beta_se": float(np.nanmax(d_beta)) if np.isfinite(d_beta).any() else np.nan,
        "max_se_rel": float(np.nanmax(d_se)) if np.isfinite(d_se).any() else np.nan,
    }


def _x(ratio: float) -> str:
    return f"{ratio:.2f}x" if np.isfinite(ratio) else "-"


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# ----------------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--responses", type=int, default=2000, metavar="K", help="number of responses (default 2000)")
    ap.add_argument(
        "--loop-sample",
        type=int,
        default=None,
        metavar="M",
        help="run the two loops on the first M responses and scale their times to K (default: all K)",
    )
    ap.add_argument("--out", default=str(HERE / "RESULTS_FIT_MANY.md"), help="markdown file to write")
    ap.add_argument("--skip-r", action="store_true", help="leave out the lme4 loop")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each fit_many timing; the median is reported")
    args = ap.parse_args(argv)
    K = args.responses
    if K < 2:
        ap.error("--responses must be at least 2")
    M = K if args.loop_sample is None else args.loop_sample
    if not 1 <= M <= K:
        ap.error(f"--loop-sample must be between 1 and --responses ({K})")
    use_r = not args.skip_r
    if use_r and not have_lme4():
        print("R with lme4 and data.table not found: the lme4 loop is skipped", file=sys.stderr)
        use_r = False
    command = "python " + shlex.join([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    scale = K / M
    sample_note = (
        f"the loops ran on the first {M} of {K} responses; their times for K are scaled by K/M = {scale:.4g}"
        if M < K
        else f"the loops ran on all {K} responses"
    )

    print(f"data: {ROWS} rows, donor {DONORS} x batch {BATCHES} levels, K = {K} responses (seed {SEED})", flush=True)
    df, Y = make_data(K)
    warm_up(df, Y)
    runs: dict[str, dict] = {}
    loads: dict[str, float] = {}
    # fit_many takes seconds: its runs are repeated, n_jobs=1 and 2 in turn, and the median kept
    # (this machine's speed wanders by up to ~30% from one run to the next)
    for rep in range(args.repeats):
        for nj in (1, 2):
            label = f"fit_many(n_jobs={nj})"
            load = _load()
            print(f"{label} run {rep + 1}/{args.repeats}: running (load {load:.2f}) ...", flush=True)
            r = run_fit_many(df, Y, nj)
            print(f"{label}: {r['seconds']:.3f} s for {K} responses ({1e3 * r['seconds'] / K:.2f} ms each)", flush=True)
            if label not in runs:
                runs[label], loads[label] = r, load
            runs[label].setdefault("all", []).append(r["seconds"])
    for label in ("fit_many(n_jobs=1)", "fit_many(n_jobs=2)"):
        runs[label]["seconds"] = float(np.median(runs[label]["all"]))
    for label, fn in (
        ("midas loop", lambda: run_midas_loop(df, Y, M)),
        ("lme4 loop", (lambda: run_lme4_loop(df, Y, M)) if use_r else None),
    ):
        if fn is None:
            continue
        loads[label] = _load()
        print(f"{label}: running (load {loads[label]:.2f}) ...", flush=True)
        runs[label] = fn()
        r = runs[label]
        n = K if label.startswith("fit_many") else M
        extra = f", {r['seconds'] * scale:.2f} s scaled to K" if n < K else ""
        print(
            f"{label}: {r['seconds']:.3f} s for {n} responses ({1e3 * r['seconds'] / n:.2f} ms each{extra})", flush=True
        )

    def for_k(label: str) -> float:
        r = runs.get(label)
        if r is None:
            return float("nan")
        return r["seconds"] if label.startswith("fit_many") else r["seconds"] * scale

    # ratios against the issue's targets
    t1 = for_k("fit_many(n_jobs=1)")
    ratios = {
        "midas loop / fit_many(n_jobs=1)": for_k("midas loop") / t1,
        "lme4 loop / fit_many(n_jobs=1)": for_k("lme4 loop") / t1,
        "fit_many(n_jobs=1) / fit_many(n_jobs=2)": t1 / for_k("fit_many(n_jobs=2)"),
    }
    ratio_rows = []
    for name, value in ratios.items():
        target, says = TARGETS[name]
        met = "not run" if not np.isfinite(value) else ("met" if value >= target else "NOT met")
        ratio_rows.append((name, value, says, met))

    # agreement
    many, many2 = runs["fit_many(n_jobs=1)"], runs["fit_many(n_jobs=2)"]
    checks = {"midas loop": agreement(many, runs["midas loop"], M)}
    if "lme4 loop" in runs:
        checks["lme4 loop"] = agreement(many, runs["lme4 loop"], M)
    jobs_llf = float(np.nanmax(np.abs(many["llf"] - many2["llf"])))
    jobs_beta = float(np.nanmax(np.abs(many["params"] - many2["params"]) / many["bse"]))
    n_sing = int(many["singular"].sum())
    n_sing_sample = int(many["singular"][:M].sum())
    n_err = len(many["errors"])
    n_unconv = int((~many["converged"]).sum()) - n_err

    # ------------------------------------------------------------------ print
    print()
    print(f"{'run':22s} {'responses':>9s} {'seconds':>10s} {'seconds for K':>14s} {'ms/response':>12s}")
    for label, r in runs.items():
        n = K if label.startswith("fit_many") else M
        print(f"{label:22s} {n:9d} {r['seconds']:10.3f} {for_k(label):14.3f} {1e3 * r['seconds'] / n:12.2f}")
    if M < K:
        print(f"({sample_note})")
    print()
    for name, value, says, met in ratio_rows:
        print(f"{name:42s} {_x(value):>9s}   target {says:18s} {met}")
    print()
    for tool, c in checks.items():
        print(
            f"fit_many vs {tool} ({c['compared']} responses): max |llf diff| {c['max_abs_llf']:.3g} "
            f"(at {c['worst']}{', singular' if c['worst_singular'] else ''}; min fit_many-{tool.split()[0]} "
            f"{c['min_llf_diff']:.3g}), max |beta diff|/SE {c['max_beta_se']:.3g}, "
            f"max |SE diff|/SE {c['max_se_rel']:.3g}"
        )
    print(f"fit_many n_jobs=2 vs n_jobs=1: max |llf diff| {jobs_llf:.3g}, max |beta diff|/SE {jobs_beta:.3g}")
    print(
        f"fit_many: {n_sing} of {K} responses singular ({n_sing_sample} of the {M} in the loop sample; midas loop "
        f"{int(runs['midas loop']['singular'].sum())}"
        + (f", lme4 {int(runs['lme4 loop']['singular'].sum())}" if "lme4 loop" in runs else "")
        + f"), {n_err} failed, {n_unconv} not converged cleanly"
    )
    for label in ("midas loop", "lme4 loop"):
        if label in runs and runs[label]["errors"]:
            print(f"{label}: {runs[label]['errors']} fits failed")

    # ------------------------------------------------------------------ write
    lines = [
        "# fit_many: many responses on one design",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `{command}`.",
        "",
        f"Machine: {platform.platform()}; os.cpu_count() = {os.cpu_count()}; Python {platform.python_version()}.",
        f"Details: {machine()}.",
        "",
        f"Code: midas_glmm{midas_source() or ' (commit unknown)'}.",
        "",
        f"Data: {ROWS:,} rows, `donor` ({DONORS} levels) crossed with `batch` ({BATCHES} levels), each row's levels "
        f"drawn at random, covariate `age`; K = {K} Gaussian responses, y = 1 + 0.02 age + donor effect "
        "(SD ~ uniform(0, 2) per response) + batch effect (SD ~ uniform(0, 1)) + N(0, 1), seed "
        f"{SEED}. Model `{FORMULA_ONE}`, REML.",
        "",
        "Wall-clock seconds (time.perf_counter; lme4: proc.time() inside R around the loop only), after a",
        "small warm-up fit of each engine. fit_many includes building the model and, for n_jobs=2, starting",
        "the worker processes. The loops build the model from a DataFrame for every response, as a user",
        "writes them. " + sample_note[0].upper() + sample_note[1:] + ".",
        f"Thread settings: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"MKL_NUM_THREADS={os.environ.get('MKL_NUM_THREADS', 'unset')}. `load` is the 1-minute load average",
        "just before each run.",
        "",
        "| run | responses timed | seconds | seconds for K | ms per response | load |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in runs.items():
        n = K if label.startswith("fit_many") else M
        note = "" if n == K else " (scaled)"
        lines.append(
            f"| {label} | {n} | {r['seconds']:.3f} | {for_k(label):.3f}{note} | {1e3 * r['seconds'] / n:.2f} | "
            f"{loads[label]:.2f} |"
        )
    lines += [
        "",
        f"fit_many ran {args.repeats} times each way, n_jobs=1 and 2 in turn; the table gives the median. "
        "All runs (seconds): "
        + "; ".join(
            f"{label}: " + ", ".join(f"{s:.3f}" for s in runs[label]["all"])
            for label in ("fit_many(n_jobs=1)", "fit_many(n_jobs=2)")
        )
        + ".",
    ]
    if "lme4 loop" in runs:
        lr = runs["lme4 loop"]
        lines += ["", f"lme4 loop: {lr['versions']}; the whole Rscript process took {lr['process_wall']:.2f} s."]
    lines += [
        "",
        "## Ratios",
        "",
        "| ratio | value | target | |",
        "|---|---|---|---|",
        *[f"| {name} | {_x(value)} | {says} | {met} |" for name, value, says, met in ratio_rows],
        "",
        "## Agreement",
        "",
        f"Over the {M} responses of the loop sample. `llf` is the REML log-likelihood; `min fit_many - other`",
        "is the most fit_many's log-likelihood falls below the other's (negative: below); beta and SE",
        "differences are in units of the other tool's SE.",
        "",
        "| fit_many against | responses | max abs llf diff | worst response | min fit_many - other llf | "
        "max abs beta diff / SE | max abs SE diff / SE |",
        "|---|---|---|---|---|---|---|",
    ]
    for tool, c in checks.items():
        lines.append(
            f"| {tool} | {c['compared']} | {c['max_abs_llf']:.3g} | {c['worst']}"
            f"{' (singular)' if c['worst_singular'] else ''} | {c['min_llf_diff']:.3g} | {c['max_beta_se']:.3g} | "
            f"{c['max_se_rel']:.3g} |"
        )
    lines.append(f"| fit_many(n_jobs=2), all K | {K} | {jobs_llf:.3g} | | | {jobs_beta:.3g} | |")
    lines += [
        "",
        f"Singular fits: fit_many {n_sing} of {K} ({n_sing_sample} of the {M} in the loop sample); midas loop "
        f"{int(runs['midas loop']['singular'].sum())} of {M}"
        + (f"; lme4 (isSingular) {int(runs['lme4 loop']['singular'].sum())} of {M}" if "lme4 loop" in runs else "")
        + f". fit_many: {n_err} failed, {n_unconv} not converged cleanly."
        + "".join(
            f" {label}: {runs[label]['errors']} fits failed."
            for label in ("midas loop", "lme4 loop")
            if label in runs and runs[label]["errors"]
        ),
    ]
    if not use_r:
        lines += ["", "The lme4 loop was not run (" + ("--skip-r" if args.skip_r else "R/lme4 not found") + ")."]
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
