"""midas_glmm against two Python packages with compiled cores, mixedlm (a Rust port of lme4) and glmm
(a Python port of a Rust crate), on the same data in one run, written to Markdown.

    python benchmarks/pyports.py                          # every case, then the cold starts
    python benchmarks/pyports.py --reps 5 --cases sleepstudy cbpp --no-cold
    python benchmarks/pyports.py --cold                   # only the cold starts
    python benchmarks/pyports.py --peer-python /tmp/peers/bin/python --timeout 600 --out /tmp/p.md

The peers live in their own venv (--peer-python; default $MIDAS_PEER_PYTHON or /tmp/peers/bin/python:
`python3 -m venv /tmp/peers && /tmp/peers/bin/pip install mixedlm==1.3.0 glmm==0.6.2 pandas`).
Each case's data are written once to a CSV (the generated ones by cases.make: run.py's rows) that
every tool reads. Per case, one worker per tool (pyports_worker.py, under the peers' python or this
one) imports its tool and reads the data; then the tools' fits alternate (midas, mixedlm, glmm, and
again): two untimed warm-up fits each, then --reps timed fits, each timed around the whole user call.
A fit past --timeout seconds ends that tool's worker; a fit that raises shows its error. midas_glmm
runs from a copy of midas_glmm/ taken at the start (the tree may be edited meanwhile), with its own
numba cache directory.

Cold starts (--cold: only these; --no-cold: none): fresh processes timed from outside, best of 5
after one untimed run: import midas_glmm; import + sleepstudy fit with midas_glmm, lme4 (Rscript),
mixedlm and glmm; then each model's first fit after install (its own fresh copy, empty numba
cache: sleepstudy, a 1e5-row random intercept, cbpp, a random-intercept Bernoulli GLMM, a slope LMM,
crossed and maximal LMMs, a crossed Bernoulli GLMM, grouseticks, and fit_many of 200 responses on
three designs; FIRST_FITS), then again. Every
timed process runs without PYTHONDONTWRITEBYTECODE (set in this machine's shell; a user's Python
caches bytecode).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import median

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT, WORKER = HERE.parent, str(HERE / "pyports_worker.py")
DATA = ROOT / "midas_glmm" / "datasets"
sys.path.insert(0, str(HERE))
from cases import BY_NAME, make  # noqa: E402

TOOLS = ("midas", "mixedlm", "glmm")
TOL = {True: 1e-6, False: 1e-3}  # how far below midas an LMM's / a GLMM's llf may be
NOTES = {
    "cbpp": "mixedlm has no cbind(): `prop ~ period + (1|herd)` with weights=size (prop = incidence/size); glmm's "
    "cbind() takes two column names only: `cbind(incidence, failures)`, failures = size - incidence",
    "grouseticks": "neither peer parses scale(): every tool gets sHEIGHT = R's scale(HEIGHT), a column of "
    "data/grouseticks.csv (midas_glmm's own scale(HEIGHT) gives the same llf); YEAR is a factor",
    "nb2_glmm_1e4": 'cases.py\'s nb2_glmm_1e4 (size 2); midas_glmm\'s family "nbinom2", glmm\'s "negativebinomial", '
    "both estimating the size; mixedlm skipped: its glmer_nb holds theta fixed (1.0 by default), not estimated",
    "binary_1e5_g1000": "cases.py's binary_glmm_1e5 generator with 1,000 groups",
    "ri_lmm_1e5_g1000": "cases.py's ri_lmm_1e5 generator with 1,000 groups",
}


@dataclass(frozen=True)
class PCase:
    name: str
    load: object  # () -> DataFrame
    formula: str
    family: str | None = None  # None: Gaussian, REML
    str_cols: tuple[str, ...] = ()  # read as strings (factors)
    peer: tuple = ()  # (tool, its own formula or None to skip it), ...
    weights: str | None = None  # mixedlm's prior-weights column


def _gen(name: str, **change):
    return lambda: make(replace(BY_NAME[name], **change))


def _cbpp() -> pd.DataFrame:
    df = pd.read_csv(DATA / "cbpp.csv", dtype={"herd": str, "period": str})
    return df.assign(failures=df["size"] - df["incidence"], prop=df["incidence"] / df["size"])


def _grouse() -> pd.DataFrame:
    return pd.read_csv(HERE / "data" / "grouseticks.csv", dtype={"YEAR": str})


FIXED = "y ~ x1 + x2 + x3 + x4 + x5 + (1|g)"
CBPP_FORMULA = "cbind(incidence, size - incidence) ~ period + (1|herd)"
CBPP = (("mixedlm", "prop ~ period + (1|herd)"), ("glmm", "cbind(incidence, failures) ~ period + (1|herd)"))
GROUSE = "TICKS ~ YEAR + sHEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)"
CASES = [
    PCase("sleepstudy", lambda: pd.read_csv(DATA / "sleepstudy.csv"), "Reaction ~ Days + (Days|Subject)"),
    PCase("dyestuff", lambda: pd.read_csv(DATA / "dyestuff.csv"), "Yield ~ 1 + (1|Batch)"),
    PCase("cbpp", _cbpp, CBPP_FORMULA, "binomial", ("herd", "period"), CBPP, "size"),
    PCase("grouseticks", _grouse, GROUSE, "poisson", ("YEAR", "BROOD", "INDEX", "LOCATION")),
    PCase("nb2_glmm_1e4", _gen("nb2_glmm_1e4"), FIXED, "nbinom2", peer=(("mixedlm", None),)),
    PCase("binary_1e5_g1000", _gen("binary_glmm_1e5", groups=1000), FIXED, "binomial"),
    PCase("slope_binary_2e3", _gen("slope_binary_2e3"), BY_NAME["slope_binary_2e3"].formula, "binomial"),
    PCase("crossed_binary_6e4", _gen("crossed_binary_6e4"), BY_NAME["crossed_binary_6e4"].formula, "binomial"),
    PCase(
        "crossed_binary_verbagg", _gen("crossed_binary_verbagg"), BY_NAME["crossed_binary_verbagg"].formula, "binomial"
    ),
    PCase(
        "crossed_binary_400x250", _gen("crossed_binary_400x250"), BY_NAME["crossed_binary_400x250"].formula, "binomial"
    ),
    PCase("crossed_lmm_verbagg", _gen("crossed_lmm_verbagg"), BY_NAME["crossed_lmm_verbagg"].formula),
    PCase("ri_lmm_1e5_g1000", _gen("ri_lmm_1e5", groups=1000), FIXED),
    PCase("ri_lmm_1e6", _gen("ri_lmm_1e6"), FIXED),
    PCase("slope_lmm_1e5", _gen("slope_lmm_1e5"), BY_NAME["slope_lmm_1e5"].formula),
    PCase("insteval_crossed", _gen("insteval_crossed"), BY_NAME["insteval_crossed"].formula),
    PCase("crossed_slopes_lmm", _gen("crossed_slopes_lmm"), BY_NAME["crossed_slopes_lmm"].formula),
    PCase("crossed_slopes_binary", _gen("crossed_slopes_binary"), BY_NAME["crossed_slopes_binary"].formula, "binomial"),
]
BY = {c.name: c for c in CASES}


class Worker:
    """A pyports_worker.py process; a thread puts its JSON lines on a queue (None at its end)."""

    def __init__(self, cmd: list[str], env: dict, log: Path):
        self.log = open(log, "w")
        std = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True, **std)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self, timeout: float, go: bool = True) -> dict:
        """Start the next fit (go) and wait for its line, at most `timeout` seconds."""
        if go:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        try:
            out = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            return {"timeout": timeout}
        if out is None:  # died without a line
            self.proc.wait()
            tail = Path(self.log.name).read_text().strip().splitlines()
            return {"error": (tail or [f"exit {self.proc.returncode}"])[-1][:300]}
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)  # its own session: the worker and anything it started
        self.proc.wait()
        self.log.close()


def run_case(case: PCase, path: Path, args, envs: dict, work: Path) -> dict:
    """Every tool's fits of one case, the tools alternating: per tool, its fits and any error."""
    runs, workers = {}, {}
    for tool in TOOLS:
        formula = dict(case.peer).get(tool, case.formula)
        runs[tool] = {"fits": [], "skip": formula is None}
        if formula is None:
            continue
        spec = dict(tool=tool, formula=formula, family=case.family, data=str(path), reps=args.reps + WARM - 1)
        spec.update(str_cols=list(case.str_cols), weights=case.weights)
        (work / f"{case.name}.{tool}.json").write_text(json.dumps(spec))
        py = sys.executable if tool == "midas" else args.peer_python
        workers[tool] = Worker([py, WORKER, str(work / f"{case.name}.{tool}.json")], envs[tool], work / f"{tool}.log")
    for tool, w in workers.items():  # imports and data reading: untimed
        if not (ready := w.next(args.timeout, go=False)).get("ready"):
            runs[tool].update(ready)
    for i in range(args.reps + WARM):
        for tool, w in workers.items():
            r = runs[tool]
            if "error" in r or "timeout" in r:
                continue
            out = w.next(args.timeout)
            if "seconds" in out:
                r["fits"].append(out)
                out = f"{out['seconds']:9.3f} s  llf {out['llf']:.6f} ({out['crit']})"
            else:
                r.update(out)
            print(f"  {tool:8s} fit {i}: {out}", flush=True)
    for w in workers.values():
        w.stop()
    return runs


#: untimed warm-up fits per tool and case: a process's first fits of a model run slower (caches, lazy
#: imports, the allocator), midas_glmm's second one too on the small models
WARM = 2


def times(r: dict) -> list[float]:
    return [f["seconds"] for f in r["fits"][WARM:]]  # the first WARM fits are the warm-up


def cell(r: dict) -> str:
    if t := times(r):
        more = f" ({len(t)} fits, then {'a timeout' if 'timeout' in r else 'an error'})" if len(r) > 2 else ""
        return f"{min(t):.3g} / {median(t):.3g}{more}"
    if r["skip"]:
        return "skipped (see notes)"
    if "timeout" in r:
        return f"timeout > {r['timeout']:g} s"
    return "error: " + r.get("error", "?").replace("|", "\\|")


def table_row(case: PCase, df: pd.DataFrame, runs: dict) -> dict:
    groups = dict.fromkeys(re.findall(r"\|\s*(\w+)\s*\)", case.formula))
    label = f"{len(df):,} x " + " x ".join(f"{df[g].nunique():,} {g}" for g in groups)
    row = {"case": case.name, "rows x levels": label} | {f"{t} best / median s": cell(runs[t]) for t in TOOLS}
    med = {t: median(times(r)) for t, r in runs.items() if times(r)}
    peers = {t: m for t, m in med.items() if t != "midas"}
    fast = min(peers, key=peers.get) if peers else None
    row["fastest peer / midas"] = f"{peers[fast] / med['midas']:.3g} ({fast})" if fast and "midas" in med else ""
    mine = runs["midas"]["fits"]
    for tool in TOOLS[1:]:
        theirs, d = runs[tool]["fits"], ""
        if mine and theirs and mine[-1]["crit"] != theirs[-1]["crit"]:
            d = f"n/a ({theirs[-1]['crit']} vs {mine[-1]['crit']})"
        elif mine and theirs:
            diff = theirs[-1]["llf"] - mine[-1]["llf"]
            d = f"{diff:+.2e}" + (" **lower optimum**" if diff < -TOL[case.family is None] else "")
        row[f"llf {tool} - midas"] = d
    row["criterion"] = mine[-1]["crit"] if mine else ""
    return row


def best_of(cmd: list[str], env: dict | None, cwd: Path, n: int = 5, warm: bool = True) -> list[float]:
    """Wall seconds of `cmd` in n fresh processes (after an untimed one), timed from outside. Run
    in `cwd`, not in the repository, whose midas_glmm/ `python -c` would import before PYTHONPATH's."""
    out = []
    for _ in range(n + warm):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip()[-200:]}")
    return out[warm:]


def copy_package(dest: Path) -> Path:
    skip = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc")
    shutil.copytree(ROOT / "midas_glmm", dest / "midas_glmm", ignore=skip)
    return dest


SS, PD = "'Reaction ~ Days + (Days|Subject)'", "import pandas as pd"
#: the environment of every timed process: this machine's shell sets PYTHONDONTWRITEBYTECODE, which
#: makes each fresh process compile every module from source (a user's Python caches the bytecode)
BASE_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
GT = Path(__file__).resolve().parent / "data" / "grouseticks.csv"
FIT_GT = (
    "import warnings; warnings.simplefilter('ignore'); import pandas as pd; from midas_glmm import MixedModel; "
    f"d = pd.read_csv({str(GT)!r}, dtype={{'BROOD': str, 'INDEX': str, 'LOCATION': str, 'YEAR': str}}); "
    "MixedModel.from_formula('TICKS ~ YEAR + sHEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)', d, "
    "family='poisson').fit()"
)
FIT_B = f"from midas_glmm import MixedModel, datasets; MixedModel.from_formula({SS}, datasets.load('sleepstudy')).fit()"
FIT_CBPP = (
    "import warnings; warnings.simplefilter('ignore'); from midas_glmm import MixedModel, datasets; "
    "MixedModel.from_formula('cbind(incidence, size - incidence) ~ period + (1|herd)', datasets.load('cbpp'), "
    "family='binomial').fit()"
)
#: simulated rows of the cold starts' larger shapes (numpy only: no data file)
_SIM = (
    "import warnings; warnings.simplefilter('ignore'); import numpy as np, pandas as pd; "
    "from midas_glmm import MixedModel; r = np.random.default_rng(1); "
)
FIT_RI_BERN = _SIM + (
    "n = 10_000; d = pd.DataFrame({'x': r.normal(size=n), 'g': r.integers(0, 200, n)}); "
    "e = 0.3 * d.x + r.normal(0, 1, 200)[d.g]; d['y'] = (r.random(n) < 1 / (1 + np.exp(-e))).astype(float); "
    "MixedModel.from_formula('y ~ x + (1|g)', d, family='binomial').fit()"
)
FIT_RI_LMM = _SIM + (
    "n = 100_000; d = pd.DataFrame({'x': r.normal(size=n), 'g': r.integers(0, 1000, n)}); "
    "d['y'] = d.x + r.normal(0, 1, 1000)[d.g] + r.normal(size=n); MixedModel.from_formula('y ~ x + (1|g)', d).fit()"
)
FIT_SLOPE = _SIM + (
    "n = 5000; d = pd.DataFrame({'x': r.normal(size=n), 'g': r.integers(0, 100, n)}); "
    "d['y'] = d.x * (1 + r.normal(0, .5, 100)[d.g]) + r.normal(0, 1, 100)[d.g] + r.normal(size=n); "
    "MixedModel.from_formula('y ~ x + (x|g)', d).fit()"
)
FIT_CROSSED = _SIM + (
    "n = 2000; d = pd.DataFrame({'x': r.normal(size=n), 'a': r.integers(0, 60, n), 'b': r.integers(0, 40, n)}); "
    "d['y'] = d.x + r.normal(0, 1, 60)[d.a] + r.normal(0, 1, 40)[d.b] + r.normal(size=n); "
    "MixedModel.from_formula('y ~ x + (1|a) + (1|b)', d).fit()"
)
FIT_MAXIMAL = _SIM + (
    "s, i = np.repeat(np.arange(30), 20), np.tile(np.arange(20), 30); x = r.choice([-.5, .5], 600); "
    "d = pd.DataFrame({'x': x, 's': s, 'i': i, 'y': x * (.3 + r.normal(0, .3, 30)[s] + r.normal(0, .2, 20)[i]) "
    "+ r.normal(0, .6, 30)[s] + r.normal(0, .4, 20)[i] + r.normal(0, .7, 600)}); "
    "MixedModel.from_formula('y ~ x + (1 + x|s) + (1 + x|i)', d).fit()"
)
FIT_NB2 = _SIM + (
    "n = 644; d = pd.DataFrame({'x': r.normal(size=n), 'g': r.integers(0, 23, n)}); "
    "mu = np.exp(0.5 + 0.4 * d.x + r.normal(0, 0.8, 23)[d.g]); d['y'] = r.negative_binomial(1.5, 1.5 / (1.5 + mu)); "
    "MixedModel.from_formula('y ~ x + (1|g)', d, family='nbinom2').fit()"
)
FIT_CROSSED_BERN = _SIM + (
    "n = 2000; d = pd.DataFrame({'x': r.normal(size=n), 'a': r.integers(0, 60, n), 'b': r.integers(0, 40, n)}); "
    "e = 0.3 * d.x + r.normal(0, 1, 60)[d.a] + r.normal(0, .7, 40)[d.b]; "
    "d['y'] = (r.random(n) < 1 / (1 + np.exp(-e))).astype(float); "
    "MixedModel.from_formula('y ~ x + (1|a) + (1|b)', d, family='binomial').fit()"
)
FIT_NESTED = _SIM + (
    "school = np.repeat(np.arange(60), 32); cls = np.repeat(np.arange(240), 8); n = len(school); "
    "d = pd.DataFrame({'x': r.normal(size=n), 'school': school, 'cls': cls}); "
    "d['y'] = d.x + r.normal(0, 1, 60)[school] + r.normal(0, .6, 240)[cls] + r.normal(size=n); "
    "MixedModel.from_formula('y ~ x + (1|school/cls)', d).fit()"
)
#: fit_many of 200 simulated responses on one design (a simulation study's first call)
_MANY = _SIM + (
    "n = 2000; d = pd.DataFrame({'x': r.normal(size=n), 'g': r.integers(0, 100, n), 'a': r.integers(0, 60, n), "
    "'b': r.integers(0, 40, n)}); Y = d.x.to_numpy()[:, None] + r.normal(size=(n, 200)); "
)
FIT_MANY_RI = _MANY + "Y += r.normal(size=(100, 200))[d.g]; MixedModel.from_formula('~ x + (1|g)', d).fit_many(Y)"
FIT_MANY_SLOPE = _MANY + (
    "Y += r.normal(size=(100, 200))[d.g] * (1 + d.x.to_numpy()[:, None]); "
    "MixedModel.from_formula('~ x + (x|g)', d).fit_many(Y)"
)
FIT_MANY_CROSSED = _MANY + (
    "Y += r.normal(size=(60, 200))[d.a] + r.normal(size=(40, 200))[d.b]; "
    "MixedModel.from_formula('~ x + (1|a) + (1|b)', d).fit_many(Y)"
)
FIT_MANY_NESTED = _MANY + (
    "Y += r.normal(size=(60, 200))[d.a] + r.normal(size=(2400, 200))[d.a * 40 + d.b]; "
    "MixedModel.from_formula('~ x + (1|a/b)', d).fit_many(Y)"
)
#: (label, code) of the first fits after install, each from its own fresh copy and empty cache
FIRST_FITS = (
    ("sleepstudy LMM (36 random effects: dense LAPACK)", FIT_B),
    ("random-intercept LMM, 1e5 rows x 1,000 groups (diagonal factor)", FIT_RI_LMM),
    ("cbpp binomial GLMM (one random intercept, 56 rows: group by group in numpy, nothing compiled)", FIT_CBPP),
    ("random-intercept Bernoulli GLMM, 1e4 rows x 200 groups (group by group in numpy, nothing compiled)", FIT_RI_BERN),
    ("random-slope LMM, 5,000 rows x 100 groups (closed-form 2 x 2 blocks in numpy, nothing compiled)", FIT_SLOPE),
    ("NB2 GLMM, one random intercept, 644 rows x 23 groups (passes over the rows in numpy, nothing compiled)", FIT_NB2),
    ("crossed LMM, intercepts for a and b, 2,000 rows x 60 x 40 (100 random effects: dense LAPACK)", FIT_CROSSED),
    (
        "maximal model, intercepts and x slopes for 30 subjects x 20 items (100 random effects, 6 theta: dense)",
        FIT_MAXIMAL,
    ),
    (
        "crossed Bernoulli GLMM, intercepts for a and b, 2,000 rows x 60 x 40 (dense LAPACK; the working "
        "system's pass compiled)",
        FIT_CROSSED_BERN,
    ),
    (
        "nested LMM, pupils in 240 classes in 60 schools, 1,920 rows (300 random effects: eliminated term by term "
        "in numpy, nothing compiled)",
        FIT_NESTED,
    ),
    (
        "grouseticks Poisson GLMM (584 random effects: eliminated term by term in numpy; the working system's "
        "pass compiled)",
        FIT_GT,
    ),
    ("fit_many, 200 responses of y ~ x + (1|g), 2,000 rows x 100 groups (numpy batch: nothing compiled)", FIT_MANY_RI),
    (
        "fit_many, 200 responses of y ~ x + (x|g), 2,000 rows x 100 groups (numpy batch: nothing compiled)",
        FIT_MANY_SLOPE,
    ),
    (
        "fit_many, 200 responses of y ~ x + (1|a) + (1|b), 2,000 rows x 60 x 40 (compiled batch kernels)",
        FIT_MANY_CROSSED,
    ),
    (
        "fit_many, 200 responses of y ~ x + (1|a/b), 2,000 rows, 60 > 2,400 cells (compiled forest elimination)",
        FIT_MANY_NESTED,
    ),
)


def imported_from(pkg: Path) -> str:
    """Code that exits 3 unless midas_glmm was imported from `pkg`."""
    return f"; import midas_glmm, sys; sys.exit(0 if midas_glmm.__file__.startswith({str(pkg)!r}) else 3)"


def cold_starts(args, env_midas: dict, work: Path) -> list[dict]:
    rows, snap, py, pp = [], Path(env_midas["PYTHONPATH"]), sys.executable, args.peer_python

    def add(label: str, best: str, note: str) -> None:
        rows.append({"command": label, "best s": best, "runs s / note": note})
        print(f"  {rows[-1]}", flush=True)

    ss_csv = f"pd.read_csv({str(DATA / 'sleepstudy.csv')!r})"
    lme4 = "suppressMessages(library(lme4)); m <- lmer(Reaction ~ Days + (Days|Subject), sleepstudy)"
    cmds = [
        ("a. `import midas_glmm`", [py, "-c", "import midas_glmm" + imported_from(snap)], env_midas),
        ("b. midas_glmm: import + sleepstudy fit", [py, "-c", FIT_B + imported_from(snap)], env_midas),
        ("c. lme4 (Rscript): library(lme4) + sleepstudy fit", ["Rscript", "-e", lme4], BASE_ENV),
        ("d. `import mixedlm`", [pp, "-c", "import mixedlm"], BASE_ENV),
        ("d. mixedlm: import + sleepstudy fit", [pp, "-c", f"{PD}, mixedlm; mixedlm.lmer({SS}, {ss_csv})"], BASE_ENV),
        ("d. `import glmm`", [pp, "-c", "import glmm"], BASE_ENV),
        ("d. glmm: import + sleepstudy fit", [pp, "-c", f"{PD}, glmm; glmm.fit({ss_csv}, {SS})"], BASE_ENV),
    ]
    for label, cmd, env in cmds:
        if not shutil.which(cmd[0]):
            add(label, "skipped", f"no {cmd[0]}")
            continue
        try:
            t = best_of(cmd, env, work)
            add(label, f"{min(t):.3f}", ", ".join(f"{x:.2f}" for x in t))
        except RuntimeError as e:
            add(label, "failed", str(e)[:200])
    for name, fit in FIRST_FITS:  # e. each model's first fit after install, then again
        with tempfile.TemporaryDirectory(prefix="midas_fresh_") as tmp:
            pkg, cache = copy_package(Path(tmp) / "pkg"), Path(tmp) / "numba"
            cache.mkdir()
            env = {**BASE_ENV, "PYTHONPATH": str(pkg), "NUMBA_CACHE_DIR": str(cache)}
            for label in (f"e. first fit after install (empty numba cache): {name}", "e. the same again (cache warm)"):
                try:
                    t = best_of([py, "-c", fit + imported_from(pkg)], env, work, n=1, warm=False)
                    files = sum(f.is_file() for f in cache.rglob("*"))
                    add(label, f"{t[0]:.3f}", f"one run, import included; numba cache files after it: {files}")
                except RuntimeError as e:
                    add(label, "failed", str(e)[:200])
    return rows


def machine(envs: dict, snap: Path, peer_python: str) -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    parts = [f"{platform.platform()}; CPU: {cpu}; {os.cpu_count()} cores; RAM {mem:.1f} GiB"]
    git = [
        subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
        for a in (["rev-parse", "HEAD"], ["status", "--porcelain", "midas_glmm"])
    ]
    digest = hashlib.sha256()
    for f in sorted((snap / "midas_glmm").rglob("*.py")):
        digest.update(f.relative_to(snap).as_posix().encode() + f.read_bytes())
    for tool in TOOLS:
        py = sys.executable if tool == "midas" else peer_python
        p = subprocess.run([py, WORKER, "--versions", tool], capture_output=True, text=True, env=envs[tool], cwd=snap)
        v, src = (json.loads(p.stdout) if p.returncode == 0 else {}), ""
        if tool == "midas":
            if not v.get("file", "").startswith(str(snap)):
                raise SystemExit(f"midas_glmm did not import from the run's copy: {v} {p.stderr[-300:]}")
            dirty = " + uncommitted changes" if git[1] else ""
            src = f" (commit {git[0][:12]}{dirty}; the run's copy: sha256 of its .py files {digest.hexdigest()[:10]})"
        parts.append(
            f"{tool} {v.get('tool')}{src}: " + ", ".join(f"{k} {v.get(k)}" for k in ("python", "numpy", "pandas"))
        )
    if shutil.which("Rscript"):
        r = 'cat(R.version.string, "lme4", format(packageVersion("lme4")))'
        parts.append(subprocess.run(["Rscript", "-e", r], capture_output=True, text=True).stdout.strip())
    return "; ".join(parts)


def markdown(rows: list[dict]) -> list[str]:
    head = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return head + ["| " + " | ".join(map(str, r.values())) + " |" for r in rows] + [""]


ABOUT_FITS = """Seconds, best / median of {reps} timed fits after two untimed warm-up fits, in one process per tool
and case (import and data reading not timed); the tools' fits alternate. Each is timed around the
user's whole call, formula parsing included: `MixedModel.from_formula(...).fit()`, `mixedlm.lmer(...)`
or `glmer(...)`, `glmm.fit(...)`, with their defaults (glmm's include Hessian standard errors and, for
LMMs, Satterthwaite df). Gaussian models by REML (all three tools can), the others by Laplace.
`fastest peer / midas` is the faster peer's median over midas_glmm's (> 1: midas_glmm is faster).
`llf X - midas` is the peer's log-likelihood minus midas_glmm's on the same criterion (REML for the
LMMs, Laplace for the GLMMs); below -1e-6 (LMM) or -1e-3 (GLMM) it is flagged as a lower optimum.
"""
ABOUT_COLD = """## Cold starts

Wall seconds of fresh processes, timed from outside with subprocess: best of 5 after one untimed
run. The fit is sleepstudy's `Reaction ~ Days + (Days|Subject)` by REML; the peers read midas_glmm's
sleepstudy.csv with pandas (import included), lme4 its own copy. Rows e are one run each, import
included: every model in its own fresh copy of midas_glmm/ without __pycache__ and numba cache files
(so the first run also writes the .pyc files, as pip would at install) and NUMBA_CACHE_DIR pointed at
an empty directory, then the same model again with that cache warm.
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=list(BY), choices=list(BY))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per fit (and per worker start)")
    ap.add_argument("--peer-python", default=os.environ.get("MIDAS_PEER_PYTHON", "/tmp/peers/bin/python"))
    ap.add_argument("--cold", action="store_true", help="only the cold starts")
    ap.add_argument("--no-cold", action="store_true", help="no cold starts")
    ap.add_argument("--out", default=str(HERE / "RESULTS_PYPORTS.md"))
    args = ap.parse_args(argv)
    if not Path(args.peer_python).exists():
        raise SystemExit(f"no peer python at {args.peer_python} (see this script's docstring)")
    work = Path(tempfile.mkdtemp(prefix="midas_pyports_"))
    snap = copy_package(work / "snap")  # the midas_glmm every midas process of this run imports
    env_midas = {**BASE_ENV, "PYTHONPATH": str(snap), "NUMBA_CACHE_DIR": str(work / "numba")}
    envs = {"midas": env_midas, "mixedlm": BASE_ENV, "glmm": BASE_ENV}
    started, load = time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0]
    text = [
        "# midas_glmm vs mixedlm and glmm (Python packages with compiled cores)",
        "",
        f"Run on {started} with `python benchmarks/pyports.py {' '.join(sys.argv[1:] if argv is None else argv)}`;",
        f"load average {load:.2f} at the start ({os.cpu_count()} cores, shared with another engineer's work during",
        "the run: the times are indicative).",
        "",
        f"Machine: {machine(envs, snap, args.peer_python)}",
        "",
    ]
    rows, notes = [], []
    for name in [] if args.cold else args.cases:
        case = BY[name]
        df = case.load()
        df.to_csv(work / f"{name}.csv", index=False)
        print(name, flush=True)
        rows.append(table_row(case, df, run_case(case, work / f"{name}.csv", args, envs, work)))
        notes += [f"- {name}: {NOTES[name]}."] if name in NOTES else []
    if rows:
        text += [ABOUT_FITS.format(reps=args.reps), *markdown(rows), *notes, ""]
    if not args.no_cold:
        text += [ABOUT_COLD, *markdown(cold_starts(args, env_midas, work))]
    Path(args.out).write_text("\n".join(text))
    print("\n".join(text))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
