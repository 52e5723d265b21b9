"""Single-fit A/B of two source trees of midas_glmm in one process, their fits alternated.

    git worktree add --detach /tmp/w/base HEAD~1
    python benchmarks/ab_inprocess.py --base /tmp/w/base --new . --reps 100 sleepstudy dyestuff slope_lmm_1e5

For fits of milliseconds, where a fresh process per fit (benchmarks/ab.py) swings by 10-40%: both
trees are imported whole into one process (ab_fit_many.load_tree) and swapped into ``sys.modules``
before each of their calls, and the user's whole call, ``MixedModel.from_formula(...).fit()``, is
timed alternately, after two untimed fits per tree (compiling where the path compiles). A case is
a name of cases.py (its data made by cases.make), a bundled dataset's model (DATASETS), sleepstudy's
model on a wider frame (FRAMES), a simulated Gamma model (GAMMA) or a nested model of random
intercepts (NESTED). Prints,
and with --out writes as Markdown, the best and median milliseconds per tree, new / base of the
medians and of the bests, the optimizer's evaluations in each tree and the log-likelihoods'
difference.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cases  # noqa: E402
from ab_fit_many import load_tree  # noqa: E402

#: the bundled datasets' models: (dataset, formula, family)
DATASETS = {
    "sleepstudy": ("sleepstudy", "Reaction ~ Days + (Days|Subject)", None),
    "sleepstudy_ml": ("sleepstudy", "Reaction ~ Days + (Days|Subject)", None),
    "sleepstudy_uncorrelated": ("sleepstudy", "Reaction ~ Days + (Days||Subject)", None),
    "dyestuff": ("dyestuff", "Yield ~ 1 + (1|Batch)", None),
    "penicillin": ("penicillin", "diameter ~ 1 + (1|plate) + (1|sample)", None),
    "cbpp": ("cbpp", "cbind(incidence, size - incidence) ~ period + (1|herd)", "binomial"),
}


#: simulated Gamma GLMMs (cases.py has none: its R scripts map no Gamma family): rows and groups
#: of y ~ Gamma(shape 4, mean exp(0.5 + 0.3 x + u_g)), u_g ~ N(0, 0.5²), fitted with the log link
GAMMA = {"gamma_log_1e3": (1_000, 50), "gamma_log_1e4": (10_000, 200), "gamma_log_1e5": (100_000, 2_000)}


def gamma_data(n: int, groups: int, seed: int = 1):
    """The rows of a :data:`GAMMA` case."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    d = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, groups, n)})
    mu = np.exp(0.5 + 0.3 * d.x + rng.normal(0, 0.5, groups)[d.g])
    d["y"] = rng.gamma(4.0, mu / 4.0)
    return d


def schools_data(schools: int = 60, classes: int = 4, pupils: int = 8, seed: int = 1):
    """Pupils in classes in schools: y (Gaussian) and count (Poisson), each with both levels' effects."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(schools), classes * pupils)
    cls = np.repeat(np.arange(schools * classes), pupils)
    x = rng.normal(size=len(school))
    eta = 0.3 * x + rng.normal(0, 0.8, schools)[school] + rng.normal(0, 0.5, schools * classes)[cls]
    return pd.DataFrame(
        {
            "x": x,
            "school": school.astype(str),
            "cls": cls.astype(str),
            "y": eta + rng.normal(size=len(x)),
            "count": rng.poisson(np.exp(0.5 + 0.6 * eta)),
        }
    )


def grouseticks_data():
    """grouseticks (lme4's data, benchmarks/data), the factors as strings."""
    import pandas as pd

    return pd.read_csv(
        HERE / "data" / "grouseticks.csv", dtype={c: str for c in ("YEAR", "BROOD", "INDEX", "LOCATION")}
    )


#: nested models of random intercepts (several terms above the all-dense plan's 100 random
#: effects): (rows, formula, family)
NESTED = {
    "grouseticks": (grouseticks_data, "TICKS ~ YEAR + sHEIGHT + (1|BROOD) + (1|INDEX) + (1|LOCATION)", "poisson"),
    "schools_lmm": (schools_data, "y ~ x + (1|school/cls)", None),
    "schools_poisson": (schools_data, "count ~ x + (1|school/cls)", "poisson"),
    "schools_lmm_big": (lambda: schools_data(2_000, 5, 10), "y ~ x + (1|school/cls)", None),
    "schools_slope_lmm": (schools_data, "y ~ x + (x|school) + (1|school:cls)", None),
    "schools_slope_lmm_mid": (lambda: schools_data(90, 5, 10), "y ~ x + (x|school) + (1|school:cls)", None),
    "schools_poisson_mid": (lambda: schools_data(300, 5, 10), "count ~ x + (1|school/cls)", "poisson"),
    "schools_poisson_big": (lambda: schools_data(2_000, 5, 10), "count ~ x + (1|school/cls)", "poisson"),
    "schools_lmm_1e6": (lambda: schools_data(20_000, 5, 10), "y ~ x + (1|school/cls)", None),
}


def sleepstudy_frame(mods: dict, extra: int = 12, missing: int = 0):
    """sleepstudy as users' frames hold it: ``extra`` columns the model does not read (numbers and
    text), and ``missing`` reactions left out (rows lme4 drops)."""
    d = mods["midas_glmm"].datasets.load("sleepstudy")
    rng = np.random.default_rng(5)
    for i in range(extra):
        d[f"u{i}"] = rng.normal(size=len(d)) if i % 3 else rng.choice(["a", "b", "c"], len(d))
    if missing:
        d.loc[rng.choice(len(d), missing, replace=False), "Reaction"] = np.nan
    return d


#: sleepstudy's model on frames with more columns than it reads, and with missing responses
FRAMES = {"sleepstudy_wide": {}, "sleepstudy_wide_na": {"missing": 3}}


def case_of(name: str, mods: dict):
    """(data, formula, model keywords, fit keywords) of a case name: a case of cases.py as
    worker.py fits it (its family, ziformula, dispformula, nAGQ and REML/ML), a bundled dataset's
    model (:data:`DATASETS`), a simulated Gamma model (:data:`GAMMA`) or a nested model (:data:`NESTED`)."""
    if name in GAMMA:  # statsmodels' family object: both trees take it (each tree's own would not)
        from statsmodels.genmod import families

        family = families.Gamma(families.links.Log())
        return gamma_data(*GAMMA[name]), "y ~ x + (1|g)", {"family": family}, {}
    if name in NESTED:
        rows, formula, family = NESTED[name]
        return rows(), formula, {"family": family}, {}
    if name in FRAMES:
        return sleepstudy_frame(mods, **FRAMES[name]), DATASETS["sleepstudy"][1], {"family": None}, {}
    if name in DATASETS:
        data, formula, family = DATASETS[name]
        fit_kw = {"method": "ML"} if name.endswith("_ml") else {}
        return mods["midas_glmm"].datasets.load(data), formula, {"family": family}, fit_kw
    case = {c.name: c for c in cases.CASES}[name]
    model_kw = {"family": case.family}
    if case.ziformula:
        model_kw["ziformula"] = case.ziformula
    if case.dispformula:
        model_kw["dispformula"] = case.dispformula
    fit_kw = {"nAGQ": case.nAGQ} if case.nAGQ != 1 else {}
    if case.method and case.is_lmm:
        fit_kw["method"] = case.method
    return cases.make(case), case.formula, model_kw, fit_kw


def ab_arguments(doc: str, reps: int, case_names) -> argparse.Namespace:
    """The command line of an A/B of two trees: --base, --new, --reps, --out and the cases."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--base", required=True, help="a source tree (a git worktree) holding midas_glmm/")
    ap.add_argument("--new", required=True)
    ap.add_argument("--reps", type=int, default=reps)
    ap.add_argument("--out", help="a Markdown file for the table")
    ap.add_argument("cases", nargs="+", choices=list(case_names))
    return ap.parse_args()


def append_table(path: str | None, command: str, header: list[str], rows: list[str]) -> None:
    """Append to the Markdown file ``path`` (if given) the command in backticks and a table of
    ``header``'s cells with its rows (each already a Markdown row)."""
    if not path:
        return
    lines = [f"`{command}`", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n\n")


def main() -> None:
    args = ab_arguments(__doc__, 50, [*DATASETS, *FRAMES, *GAMMA, *NESTED, *(c.name for c in cases.CASES)])
    warnings.simplefilter("ignore")
    trees = {"base": load_tree(args.base), "new": load_tree(args.new)}
    rows = []
    for name in args.cases:
        data, formula, model_kw, kw = case_of(name, trees["new"])
        times, llf, nfev = {"base": [], "new": []}, {}, {}
        for side, mods in trees.items():  # untimed: compiles where the path compiles
            sys.modules.update(mods)
            for _ in range(2):
                res = mods["midas_glmm"].MixedModel.from_formula(formula, data, **model_kw).fit(**kw)
            llf[side], nfev[side] = res.llf, res.estimates.opt.nfev
        for _ in range(args.reps):
            for side, mods in trees.items():
                sys.modules.update(mods)
                t = time.perf_counter()
                mods["midas_glmm"].MixedModel.from_formula(formula, data, **model_kw).fit(**kw)
                times[side].append(time.perf_counter() - t)
        tb, tn = 1e3 * np.array(times["base"]), 1e3 * np.array(times["new"])
        row = (
            name,
            f"{tb.min():.2f}",
            f"{np.median(tb):.2f}",
            f"{tn.min():.2f}",
            f"{np.median(tn):.2f}",
            f"{np.median(tn) / np.median(tb):.3f}",
            f"{tn.min() / tb.min():.3f}",
            f"{nfev['base']} / {nfev['new']}",
            f"{llf['new'] - llf['base']:+.1e}",
        )
        rows.append(row)
        print(" | ".join(row), flush=True)
    if args.out:
        head = "| case | base best ms | base median ms | new best ms | new median ms | new/base median | new/base best "
        head += "| evaluations base / new | llf new - base |"
        lines = [head, "|" + "---|" * 9] + ["| " + " | ".join(r) + " |" for r in rows]
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
