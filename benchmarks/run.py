"""Side-by-side benchmark: midas_glmm, statsmodels MixedLM, lme4, glmmTMB and nlme (the last three
through Rscript when R and the package are installed) on the same seeded data, in one run,
alternating tools, several repetitions, each fit in a fresh process.

    python benchmarks/run.py                 # the original cases (the 1e7 case takes a while)
    python benchmarks/run.py --quick         # the small original cases
    python benchmarks/run.py --cases ri_lmm_1e6 binary_glmm_1e5 --reps 5
    python benchmarks/run.py --shapes        # issue 12's "real shapes" (cases.SHAPES), with glmmTMB
    python benchmarks/run.py --shapes --reps 1 --peer-timeout 600
    python benchmarks/run.py --cases obslevel_poisson profile_sleepstudy --out RESULTS_SHAPES.md
    python benchmarks/run.py --shapes --write-peer-cache   # only lme4 and glmmTMB -> peer_cache.json
    python benchmarks/run.py --covstruct --reps 3 --rep-budget 60 --peer-timeout 900
                                             # issue 25 (cases.COVSTRUCT) -> RESULTS_COVSTRUCT.md
    python benchmarks/run.py --all           # every case

The shapes: obslevel_poisson (Poisson, observation-level effect + two crossed factors),
nested_slopes_lmm (statsmodels' vcomp_2 design), nested_lmm_1e5 / nested_slope_lmm_1e5
(region/district/school), crossed_binary_verbagg / _6e4 / _2e5 / _1e6 (crossed Bernoulli) and
profile_sleepstudy (fit + profile-likelihood intervals); cases.py says how each is laid out.
The covstruct cases (issue 25): glmmTMB's covariance structures (ar1, cs, diag, us, toep) and
dispersion models (dispformula), each against glmmTMB, and against lme4 (a case's lme4_formula)
and nlme (fit_nlme.R, a case's nlme spec) where they fit the same model.

Prints a table (median seconds, ratios, log-likelihood differences, midas peak memory) and
writes it, with the machine it ran on and a profile of where midas_glmm spends its time, to
benchmarks/RESULTS.md (--shapes: RESULTS_SHAPES.md; --out to choose). When a case runs both
lme4, glmmTMB or nlme, `peer/midas` is the FASTER peer's time over midas's, and `llf midas-best peer`
is midas's log-likelihood minus the best (highest) of the peers' that maximise the same
criterion (REML, ML or Laplace), checked against issue 12's tolerances (1e-6 LMM, 1e-3 GLMM).
A tool that runs past its timeout (--timeout, or --peer-timeout for the peers, not midas) is
shown as "timeout > N s" and not run again for that case; a fit that fails shows its error.
--rep-budget S: a tool whose fit took more than S seconds is not repeated on that case (so the
large cases get one repetition and the small ones --reps).
--write-peer-cache runs only the peers and stores their times and log-likelihoods, with the R and
package versions, in benchmarks/peer_cache.json; later runs compare their peers against it.
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
from cases import BY_NAME, CASES, COVSTRUCT, ORDINAL, QUICK, SHAPES, make  # noqa: E402

R_TOOLS = {
    "lme4": ("fit_lme4.R", "lme4"),
    "glmmTMB": ("fit_glmmtmb.R", "glmmTMB"),
    "nlme": ("fit_nlme.R", "nlme"),
    "clmm": ("fit_clmm.R", "ordinal"),
}
PEER_CACHE = HERE / "peer_cache.json"
LLF_TOL = {"lmm": 1e-6, "glmm": 1e-3}  # issue 12: midas may be below the best peer by at most this


def have_r_package(pkg: str) -> bool:
    if not shutil.which("Rscript"):
        return False
    r = subprocess.run(["Rscript", "-e", f"library({pkg}); library(data.table)"], capture_output=True)
    return r.returncode == 0


def have_lme4() -> bool:
    return have_r_package("lme4")


def r_versions() -> dict:
    """R's and the peers' package versions (empty when R is missing)."""
    if not shutil.which("Rscript"):
        return {}
    code = (
        'v <- c(R = R.version.string); for (p in c("lme4", "glmmTMB", "TMB", "nlme", "Matrix", "data.table")) '
        'v[p] <- tryCatch(format(packageVersion(p)), error = function(e) "not installed"); '
        'cat(paste(names(v), v, sep = "=", collapse = "\\n"))'
    )
    out = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def tool_cmd(tool: str, case, datadir: Path) -> list[str]:
    if tool == "nlme":  # lme's arguments as R code, "-" for none (fit_nlme.R)
        spec = case.nlme
        args = [spec["fixed"], spec.get("random", "-"), spec.get("correlation", "-"), spec.get("weights", "-")]
        facs = ",".join(case.factors)
        return ["Rscript", str(HERE / "fit_nlme.R"), case.name, str(datadir), *args, case.method or "REML", facs]
    if tool == "clmm":  # ordinal::clmm: formula, link, nAGQ, grouping columns (fit_clmm.R)
        link = case.extra.get("link", "logit")
        return [
            "Rscript",
            str(HERE / "fit_clmm.R"),
            case.name,
            str(datadir),
            case.formula,
            link,
            str(case.nAGQ),
            ",".join(case.factors),
        ]
    if tool in R_TOOLS:
        fam = case.family or "gaussian"
        formula = case.lme4_formula if tool == "lme4" and case.lme4_formula else case.formula
        cmd = ["Rscript", str(HERE / R_TOOLS[tool][0]), case.name, str(datadir), formula, fam, str(case.nAGQ)]
        if case.group or case.task != "fit" or case.method:  # the original cases keep their command line
            cmd += [",".join(case.factors), case.task, case.method or "REML"]
        if case.ziformula or case.dispformula:
            cmd += [case.ziformula or "~0"]
        if case.dispformula:
            cmd += [case.dispformula]
        return cmd
    return [sys.executable, str(HERE / "worker.py"), tool, case.name, str(datadir)]


def run_tool(tool: str, case, datadir: Path, timeout: float) -> dict | None:
    """One fit in a fresh process: its JSON line, a timeout record, or an error record."""
    cmd = tool_cmd(tool, case, datadir)
    # own process group, so that a timeout ends R (or a worker) and anything it started
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.communicate()
        return {"tool": tool, "case": case.name, "seconds": float("nan"), "llf": float("nan"), "timeout": timeout}
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]
        print(f"  {tool} failed on {case.name}: {stderr.strip()[-300:]}", file=sys.stderr)
        return {"tool": tool, "case": case.name, "seconds": float("nan"), "llf": float("nan"), "error": err}
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
        if have_r_package("glmmTMB"):
            v = r_versions()
            r += f" glmmTMB {v.get('glmmTMB')} (TMB {v.get('TMB')}, Matrix {v.get('Matrix')}) nlme {v.get('nlme')}"
    return (
        f"{platform.platform()}; CPU: {cpu}; {os.cpu_count()} cores; RAM {mem}; Python {platform.python_version()}, "
        f"midas_glmm {midas_glmm.__version__}{midas_source()}, numpy {numpy.__version__}, scipy {scipy.__version__}, "
        f"statsmodels {statsmodels.__version__}; R: {r}"
    )


def midas_source() -> str:
    """Which midas_glmm code ran: the git commit of its tree (a COMMIT file beside an exported copy)."""
    import midas_glmm

    root = Path(midas_glmm.__file__).resolve().parent.parent
    if (root / "COMMIT").exists():
        return f" (commit {(root / 'COMMIT').read_text().strip()[:12]})"
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "midas_glmm"], capture_output=True, text=True
        )
    except OSError:
        return ""
    if head.returncode != 0:
        return ""
    return f" (commit {head.stdout.strip()[:12]}{' + uncommitted changes' if dirty.stdout.strip() else ''})"


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
    ap.add_argument("--shapes", action="store_true", help="issue 12's cases (cases.SHAPES)")
    ap.add_argument("--covstruct", action="store_true", help="issue 25's cases (cases.COVSTRUCT)")
    ap.add_argument("--ordinal", action="store_true", help="issue 26's cases (cases.ORDINAL), with ordinal::clmm")
    ap.add_argument("--all", action="store_true", help="every case, the original ones and the shapes")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per fit, any tool")
    ap.add_argument("--peer-timeout", type=float, default=None, help="seconds per peer fit (not midas)")
    ap.add_argument(
        "--rep-budget",
        type=float,
        default=None,
        help="seconds: a tool whose first fit of a case took longer is not repeated on that case",
    )
    ap.add_argument("--tools", nargs="*", default=None, help="only these tools (of each case's)")
    ap.add_argument("--datadir", default=None)
    ap.add_argument("--no-write", action="store_true", help="do not write the results file")
    ap.add_argument("--out", default=None, help="file (in benchmarks/) to write the table to")
    ap.add_argument(
        "--write-peer-cache",
        action="store_true",
        help="run only lme4 and glmmTMB and store their times and log-likelihoods in peer_cache.json",
    )
    args = ap.parse_args(argv)
    original = [c.name for c in CASES if not c.group]
    names = args.cases or (
        QUICK
        if args.quick
        else SHAPES
        if args.shapes
        else COVSTRUCT
        if args.covstruct
        else ORDINAL
        if args.ordinal
        else [c.name for c in CASES]
        if args.all
        else original
    )
    if args.out is None:
        args.out = "RESULTS_SHAPES.md" if names and all(n in SHAPES for n in names) else "RESULTS.md"
        if names and all(n in COVSTRUCT for n in names):
            args.out = "RESULTS_COVSTRUCT.md"
        if names and all(n in ORDINAL for n in names):
            args.out = "RESULTS_ORDINAL.md"
    if args.write_peer_cache:
        args.tools = list(R_TOOLS)
    cases = [BY_NAME[n] for n in names]
    r_ok = {t: have_r_package(pkg) for t, (_, pkg) in R_TOOLS.items()}
    datadir = Path(args.datadir or tempfile.mkdtemp(prefix="midas_bench_"))
    datadir.mkdir(parents=True, exist_ok=True)
    rows, profiles, all_runs = [], [], {}
    for case in cases:
        tools = [t for t in case.tools if (t not in R_TOOLS or r_ok[t]) and (not args.tools or t in args.tools)]
        df = make(case)
        df.to_pickle(datadir / f"{case.name}.pkl")
        if any(t in R_TOOLS for t in tools):
            df.to_csv(datadir / f"{case.name}.csv", index=False)
        print(f"{case.name}: {len(df)} rows; tools {', '.join(tools)}", flush=True)
        runs: dict[str, list[dict]] = {t: [] for t in tools}
        stopped: set[str] = set()  # tools that timed out on this case: not run again
        for _ in range(args.reps):
            for tool in tools:  # alternate tools within each repetition
                if tool in stopped:
                    continue
                timeout = args.peer_timeout if tool != "midas" and args.peer_timeout else args.timeout
                out = run_tool(tool, case, datadir, timeout)
                runs[tool].append(out)
                if out.get("timeout"):
                    stopped.add(tool)
                    print(f"  {tool:12s} timeout > {timeout:g} s", flush=True)
                elif out.get("error"):
                    stopped.add(tool)
                    print(f"  {tool:12s} error: {out['error']}", flush=True)
                else:
                    print(f"  {tool:12s} {out['seconds']:9.3f} s   llf {out['llf']:.6f}", flush=True)
                    if args.rep_budget is not None and out["seconds"] > args.rep_budget:
                        stopped.add(tool)
        all_runs[case.name] = runs
        rows.append(
            table_row(
                case,
                runs,
                glmmtmb=any("glmmTMB" in c.tools for c in cases),
                nlme=any("nlme" in c.tools for c in cases),
                ordinal=any("clmm" in c.tools for c in cases),
            )
        )
        if "midas" in tools and case.name in (
            "ri_lmm_1e6",
            "binary_glmm_1e5",
            "insteval_crossed",
            "ri_lmm_1e5",
            "binary_glmm_1e4",
        ):
            profiles.append(profile_midas(case, df))
    table = pd.DataFrame(rows).set_index("case")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        print(table)
    if args.write_peer_cache:
        write_peer_cache(cases, all_runs, args)
        return
    cache_notes = compare_peer_cache(cases, all_runs)
    if cache_notes:
        print("\n".join(cache_notes))
    if not args.no_write:
        write_results(table, profiles, args, cases, cache_notes, peer_notes(cases, all_runs))


def _ok(r: dict) -> bool:
    return not r.get("timeout") and not r.get("error")


def cell(rs: list[dict]) -> float | str:
    """A tool's median seconds on a case, or why there is none."""
    good = [r["seconds"] for r in rs if _ok(r)]
    if good:
        return median(good)
    for r in rs:
        if r.get("timeout"):
            return f"timeout > {r['timeout']:g} s"
        if r.get("error"):
            return "error: " + r["error"]
    return float("nan")


def table_row(case, runs: dict[str, list[dict]], glmmtmb: bool, nlme: bool = False, ordinal: bool = False) -> dict:
    nan = float("nan")
    row: dict = {"case": case.name, "rows x levels": case.rows_levels}
    secs = {t: cell(rs) for t, rs in runs.items()}
    med = {t: v for t, v in secs.items() if isinstance(v, float)}
    good = {t: [r for r in rs if _ok(r)] for t, rs in runs.items()}
    llf = {t: rs[0]["llf"] if rs else nan for t, rs in good.items()}
    m_s = med.get("midas", nan)
    row["midas s"] = secs.get("midas", nan)
    peers = ("statsmodels", "lme4", "glmmTMB") if glmmtmb else ("statsmodels", "lme4")
    if nlme:  # only in runs with an nlme case, so that the other results files keep their columns
        peers += ("nlme",)
    if ordinal:  # clmm is the only peer of an ordinal model
        peers = ("clmm",)
    for t in peers:
        row[f"{t} s"] = secs.get(t, nan)
        row[f"{t}/midas"] = med.get(t, nan) / m_s
        same_crit = not good.get(t) or not good.get("midas") or good[t][0].get("crit") == good["midas"][0].get("crit")
        row[f"llf midas-{t}"] = llf.get("midas", nan) - llf.get(t, nan) if same_crit else nan
    if glmmtmb or ordinal:
        r_peers = [t for t in R_TOOLS if t in runs]
        timed = {t: med[t] for t in r_peers if t in med and med[t] == med[t]}
        if timed:
            fastest = min(timed, key=timed.get)
            row["fastest peer"] = fastest
            row["peer/midas"] = timed[fastest] / m_s
        elif r_peers and all(any(r.get("timeout") for r in runs[t]) for t in r_peers):
            lim = min(r["timeout"] for t in r_peers for r in runs[t] if r.get("timeout"))
            row["fastest peer"] = "all timed out"
            row["peer/midas"] = f"> {lim / m_s:.3g}" if m_s == m_s else nan
        else:
            row["fastest peer"] = ""
            row["peer/midas"] = nan
        # best peer log-likelihood among the peers that maximise midas's criterion
        crit = good["midas"][0].get("crit") if good.get("midas") else None
        same = {t: good[t][0]["llf"] for t in r_peers if good.get(t) and good[t][0].get("crit") == crit}
        tol = LLF_TOL["lmm" if case.is_lmm else "glmm"]
        if same and crit:
            best = max(same, key=same.get)
            d = llf["midas"] - same[best]
            row["llf midas-best peer"] = d
            row["llf ok"] = f"{'yes' if d >= -tol else 'NO'} (tol {tol:g}, {best})"
        else:
            row["llf midas-best peer"] = nan
            row["llf ok"] = ""
        if case.task == "profile":
            row["ci max abs midas-lme4"] = _ci_diff(good.get("midas"), good.get("lme4"))
            row["ci max abs midas-glmmTMB"] = _ci_diff(good.get("midas"), good.get("glmmTMB"))
    mids = good.get("midas") or []
    if mids and "peak_rss_mb" in mids[0]:
        m0 = mids[0]
        row["midas peak MB"] = max(r["peak_rss_mb"] for r in mids)
        base = m0["rss_libs_mb"]
        row["memory / data"] = (row["midas peak MB"] - base) / m0["data_mb"]
        row["us per row"] = 1e6 * m_s / case.n
    return row


def _ci_diff(a: list[dict] | None, b: list[dict] | None) -> float:
    """Largest difference between two tools' interval limits, over the parameters both report."""
    if not a or not b or "ci" not in a[0] or "ci" not in b[0]:
        return float("nan")
    ca, cb = a[0]["ci"], b[0]["ci"]
    diffs = [abs(x - y) for k in ca if k in cb for x, y in zip(ca[k], cb[k])]
    return max(diffs) if diffs else float("nan")


def _summary(rs: list[dict]) -> dict:
    good = [r for r in rs if _ok(r)]
    out: dict = {"runs": len(rs)}
    if good:
        out.update(
            seconds=[round(r["seconds"], 4) for r in good],
            median_seconds=round(median(r["seconds"] for r in good), 4),
            llf=good[0]["llf"],
            crit=good[0].get("crit"),
        )
        for k in ("convergence", "pdHess", "ci"):
            if k in good[0]:
                out[k] = good[0][k]
    else:
        bad = rs[0] if rs else {}
        if bad.get("timeout"):
            out["timeout_seconds"] = bad["timeout"]
        if bad.get("error"):
            out["error"] = bad["error"]
    return out


def write_peer_cache(cases, all_runs: dict, args) -> None:
    """Store the peers' times and log-likelihoods (merged into an existing cache)."""
    cache = json.loads(PEER_CACHE.read_text()) if PEER_CACHE.exists() else {"cases": {}}
    cache["written"] = time.strftime("%Y-%m-%d %H:%M")
    cache["versions"] = r_versions()
    cache["machine"] = f"{platform.platform()}; {os.cpu_count()} cores"
    cache["note"] = (
        "Peer timings taken on a busy machine (2 cores shared with other work running at the same time): "
        "they are indicative; the log-likelihoods are what later runs are checked against."
    )
    cache["command"] = (
        "python benchmarks/run.py --write-peer-cache "
        + " ".join(f"--{k} {v}" for k, v in (("reps", args.reps), ("peer-timeout", args.peer_timeout)) if v)
        + (" --cases " + " ".join(c.name for c in cases))
    )
    for case in cases:
        entry = cache["cases"].setdefault(case.name, {"formula": case.formula, "family": case.family or "gaussian"})
        entry.update(formula=case.formula, family=case.family or "gaussian", rows=case.n, levels=case.rows_levels)
        for tool, rs in all_runs[case.name].items():
            entry[tool] = _summary(rs)
    PEER_CACHE.write_text(json.dumps(cache, indent=1, sort_keys=False) + "\n")
    print(f"wrote {PEER_CACHE}")


def compare_peer_cache(cases, all_runs: dict) -> list[str]:
    """This run's peers against peer_cache.json: time now / cached, and the log-likelihood change."""
    if not PEER_CACHE.exists():
        return []
    cache = json.loads(PEER_CACHE.read_text()).get("cases", {})
    lines = []
    for case in cases:
        for tool in R_TOOLS:
            old, now = cache.get(case.name, {}).get(tool), all_runs.get(case.name, {}).get(tool)
            if not old or not now:
                continue
            new = _summary(now)
            t_old = old.get("median_seconds", f"timeout > {old.get('timeout_seconds')} s")
            t_new = new.get("median_seconds", f"timeout > {new.get('timeout_seconds')} s")
            d = new["llf"] - old["llf"] if "llf" in new and "llf" in old else float("nan")
            lines.append(f"| {case.name} | {tool} | {t_old} | {t_new} | {d:.3g} |")
    if lines:
        lines = ["| case | peer | cached s | this run s | llf this run - cached |", "|---|---|---|---|---|", *lines]
    return lines


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if pd.isna(v) else f"{v:.3g}"
    return str(v)


def peer_notes(cases, all_runs: dict) -> list[str]:
    """What the peers said besides their times: a glmmTMB fit whose Hessian was not positive
    definite (its logLik() is NA; the attained objective is used) or whose optimizer did not
    report convergence, and the errors, in full."""
    notes = []
    for case in cases:
        for tool, rs in all_runs.get(case.name, {}).items():
            for r in rs[:1]:
                if r.get("error"):
                    notes.append(f"- {case.name}, {tool}: error `{r['error']}`")
                    continue
                bits = []
                if r.get("pdHess") is False:
                    bits.append("Hessian not positive definite (pdHess FALSE)")
                if r.get("convergence") not in (None, 0):
                    bits.append(f"nlminb convergence code {r['convergence']}")
                if r.get("llf_from_objective"):
                    bits.append("logLik() NA: the attained objective is the llf shown")
                if bits:
                    notes.append(f"- {case.name}, {tool}: " + "; ".join(bits))
    return notes


def write_results(
    table: pd.DataFrame, profiles: list[str], args, cases=(), cache_notes=(), notes: list[str] = ()
) -> None:
    fmt = table.astype(object).apply(lambda col: col.map(_fmt))
    shapes = [c for c in cases if c.group]
    covstruct = [c for c in cases if c.group == "covstruct"]
    ordinal = [c for c in cases if c.group == "ordinal"]
    text = [
        "# Benchmark results",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `python benchmarks/run.py "
        + " ".join(f"--{k} {v}" for k, v in (("reps", args.reps),))
        + ("" if not args.cases else " --cases " + " ".join(args.cases))
        + ("" if not args.quick else " --quick")
        + ("" if not args.shapes else " --shapes")
        + ("" if not args.covstruct else " --covstruct")
        + ("" if not args.ordinal else " --ordinal")
        + ("" if args.timeout == 1800 else f" --timeout {args.timeout:g}")
        + ("" if not args.peer_timeout else f" --peer-timeout {args.peer_timeout:g}")
        + ("" if args.rep_budget is None else f" --rep-budget {args.rep_budget:g}")
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
    ]
    if shapes:
        text += [
            "",
            "`peer/midas` is the time of the FASTER of lme4 and glmmTMB (`fastest peer`) over midas_glmm's;",
            "`llf midas-best peer` is midas_glmm's log-likelihood minus the highest of the peers' that maximise",
            "the same criterion, and `llf ok` checks it against issue 12's tolerances (1e-6 for LMMs, 1e-3 for",
            "GLMMs; above the peers is fine). A tool that ran past its timeout is shown as `timeout > N s` (and",
            "was not run again on that case); a fit that failed shows its error. The machine has 2 cores and",
            "was busy with other work during the run, so the times are indicative. With `--rep-budget S`, a",
            "tool whose fit took more than S seconds was not repeated on that case (its time is one fit).",
        ]
    if covstruct:
        text += [
            "",
            "The covstruct cases (issue 25) are all fitted by maximum likelihood (Laplace for the Poisson,",
            "nbinom2 and beta ones): midas_glmm, glmmTMB, and lme4 and nlme where they fit the same model, so",
            "`peer/midas` and `llf midas-best peer` take the faster and the best of glmmTMB, lme4 and nlme.",
            "nlme's times run from the data.frame to `lme(...)` and `vcov()`, as the other R tools'.",
        ]
    if ordinal:
        text += [
            "",
            "The ordinal cases (issue 26) run against ordinal::clmm (its default controls), the same",
            "criterion (Laplace, or adaptive quadrature with the same number of nodes): `peer/midas` is",
            "clmm's time over midas_glmm's and `llf midas-best peer` the log-likelihood difference.",
            "clmm's defaults stop with inexact inner modes: on wine its Laplace value is 3.5e-6 above",
            "that of its own tight refit (gradTol 1e-8), which equals ours (tests/reference/ordinal).",
        ]
    text += ["", _markdown(fmt), ""]
    if shapes:
        text += ["## The cases", ""]
        for c in shapes:
            fam = f", {c.family}" if c.family else ""
            more = f", dispformula `{c.dispformula}`" if c.dispformula else ""
            if c.lme4_formula and "lme4" in c.tools:
                more += f"; lme4 `{c.lme4_formula}`"
            if c.nlme and "nlme" in c.tools:
                call = ", ".join(f"{k} = {v}" for k, v in c.nlme.items() if k != "fixed")
                more += f'; nlme `lme({c.nlme["fixed"]}, {call}, method = "{c.method or "REML"}")`'
            text.append(f"- **{c.name}** ({c.rows_levels}{fam}): `{c.formula}`{more}. {c.notes}")
        text.append("")
    if notes:
        text += ["## Warnings and errors", "", *notes, ""]
    if cache_notes:
        text += ["## Peers against peer_cache.json", "", *cache_notes, ""]
    text += ["## Where the time goes", "", *profiles]
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
