"""Benchmark cases: seeded data generators and the model each tool fits.

Every case is a function of its size only, so every tool sees the same rows.

The "shapes" group (issue 12: the real shapes users fit) is listed in ``SHAPES``; those cases
also run with glmmTMB, and their ``notes`` say how the data are laid out. Columns named in a
case's ``factors`` are grouping factors (R turns them into factors).

The "covstruct" group (issue 25: glmmTMB's covariance structures and dispersion models) is listed
in ``COVSTRUCT``; every one runs with glmmTMB (the same formula, ``dispformula`` passed through as
``ziformula`` is), with lme4 where lme4 writes the same model (``lme4_formula``) and with nlme where
``nlme::lme`` fits it (``nlme``: its fixed, random, correlation and weights arguments, as R code).
Time factors are pandas Categoricals with their categories in time order ("t01", "t02", ...: R's
factor() sorts them into the same order). All are fitted by ML (Laplace for the other families).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

BETA = np.array([0.5, 0.3, -0.2, 0.1, 0.05])


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "ri", "slope", "crossed", "binary", "poisson"
    n: int
    groups: int
    formula: str
    family: str | None = None
    nAGQ: int = 1
    tools: tuple[str, ...] = ("midas", "statsmodels", "lme4")
    r_formula: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)
    group: str = ""  # "shapes": the cases of issue 12
    task: str = "fit"  # "fit", or "profile": fit, then profile-likelihood intervals (timed together)
    method: str | None = None  # None: REML for Gaussian models (lmer's default); "ML"
    factors: tuple[str, ...] = ("g", "s", "d", "dept")  # grouping columns (R: factor())
    levels: str = ""  # how the grouping levels are written in the table, when not `groups`
    statsmodels: dict = field(default_factory=dict)  # MixedLM spec: fixed, groups, re_formula, vc
    ziformula: str = ""  # glmmTMB's zero-inflation formula ("~ x1"), for the zi cases
    dispformula: str = ""  # glmmTMB's dispersion formula ("~ x", "~ 0"), for the dispersion cases
    lme4_formula: str = ""  # lme4's formula when it writes the model otherwise ("(1 + x || g)")
    nlme: dict = field(default_factory=dict)  # nlme::lme spec: fixed, random, correlation, weights

    @property
    def rows_levels(self) -> str:
        if self.levels:
            return f"{self.n:,} x {self.levels}"
        return f"{self.n:.0e} x {self.groups}"

    @property
    def is_lmm(self) -> bool:
        return self.family in (None, "gaussian")


FIXED = "x1 + x2 + x3 + x4 + x5"


def _base(n: int, groups: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    X = rng.normal(size=(n, 5))
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(1, 6)])
    df["g"] = g
    return df, X @ BETA, rng


def make(case: Case) -> pd.DataFrame:
    """The rows of a case (deterministic: seeded by the case's size)."""
    n, G = case.n, case.groups
    if case.group == "ordinal":  # before the kinds below: its "ri" and "slope" are ordinal
        return _make_ordinal(case)
    if case.kind == "salamanders":  # glmmTMB's Salamanders (644 rows, 23 sites): a small real model
        from midas_glmm import datasets

        return datasets.load("salamanders")[["count", "spp", "mined", "site"]]
    if case.kind in ("zip", "zinb2", "zinb1"):  # zero-inflated counts (issue 15): pi = expit(-1 + 0.8 x1)
        df, eta, rng = _base(n, G, seed=n + G + 16)
        mu = np.exp(0.5 + eta + rng.normal(0, 0.5, G)[df["g"]])
        if case.kind == "zip":
            y = rng.poisson(mu)
        elif case.kind == "zinb2":  # size 2
            y = rng.negative_binomial(2.0, 2.0 / (2.0 + mu))
        else:  # variance mu (1 + 1.5)
            y = rng.negative_binomial(mu / 1.5, 1 / 2.5)
        structural = rng.uniform(size=n) < 1 / (1 + np.exp(1.0 - 0.8 * df["x1"].to_numpy()))
        df["y"] = np.where(structural, 0, y).astype(float)
        return df
    if case.kind in ("nb2", "nb1", "beta"):  # glmmTMB's families (issue 15)
        df, eta, rng = _base(n, G, seed=n + G + 15)
        eta = eta + rng.normal(0, 0.5, G)[df["g"]]
        if case.kind == "nb2":  # size 2
            mu = np.exp(0.5 + eta)
            df["y"] = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(float)
        elif case.kind == "nb1":  # variance mu (1 + 1.5)
            mu = np.exp(0.5 + eta)
            df["y"] = rng.negative_binomial(mu / 1.5, 1 / 2.5).astype(float)
        else:  # precision 10, kept inside (0, 1) at 6 decimals
            mu = 1 / (1 + np.exp(-(eta - 0.5)))
            df["y"] = np.clip(np.round(rng.beta(mu * 10, (1 - mu) * 10), 6), 1e-6, 1 - 1e-6)
        return df
    if case.kind in ("ri", "slope", "binary", "poisson", "slope_binary"):
        df, eta, rng = _base(n, G, seed=n + G)
        u = rng.normal(0, 1.0 if case.kind != "poisson" else 0.5, G)[df["g"]]
        if case.kind in ("slope", "slope_binary"):
            eta = eta + rng.normal(0, 0.5, G)[df["g"]] * df["x1"].to_numpy()
        eta = eta + u
        if case.kind in ("ri", "slope"):
            df["y"] = 2.0 + eta + rng.normal(size=n)
        elif case.kind in ("binary", "slope_binary"):
            df["y"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-(eta - 0.5)))).astype(float)
        else:
            df["y"] = rng.poisson(np.exp(0.5 + eta)).astype(float)
        return df
    if case.kind == "crossed_slopes":  # every subject sees every item once, a two-level condition
        rng = np.random.default_rng(n + G + 21)
        items = n // G
        subj, item = np.repeat(np.arange(G), items), np.tile(np.arange(items), G)
        x1 = rng.choice([-0.5, 0.5], n)
        us = rng.multivariate_normal([0, 0], [[0.36, 0.06], [0.06, 0.09]], G)
        ui = rng.multivariate_normal([0, 0], [[0.16, -0.02], [-0.02, 0.04]], items)
        eta = us[subj, 0] + us[subj, 1] * x1 + ui[item, 0] + ui[item, 1] * x1
        if case.family == "binomial":  # a correct/incorrect answer
            y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(0.5 + 0.3 * x1 + eta)))).astype(float)
        else:
            y = 1 + 0.3 * x1 + eta + rng.normal(size=n)
        return pd.DataFrame({"subj": subj, "item": item, "x1": x1, "y": y})
    if case.kind == "crossed":  # InstEval's shape: students x lecturers, lecturers within departments
        rng = np.random.default_rng(73421)
        ns, nd, ndept = 2972, 1128, 14
        s = rng.integers(0, ns, n)
        d = rng.integers(0, nd, n)
        dept_of_d = rng.integers(0, ndept, nd)
        dept = dept_of_d[d]
        service = rng.integers(0, 2, n)
        y = (
            3.2
            - 0.08 * service
            + rng.normal(0, 0.32, ns)[s]
            + rng.normal(0, 0.52, nd)[d]
            + rng.normal(0, 0.08, ndept)[dept]
            + rng.normal(0, 1.18, n)
        )
        y = np.clip(np.round(y), 1, 5)
        return pd.DataFrame({"y": y, "service": service.astype(float), "s": s, "d": d, "dept": dept})
    if case.group == "covstruct":
        return _make_covstruct(case)
    return _make_shape(case)


def _spread(rng: np.random.Generator, n: int, levels: int) -> np.ndarray:
    """n labels over 0..levels-1, every level used (levels <= n), in random order."""
    return rng.permutation(np.arange(n) % levels)


def _make_shape(case: Case) -> pd.DataFrame:
    """The rows of the issue-12 ("shapes") cases; each seeded by its size only."""
    n, kind = case.n, case.kind
    if kind == "obslevel":  # overdispersed counts: obs-level effect, a (118) crossed with b (63)
        na, nb = case.extra["a"], case.extra["b"]
        rng = np.random.default_rng(n + na + nb)
        a, b = _spread(rng, n, na), _spread(rng, n, nb)
        x1, x2 = rng.normal(size=n), rng.binomial(1, 0.4, n).astype(float)
        eta = 1.0 + 0.4 * x1 - 0.3 * x2 + rng.normal(0, 0.6, n) + rng.normal(0, 0.5, na)[a] + rng.normal(0, 0.4, nb)[b]
        y = rng.poisson(np.exp(eta)).astype(float)
        return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "obs": np.arange(n), "a": a, "b": b})
    if kind == "vcomp2":  # statsmodels' test_vcomp_2 data, drawn in the same order from its seed
        rs = np.random.RandomState(6241)
        exog = rs.normal(size=(n, 2))
        g = np.repeat(np.arange(n // 16), 16)
        exog_re = rs.normal(size=(n, 2))
        slopes = np.kron(rs.normal(size=(n // 16, 2)), np.ones((16, 1))) * exog_re
        errors = slopes.sum(1)
        errors += np.kron(2 * rs.normal(size=n // 4), np.ones(4))
        errors += np.kron(2 * rs.normal(size=n // 2), np.ones(2))
        errors += rs.normal(size=n)
        # h: the block of 4 rows within g (4 per g, 400 in all); k: the pair within h (800 in all)
        h = (np.arange(n) // 4) % 4
        k = (np.arange(n) // 2) % 2
        return pd.DataFrame(
            {
                "y": exog.sum(1) + errors,
                "x1": exog[:, 0],
                "x2": exog[:, 1],
                "z1": exog_re[:, 0],
                "z2": exog_re[:, 1],
                "g": g,
                "h": h,
                "k": k,
            }
        )
    if kind in ("nested", "nested_slope"):  # schools within districts within regions
        nr, nd, ns = case.extra["regions"], case.extra["districts"], case.extra["schools"]
        rng = np.random.default_rng(n + nr + nd + ns + (kind == "nested_slope"))
        school = _spread(rng, n, nr * nd * ns)  # global school id
        dist = school // ns  # global district id
        region = dist // nd
        x1, x2 = rng.normal(size=n), rng.normal(size=n)
        eta = 1.0 + 0.5 * x1 - 0.3 * x2
        eta = eta + rng.normal(0, 0.5, nr)[region] + rng.normal(0, 0.3, nr * nd * ns)[school]
        if kind == "nested":
            eta = eta + rng.normal(0, 0.4, nr * nd)[dist]
        else:  # correlated intercept and x1 slope per district (sds 0.4, 0.3; correlation 0.4)
            L = np.linalg.cholesky(np.array([[0.16, 0.4 * 0.12], [0.4 * 0.12, 0.09]]))
            u = rng.normal(size=(nr * nd, 2)) @ L.T
            eta = eta + u[dist, 0] + u[dist, 1] * x1
        # labels restart within each parent (district 0..nd-1 in every region, school 0..ns-1 in
        # every district), so only the nesting syntax tells them apart
        return pd.DataFrame(
            {
                "y": eta + rng.normal(size=n),
                "x1": x1,
                "x2": x2,
                "region": region,
                "district": dist % nd,
                "school": school % ns,
            }
        )
    if kind == "verbagg":  # VerbAgg's shape: 316 people x 24 items, every person answers every item
        nid, nitem = case.extra["ids"], case.extra["items"]
        rng = np.random.default_rng(n + nid + nitem)
        idx, item = np.repeat(np.arange(nid), nitem), np.tile(np.arange(nitem), nid)
        anger = rng.integers(11, 40, nid).astype(float)  # VerbAgg's Anger: trait score 11..39
        male = rng.binomial(1, 0.2, nid).astype(float)
        btype = np.arange(nitem) % 3  # curse, scold, shout
        self_ = (np.arange(nitem) // 12).astype(float)  # situation: other, self
        eta = (
            -1.1
            + 0.057 * anger[idx]
            + 0.32 * male[idx]
            - 1.06 * (btype[item] == 1)
            - 2.1 * (btype[item] == 2)
            - 1.05 * self_[item]
            + rng.normal(0, 1.3, nid)[idx]
            + rng.normal(0, 0.45, nitem)[item]
        )
        if case.family is None:  # an LMM of the same shape: a Gaussian response on η
            y = eta + rng.normal(size=n)
        else:
            y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
        return pd.DataFrame(
            {
                "y": y,
                "anger": anger[idx],
                "male": male[idx],
                "scold": (btype[item] == 1).astype(float),
                "shout": (btype[item] == 2).astype(float),
                "self": self_[item],
                "id": idx,
                "item": item,
            }
        )
    if kind == "crossed_binary":  # two crossed factors, rows drawn at random (unbalanced cells)
        na, nb = case.extra["a"], case.extra["b"]
        rng = np.random.default_rng(n + na + nb)
        a, b = _spread(rng, n, na), _spread(rng, n, nb)
        x1, x2 = rng.normal(size=n), rng.normal(size=n)
        eta = -0.3 + 0.5 * x1 - 0.25 * x2 + rng.normal(0, 1.0, na)[a] + rng.normal(0, 0.7, nb)[b]
        if case.family is None:  # the same shape with a Gaussian response (crossed_lmm_2e3)
            y = eta + rng.normal(size=n)
        else:
            y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
        return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "a": a, "b": b})
    if kind == "window":  # subjects answer a window of consecutive items; item ids hide the order
        ns, ni, per = case.extra["subjects"], case.extra["items"], case.extra["per"]
        rng = np.random.default_rng(n + ns + ni)
        start = rng.integers(0, ni - per + 1, ns)
        sub = np.repeat(np.arange(ns), per)
        pos = np.repeat(start, per) + np.tile(np.arange(per), ns)
        item = rng.permutation(ni)[pos]  # labels in no particular order
        x1 = rng.normal(size=n)
        eta = 0.2 + 0.5 * x1 + rng.normal(0, 0.8, ns)[sub] + rng.normal(0, 0.6, ni)[item]
        if case.family == "binomial":
            y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
        else:
            y = eta + rng.normal(size=n)
        return pd.DataFrame({"y": y, "x1": x1, "subject": sub, "item": item})
    if kind == "sleepstudy":  # the data set itself (lme4's sleepstudy, shipped with midas_glmm)
        from pathlib import Path

        path = Path(__file__).resolve().parent.parent / "midas_glmm" / "datasets" / "sleepstudy.csv"
        return pd.read_csv(path)
    raise ValueError(case.kind)


def _ar1_paths(rng: np.random.Generator, G: int, T: int, sd: float, rho: float) -> np.ndarray:
    """G stationary AR(1) paths of length T (sd ``sd``, lag-1 correlation ``rho``), G x T."""
    u = np.empty((G, T))
    u[:, 0] = rng.normal(0, sd, G)
    for t in range(1, T):
        u[:, t] = rho * u[:, t - 1] + rng.normal(0, sd * np.sqrt(1 - rho**2), G)
    return u


def _time_factor(G: int, T: int) -> pd.Categorical:
    """Times t01..tT within each of G subjects (rows subject by subject), categories in time order."""
    labels = [f"t{t + 1:02d}" for t in range(T)]
    return pd.Categorical(np.tile(labels, G), categories=labels)


#: seed offsets of the issue-25 kinds (each case is seeded by its size and its kind)
_COV_SEED = {
    k: 2500 + i
    for i, k in enumerate(
        ["ar1_lmm", "cs_lmm", "diag_lmm", "us_lmm", "toep_lmm", "ar1_poisson", "corar1", "disp_gaussian"]
        + ["disp_varident", "disp_nb2", "disp_beta"]
    )
}


def _make_covstruct(case: Case) -> pd.DataFrame:
    """The rows of the issue-25 ("covstruct") cases: each simulated from the model it fits,
    seeded by its size and kind. Subjects' rows are consecutive, in time order."""
    n, G, kind = case.n, case.groups, case.kind
    rng = np.random.default_rng(n + G + _COV_SEED[kind])
    if kind in ("ar1_lmm", "toep_lmm", "ar1_poisson", "corar1"):  # G subjects x T equally spaced times
        T = case.extra["times"]
        g, x = np.repeat(np.arange(G), T), rng.normal(size=G * T)
        df = pd.DataFrame({"g": g, "tf": _time_factor(G, T), "x": x})
        if kind == "ar1_lmm":  # ar1 sd 1, rho 0.6, residual sd 0.5
            df["y"] = 1 + 0.5 * x + _ar1_paths(rng, G, T, 1.0, 0.6).ravel() + rng.normal(0, 0.5, G * T)
        elif kind == "toep_lmm":  # sds (0.8, 1, 1.2, 1, 0.9), lag correlations (0.6, 0.4, 0.2, 0.1), residual 0.5
            sd, r = np.array([0.8, 1.0, 1.2, 1.0, 0.9]), np.array([1.0, 0.6, 0.4, 0.2, 0.1])
            S = np.outer(sd, sd) * r[np.abs(np.subtract.outer(np.arange(T), np.arange(T)))]
            u = rng.normal(size=(G, T)) @ np.linalg.cholesky(S).T
            df["y"] = 1 + 0.5 * x + u.ravel() + rng.normal(0, 0.5, G * T)
        elif kind == "ar1_poisson":  # log mu = 0.5 + 0.3 x + u, u ar1 with sd 0.5, rho 0.6
            u = _ar1_paths(rng, G, T, 0.5, 0.6).ravel()
            df = df.assign(count=rng.poisson(np.exp(0.5 + 0.3 * x + u)).astype(float))
        else:  # random intercept sd 0.8 + AR(1) errors (sd 1, phi 0.5), no other residual
            b = rng.normal(0, 0.8, G)[g]
            df["y"] = 1 + 0.5 * x + b + _ar1_paths(rng, G, T, 1.0, 0.5).ravel()
        return df
    if kind == "cs_lmm":  # every subject sees every item once; the condition rotates (Latin square)
        ni = case.extra["items"]
        subj, item = np.repeat(np.arange(G), ni), np.tile(np.arange(ni), G)
        c = (subj + item) % 3
        x = rng.normal(size=n)
        sd = np.array([0.8, 1.0, 1.2])
        S = np.outer(sd, sd) * np.where(np.eye(3) == 1, 1.0, 0.5)  # cs, rho 0.5
        us = rng.normal(size=(G, 3)) @ np.linalg.cholesky(S).T
        y = 2 + np.array([0, 0.5, -0.3])[c] + 0.6 * x + us[subj, c] + rng.normal(0, 0.6, ni)[item]
        cond = pd.Categorical(np.array(["A", "B", "C"])[c], categories=["A", "B", "C"])
        return pd.DataFrame({"subj": subj, "item": item, "cond": cond, "x": x, "y": y + rng.normal(size=n)})
    per = n // G
    g = np.repeat(np.arange(G), per)
    if kind in ("diag_lmm", "us_lmm"):  # intercept sd 1, x slope sd 0.5; correlated 0.4 for us
        x = rng.normal(size=n)
        r = 0.4 if kind == "us_lmm" else 0.0
        L = np.linalg.cholesky(np.array([[1.0, 0.5 * r], [0.5 * r, 0.25]]))
        u = rng.normal(size=(G, 2)) @ L.T
        return pd.DataFrame({"g": g, "x": x, "y": 1 + 0.5 * x + u[g, 0] + u[g, 1] * x + rng.normal(size=n)})
    if kind == "disp_gaussian":  # x ~ U(-1, 1), u_g sd 0.8, log Var(e) = -0.5 + 1.2 x
        x = rng.uniform(-1, 1, n)
        y = 2 + x + rng.normal(0, 0.8, G)[g] + rng.normal(0, np.exp(0.5 * (-0.5 + 1.2 * x)))
        return pd.DataFrame({"g": g, "x": x, "y": y})
    if kind == "disp_varident":  # arms cycle within group; residual sd (0.5, 1, 2) by arm
        a = np.arange(n) % 3
        x = rng.normal(size=n)
        arms = np.array(["ctrl", "high", "low"])  # R's sorted level order
        y = 1 + 0.5 * x + np.array([0, 0.3, -0.2])[a] + rng.normal(0, 0.7, G)[g]
        y = y + rng.normal(0, np.array([0.5, 2.0, 1.0])[a])
        return pd.DataFrame({"g": g, "arm": pd.Categorical(arms[a], categories=list(arms)), "x": x, "y": y})
    x = rng.normal(size=n)
    if kind == "disp_nb2":  # log mu = 1 + 0.5 x + u_g (sd 0.5), log size = 0.5 + 0.7 x
        mu, size = np.exp(1 + 0.5 * x + rng.normal(0, 0.5, G)[g]), np.exp(0.5 + 0.7 * x)
        return pd.DataFrame({"g": g, "x": x, "y": rng.negative_binomial(size, size / (size + mu)).astype(float)})
    if kind == "disp_beta":  # logit mu = -0.2 + 0.6 x + u_g (sd 0.4), log precision = 2 + 0.8 x
        mu = 1 / (1 + np.exp(-(-0.2 + 0.6 * x + rng.normal(0, 0.4, G)[g])))
        phi = np.exp(2 + 0.8 * x)
        y = np.clip(np.round(rng.beta(mu * phi, (1 - mu) * phi), 6), 1e-6, 1 - 1e-6)
        return pd.DataFrame({"g": g, "x": x, "y": y})
    raise ValueError(kind)


CASES = [
    Case("ri_lmm_1e4", "ri", 10_000, 200, f"y ~ {FIXED} + (1|g)"),
    Case("ri_lmm_1e5", "ri", 100_000, 2_000, f"y ~ {FIXED} + (1|g)"),
    Case("ri_lmm_1e6", "ri", 1_000_000, 20_000, f"y ~ {FIXED} + (1|g)"),
    Case(
        "ri_lmm_1e7",
        "ri",
        10_000_000,
        200_000,
        f"y ~ {FIXED} + (1|g)",
        tools=("midas",),
        notes="peers skipped: minutes per fit",
    ),
    Case("slope_lmm_1e5", "slope", 100_000, 2_000, f"y ~ {FIXED} + (x1|g)"),
    Case(
        "insteval_crossed",
        "crossed",
        73_421,
        2972,
        "y ~ 1 + service + (1|s) + (1|d) + (1|dept)",
        tools=("midas", "lme4"),
        notes="simulated with InstEval's shape: 2972 x 1128 x 14 crossed levels",
    ),
    Case("binary_glmm_1e4", "binary", 10_000, 200, f"y ~ {FIXED} + (1|g)", family="binomial", tools=("midas", "lme4")),
    Case(
        "binary_glmm_1e5", "binary", 100_000, 2_000, f"y ~ {FIXED} + (1|g)", family="binomial", tools=("midas", "lme4")
    ),
    Case("poisson_glmm_1e4", "poisson", 10_000, 200, f"y ~ {FIXED} + (1|g)", family="poisson", tools=("midas", "lme4")),
    Case(
        "poisson_glmm_1e5", "poisson", 100_000, 2_000, f"y ~ {FIXED} + (1|g)", family="poisson", tools=("midas", "lme4")
    ),
    *[
        Case(
            name,
            "slope_binary",
            n,
            groups,
            f"y ~ {FIXED} + (x1|g)",
            family="binomial",
            tools=("midas", "lme4"),
            notes="a binary response with a correlated random intercept and x1 slope per group (longitudinal "
            "binary outcomes' `(time|subject)`)",
        )
        for name, n, groups in (("slope_binary_2e3", 2_000, 100), ("slope_binary_2e4", 20_000, 500))
    ],
    Case(
        "binary_agq10_1e4",
        "binary",
        10_000,
        200,
        f"y ~ {FIXED} + (1|g)",
        family="binomial",
        nAGQ=10,
        tools=("midas", "lme4"),
    ),
]
PEERS = ("midas", "lme4", "glmmTMB")
SHAPE_CASES = [
    *[
        Case(
            name,
            "crossed_slopes",
            n,
            subjects,
            "y ~ x1 + (1 + x1|subj) + (1 + x1|item)",
            tools=PEERS,
            group="shapes",
            factors=("subj", "item"),
            levels=f"{subjects} subj x {n // subjects} item",
            notes="the maximal model of a psycholinguistic experiment: every subject sees every item once, x1 a "
            "two-level condition (±0.5), correlated random intercepts and condition slopes for subjects and for "
            "items" + (" (100 random effects, six θ: the all-dense plan)" if n == 600 else ""),
        )
        for name, n, subjects in (("crossed_slopes_lmm", 20_000, 200), ("crossed_slopes_lmm_600", 600, 30))
    ],
    Case(
        "crossed_slopes_binary",
        "crossed_slopes",
        20_000,
        200,
        "y ~ x1 + (1 + x1|subj) + (1 + x1|item)",
        family="binomial",
        tools=PEERS,
        group="shapes",
        factors=("subj", "item"),
        levels="200 subj x 100 item",
        notes="crossed_slopes_lmm's design with a binary answer (logit link): the maximal GLMM of a "
        "psycholinguistic experiment",
    ),
    Case(
        "obslevel_poisson",
        "obslevel",
        403,
        403,
        "y ~ x1 + x2 + (1|obs) + (1|a) + (1|b)",
        family="poisson",
        tools=PEERS,
        group="shapes",
        factors=("obs", "a", "b"),
        levels="403 obs + 118 a x 63 b",
        extra={"a": 118, "b": 63},
        notes="observation-level random effect (403 levels) for overdispersion; a (118 levels) is crossed "
        "with b (63 levels): each row draws its a and b independently, every level used",
    ),
    Case(
        "nested_slopes_lmm",
        "vcomp2",
        1_600,
        100,
        "y ~ x1 + x2 + (0 + z1 + z2 | g) + (1 | g:h) + (1 | g:h:k)",
        tools=("midas", "statsmodels", "lme4", "glmmTMB"),
        group="shapes",
        factors=("g", "h", "k"),
        levels="100 g > 400 g:h > 800 g:h:k",
        statsmodels={
            "fixed": "y ~ x1 + x2",
            "groups": "g",
            "re_formula": "0 + z1 + z2",
            "vc": {"h": "0 + C(h)", "k": "0 + C(h):C(k)"},
        },
        notes="statsmodels' test_vcomp_2 data (seed 6241, same draws): two correlated random slopes (z1, z2) "
        "on 100 groups of 16 rows, random intercepts on the 400 blocks of 4 rows (h, 0..3 within g) and the "
        "800 pairs (k, 0..1 within g:h); the model of that test's R comment, written with g:h and g:h:k "
        "since h and k restart within their parents",
    ),
    Case(
        "nested_lmm_1e5",
        "nested",
        100_000,
        5_000,
        "y ~ x1 + x2 + (1|region/district/school)",
        tools=("midas", "statsmodels", "lme4", "glmmTMB"),
        group="shapes",
        factors=("region", "district", "school"),
        levels="20 regions > 500 districts > 5000 schools",
        extra={"regions": 20, "districts": 25, "schools": 10},
        statsmodels={
            "fixed": "y ~ x1 + x2",
            "groups": "region",
            "re_formula": "1",  # with vc_formula, MixedLM has no group intercept unless asked
            "vc": {"district": "0 + C(district)", "school": "0 + C(district):C(school)"},
        },
        notes="25 districts per region, 10 schools per district, about 20 rows per school; labels restart "
        "within their parent",
    ),
    Case(
        "nested_slope_lmm_1e5",
        "nested_slope",
        100_000,
        5_000,
        "y ~ x1 + x2 + (1|region) + (1 + x1|region:district) + (1|region:district:school)",
        tools=PEERS,
        group="shapes",
        factors=("region", "district", "school"),
        levels="20 regions > 500 districts > 5000 schools",
        extra={"regions": 20, "districts": 25, "schools": 10},
        notes="as nested_lmm_1e5 with a correlated x1 slope on districts; statsmodels skipped: its variance "
        "components cannot be correlated below the top grouping level",
    ),
    *[
        Case(
            name,
            "verbagg",
            ids * items,
            ids,
            "y ~ anger + male + scold + shout + self + (1|id) + (1|item)",
            family=fam,
            tools=PEERS,
            group="shapes",
            factors=("id", "item"),
            levels=f"{ids} id x {items} item",
            extra={"ids": ids, "items": items},
            notes=(
                "VerbAgg's shape: every one of 316 people answers each of 24 items (fully crossed); person "
                "covariates anger, male; item covariates scold, shout (vs curse) and self (vs other)"
                if name == "crossed_binary_verbagg"
                else f"as crossed_binary_verbagg with {ids} people and {items} items"
                + ("" if fam else ", a Gaussian response on its linear predictor")
                + " (the staged factor's dense last stage: linalg.stages)"
            ),
        )
        for name, ids, items, fam in (
            ("crossed_binary_verbagg", 316, 24, "binomial"),
            ("crossed_lmm_verbagg", 316, 24, None),
            ("crossed_binary_500x20", 500, 20, "binomial"),
            ("crossed_lmm_500x20", 500, 20, None),
            ("crossed_binary_200x100", 200, 100, "binomial"),  # 1,010,000 products: beyond STAGE_PAIRS
            ("crossed_binary_400x250", 400, 250, "binomial"),  # a tail of 250: beyond STAGE_TAIL
            ("crossed_lmm_400x250", 400, 250, None),
        )
    ],
    *[
        Case(
            name,
            "crossed_binary",
            n,
            na,
            "y ~ x1 + x2 + (1|a) + (1|b)",
            family=fam,
            tools=PEERS,
            group="shapes",
            factors=("a", "b"),
            levels=f"{na} a x {nb} b",
            extra={"a": na, "b": nb},
            notes=("crossed Bernoulli" if fam else "a crossed LMM")
            + ", each row's a and b drawn independently (sparse, unbalanced cells)"
            + (": the all-dense plan (sparsity.small_model, lmm.SMALL_Q_CROSSED)" if na + nb <= 250 else ""),
        )
        for name, n, na, nb, fam in (
            ("crossed_binary_2e3", 2_000, 60, 40, "binomial"),
            ("crossed_lmm_2e3", 2_000, 60, 40, None),  # crossed_binary_2e3's rows, a Gaussian response
            ("crossed_lmm_1e4", 10_000, 150, 100, None),  # 250: an LMM's dense plan (lmm.SMALL_Q_CROSSED)
            ("crossed_binary_6e4", 60_000, 1_000, 500, "binomial"),
            ("crossed_binary_2e5", 200_000, 3_000, 1_500, "binomial"),
            ("crossed_binary_1e6", 1_000_000, 10_000, 5_000, "binomial"),
        )
    ],
    Case(
        "nested_lmm_2e3",
        "nested",
        2_000,
        70,
        "y ~ x1 + x2 + (1|region/district)",
        tools=PEERS,
        group="shapes",
        factors=("region", "district"),
        levels="10 regions > 60 districts",
        extra={"regions": 10, "districts": 6, "schools": 3},
        notes="a small two-level nested LMM (70 random effects, the all-dense plan); schools unused",
    ),
    Case(
        "nested_slopes_lmm_small",
        "nested_slope",
        400,
        25,
        "y ~ x1 + x2 + (x1|region/district)",
        tools=PEERS,
        group="shapes",
        factors=("region", "district"),
        levels="5 regions > 20 districts",
        extra={"regions": 5, "districts": 4, "schools": 2},
        notes="small nested random slopes: six θ, 50 random effects (the all-dense plan up to "
        "lmm.DENSE_MANY_THETA_Q); schools unused",
    ),
    *[
        Case(
            name,
            "window",
            n,
            ns,
            "y ~ x1 + (1|subject) + (1|item)",
            family=fam,
            tools=PEERS,
            group="shapes",
            factors=("subject", "item"),
            levels=f"{ns} subject x {ni} item",
            extra={"subjects": ns, "items": ni, "per": per},
            notes=f"each subject answers {per} consecutive items of a sequence (a linking design); item "
            "labels are shuffled, so the coupling is a band only in an order the labels do not show",
        )
        for name, n, ns, ni, per, fam in (
            ("window_lmm_2e5", 200_000, 10_000, 4_000, 20, None),
            ("window_binary_1e5", 100_000, 5_000, 2_000, 20, "binomial"),
        )
    ],
    Case(
        "profile_sleepstudy",
        "sleepstudy",
        180,
        18,
        "Reaction ~ Days + (Days|Subject)",
        tools=PEERS,
        group="shapes",
        task="profile",
        factors=("Subject",),
        levels="18 Subject",
        notes='fit + profile-likelihood intervals of every parameter: lme4 confint(m, method = "profile"), '
        'midas res.conf_int(method="profile"); glmmTMB fits ML (it cannot profile REML fits) and its '
        "intervals are mapped from its log-SD / correlation parameters onto SDs and correlations",
    ),
]
#: glmmTMB's families (issue 15): one grouping factor, the design of the random-intercept cases;
#: the zero-inflated ones with ziformula ~ x1 (pi = expit(-1 + 0.8 x1))
_ZI_NOTE = "zero-inflated {}, ziformula ~ x1 (pi = expit(-1 + 0.8 x1))"
FAMILY_CASES = [
    Case(
        f"{kind}_glmm_{tag}",
        kind,
        n,
        g,
        f"y ~ {FIXED} + (1|g)",
        family=fam,
        tools=("midas", "glmmTMB"),
        group="families",
        notes=note,
        ziformula=zi,
    )
    for kind, fam, note, zi in [
        ("nb2", "nbinom2", "negative binomial, variance mu + mu^2/theta, theta = 2", ""),
        ("nb1", "nbinom1", "negative binomial, variance mu (1 + phi), phi = 1.5", ""),
        ("beta", "beta", "beta, logit link, precision phi = 10", ""),
        ("zip", "poisson", _ZI_NOTE.format("poisson"), "~ x1"),
        ("zinb2", "nbinom2", _ZI_NOTE.format("nbinom2"), "~ x1"),
        ("zinb1", "nbinom1", _ZI_NOTE.format("nbinom1"), "~ x1"),
    ]
    for n, g, tag in [(10_000, 200, "1e4"), (100_000, 2_000, "1e5")]
]
FAMILY_CASES += [
    Case(
        f"salamanders_{kind}",
        "salamanders",
        644,
        23,
        "count ~ spp + mined + (1|site)",
        family=fam,
        tools=("midas", "glmmTMB"),
        group="families",
        notes=f"glmmTMB's Salamanders, {fam}" + (", ziformula ~ spp + mined" if zi else ""),
        ziformula=zi,
        factors=("site", "spp", "mined"),
        levels="23 sites",
    )
    for kind, fam, zi in [
        ("nb2", "nbinom2", ""),
        ("nb1", "nbinom1", ""),
        ("zip", "poisson", "~ spp + mined"),
        ("zinb2", "nbinom2", "~ spp + mined"),
        ("zinb1", "nbinom1", "~ spp + mined"),
    ]
]
FAMILIES = [c.name for c in FAMILY_CASES]

#: glmmTMB's covariance structures and dispersion models (issue 25), 1e3 and 1e5 rows each; see
#: _make_covstruct for how each is simulated. nlme's calls are R code (``nlme``), fitted by ML.
_COV = ("midas", "glmmTMB")
_SIZES = [("1e3", 1), ("1e5", 100)]
COVSTRUCT_CASES = [
    *[
        Case(
            f"{name}_{tag}",
            kind,
            per_subject * G * k,
            G * k,
            formula,
            family=fam,
            tools=_COV,
            group="covstruct",
            method="ML",
            factors=("g", "tf"),
            levels=f"{G * k:,} g x {per_subject} times",
            extra={"times": per_subject},
            notes=note,
        )
        for name, kind, formula, fam, per_subject, G, note in [
            (
                "ar1_lmm",
                "ar1_lmm",
                "y ~ x + ar1(0 + tf | g)",
                None,
                10,
                100,
                "subjects x 10 equally spaced times; y = 1 + 0.5 x + u[g, t] + e, u an AR(1) path per subject "
                "(sd 1, rho 0.6), e sd 0.5",
            ),
            (
                "toep_lmm",
                "toep_lmm",
                "y ~ x + toep(0 + tf | g)",
                None,
                5,
                200,
                "subjects x 5 times; u[g, .] Toeplitz with sds (0.8, 1, 1.2, 1, 0.9) and lag correlations "
                "(0.6, 0.4, 0.2, 0.1), e sd 0.5",
            ),
            (
                "ar1_poisson",
                "ar1_poisson",
                "count ~ x + ar1(0 + tf | g)",
                "poisson",
                10,
                100,
                "Poisson, subjects x 10 times; log mu = 0.5 + 0.3 x + u[g, t], u AR(1) (sd 0.5, rho 0.6)",
            ),
        ]
        for tag, k in _SIZES
    ],
    *[
        Case(
            f"corar1_nlme_{tag}",
            "corar1",
            10 * 100 * k,
            100 * k,
            "y ~ x + (1 | g) + ar1(0 + tf | g)",
            tools=("midas", "glmmTMB", "nlme"),
            group="covstruct",
            method="ML",
            factors=("g", "tf"),
            levels=f"{100 * k:,} g x 10 times",
            extra={"times": 10},
            dispformula="~ 0",
            nlme={"fixed": "y ~ x", "random": "~ 1 | g", "correlation": "corAR1(form = ~ 1 | g)"},
            notes="random intercept (sd 0.8) + AR(1) errors (sd 1, phi 0.5) over 10 times, no other residual: "
            "nlme's corAR1 model; midas and glmmTMB write the errors as an ar1 term and drop the residual with "
            "dispformula ~ 0 (glmmTMB fixes its residual variance at 1.5e-8, not 0)",
        )
        for tag, k in _SIZES
    ],
    *[
        Case(
            f"cs_lmm_{tag}",
            "cs_lmm",
            G * k * items,
            G * k,
            "y ~ cond + x + cs(0 + cond | subj) + (1 | item)",
            tools=_COV,
            group="covstruct",
            method="ML",
            factors=("subj", "item", "cond"),
            levels=f"{G * k} subj x {items} item",
            extra={"items": items},
            notes="crossed: every subject sees every item once, cond (A, B, C) rotating over subject + item; "
            "subject effects per condition cs with sds (0.8, 1, 1.2) and rho 0.5, item intercepts sd 0.6, e sd 1",
        )
        for tag, k, G, items in [("1e3", 1, 25, 40), ("1e5", 20, 25, 200)]
    ],
    *[
        Case(
            f"{struct}_lmm_{tag}",
            f"{struct}_lmm",
            20 * 50 * k,
            50 * k,
            f"y ~ x + {struct}(1 + x | g)",
            tools=("midas", "lme4", "glmmTMB", "nlme"),
            group="covstruct",
            method="ML",
            factors=("g",),
            levels=f"{50 * k:,} g",
            lme4_formula=f"y ~ x + (1 + x {bar} g)",
            nlme={"fixed": "y ~ x", "random": random},
            notes=f"{20} rows per group; intercept sd 1, x slope sd 0.5, {cor}; e sd 1; lme4 `(1 + x {bar} g)`, "
            f"nlme `random = {random}`",
        )
        for struct, bar, random, cor in [
            ("diag", "||", "list(g = pdDiag(~ x))", "independent"),
            ("us", "|", "~ x | g", "correlation 0.4"),
        ]
        for tag, k in _SIZES
    ],
    *[
        Case(
            f"disp_{name}_{tag}",
            f"disp_{name}",
            20 * 50 * k,
            50 * k,
            formula,
            family=fam,
            tools=("midas", "glmmTMB", "nlme") if name == "varident" else _COV,
            group="covstruct",
            method="ML",
            factors=("g", "arm"),
            levels=f"{50 * k:,} g",
            dispformula=disp,
            nlme=nl,
            notes=note,
        )
        for name, fam, formula, disp, nl, note in [
            (
                "gaussian",
                None,
                "y ~ x + (1 | g)",
                "~ x",
                {},
                "x ~ U(-1, 1); y = 2 + x + u_g + e, u_g sd 0.8, log Var(e) = -0.5 + 1.2 x",
            ),
            (
                "varident",
                None,
                "y ~ x + arm + (1 | g)",
                "~ arm",
                {
                    "fixed": "y ~ x + arm",
                    "random": "~ 1 | g",
                    "weights": "varIdent(form = ~ 1 | arm)",
                },
                "arm (ctrl, high, low) cycling within group; y = 1 + 0.5 x + (0, 0.3, -0.2)[arm] + u_g (sd 0.7) + e, "
                "sd(e) = (0.5, 2, 1)[arm]; nlme's varIdent(form = ~ 1 | arm) is the same model",
            ),
            (
                "nb2",
                "nbinom2",
                "y ~ x + (1 | g)",
                "~ x",
                {},
                "nbinom2; log mu = 1 + 0.5 x + u_g (sd 0.5), log size = 0.5 + 0.7 x",
            ),
            (
                "beta",
                "beta",
                "y ~ x + (1 | g)",
                "~ x",
                {},
                "beta; logit mu = -0.2 + 0.6 x + u_g (sd 0.4), log precision = 2 + 0.8 x; y at 6 decimals",
            ),
        ]
        for tag, k in _SIZES
    ],
]
COVSTRUCT = [c.name for c in COVSTRUCT_CASES]


def _make_ordinal(case: Case) -> pd.DataFrame:
    """The rows of the issue-26 ("ordinal") cases: ordinal::clmm's wine, or five ordered categories
    cut from a logistic latent scale, η = 0.5 x1 − 0.3 x2 + 0.2 x3 + the random effects."""
    n, G, kind = case.n, case.groups, case.kind
    if kind == "wine":  # clmm's own example (72 ratings by 9 judges), as tests/reference/ordinal keeps it
        from pathlib import Path

        return pd.read_csv(Path(__file__).parents[1] / "tests" / "reference" / "ordinal" / "wine.csv")
    rng = np.random.default_rng(n + G + 2600 + len(kind))
    X = rng.normal(size=(n, 3))
    eta = X @ np.array([0.5, -0.3, 0.2])
    df = pd.DataFrame(X, columns=["x1", "x2", "x3"])
    if kind == "crossed":  # subjects x items, rows drawn at random
        items = case.extra["items"]
        df["g"], df["item"] = _spread(rng, n, G), rng.integers(0, items, n)
        eta = eta + rng.normal(0, 0.8, G)[df["g"]] + rng.normal(0, 0.5, items)[df["item"]]
    else:
        df["g"] = _spread(rng, n, G)
        eta = eta + rng.normal(0, 0.9, G)[df["g"]]
        if kind == "slope":
            eta = eta + rng.normal(0, 0.4, G)[df["g"]] * df["x1"].to_numpy()
    df["y"] = 1 + np.searchsorted(np.array([-1.5, -0.4, 0.5, 1.6]), eta + rng.logistic(size=n))
    return df


_ORD = ("midas", "clmm")
ORDINAL_CASES = [
    Case(
        "ordinal_wine",
        "wine",
        72,
        9,
        "rating ~ temp + contact + (1|judge)",
        family="ordinal",
        tools=_ORD,
        group="ordinal",
        factors=("judge",),
        notes="clmm's wine: 5 ratings, 9 judges (logit, Laplace)",
    ),
    Case(
        "ordinal_wine_agq10",
        "wine",
        72,
        9,
        "rating ~ temp + contact + (1|judge)",
        family="ordinal",
        nAGQ=10,
        tools=_ORD,
        group="ordinal",
        factors=("judge",),
        notes="wine by adaptive quadrature, 10 nodes",
    ),
    *[
        Case(
            f"ordinal_{tag}",
            "ri",
            n,
            G,
            "y ~ x1 + x2 + x3 + (1|g)",
            family="ordinal",
            tools=_ORD,
            group="ordinal",
            factors=("g",),
            notes="5 categories, random intercepts (sd 0.9)",
        )
        for tag, n, G in (("1e4", 10_000, 200), ("1e5", 100_000, 2000))
    ],
    Case(
        "ordinal_agq10_1e4",
        "ri",
        10_000,
        200,
        "y ~ x1 + x2 + x3 + (1|g)",
        family="ordinal",
        nAGQ=10,
        tools=_ORD,
        group="ordinal",
        factors=("g",),
        notes="ordinal_1e4 by adaptive quadrature, 10 nodes",
    ),
    Case(
        "ordinal_slope_1e4",
        "slope",
        10_000,
        200,
        "y ~ x1 + x2 + x3 + (1 + x1|g)",
        family="ordinal",
        tools=_ORD,
        group="ordinal",
        factors=("g",),
        notes="a correlated random slope of x1 (sd 0.4)",
    ),
    Case(
        "ordinal_crossed_1e4",
        "crossed",
        10_000,
        200,
        "y ~ x1 + x2 + x3 + (1|g) + (1|item)",
        family="ordinal",
        tools=_ORD,
        group="ordinal",
        factors=("g", "item"),
        levels="200 g x 50 items",
        extra={"items": 50},
        notes="crossed subjects (sd 0.8) and items (sd 0.5), rows drawn at random",
    ),
]
ORDINAL = [c.name for c in ORDINAL_CASES]

CASES = CASES + SHAPE_CASES + FAMILY_CASES + COVSTRUCT_CASES + ORDINAL_CASES
SHAPES = [c.name for c in SHAPE_CASES]
BY_NAME = {c.name: c for c in CASES}
QUICK = ["ri_lmm_1e4", "ri_lmm_1e5", "slope_lmm_1e5", "binary_glmm_1e4", "poisson_glmm_1e4", "binary_agq10_1e4"]
