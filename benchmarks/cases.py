"""Benchmark cases: seeded data generators and the model each tool fits.

Every case is a function of its size only, so every tool sees the same rows.
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

    @property
    def rows_levels(self) -> str:
        return f"{self.n:.0e} x {self.groups}"


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
    if case.kind in ("ri", "slope", "binary", "poisson"):
        df, eta, rng = _base(n, G, seed=n + G)
        u = rng.normal(0, 1.0 if case.kind != "poisson" else 0.5, G)[df["g"]]
        if case.kind == "slope":
            eta = eta + rng.normal(0, 0.5, G)[df["g"]] * df["x1"].to_numpy()
        eta = eta + u
        if case.kind in ("ri", "slope"):
            df["y"] = 2.0 + eta + rng.normal(size=n)
        elif case.kind == "binary":
            df["y"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-(eta - 0.5)))).astype(float)
        else:
            df["y"] = rng.poisson(np.exp(0.5 + eta)).astype(float)
        return df
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
    raise ValueError(case.kind)


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
BY_NAME = {c.name: c for c in CASES}
QUICK = ["ri_lmm_1e4", "ri_lmm_1e5", "slope_lmm_1e5", "binary_glmm_1e4", "poisson_glmm_1e4", "binary_agq10_1e4"]
