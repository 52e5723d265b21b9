"""Type 3 hypotheses of a model whose terms contain one another (interactions), as lmerTest
builds them (its ``extract_contrasts_type3``), for treatment-coded factors.

With rdX the all-levels design (each term coded with every level of its factors, the
intercept a column of ones), L = (X⁺ rdX)' expresses each all-levels column in X's
coefficients. Terms are visited from the highest order down; a term contained in others (its
variables a strict subset of theirs, with the same numeric variables: lmerTest's rule) has its
columns of L replaced by their residuals on the containing terms' columns. The rows of L for
X's own columns, restricted to a term's columns and transposed, are that term's hypotheses.
L is computed from the rows once, when the design is built (:func:`type3_basis`); the tests use
only it and the fit (:func:`type3_contrasts`).
"""

from __future__ import annotations

import re

import formulaic
import numpy as np

from ..errors import FitError

__all__ = ["type3_basis", "type3_contrasts", "zapsmall", "MAX_ALL_LEVELS_CELLS"]

#: the largest all-levels design (rows × columns) built for type 3 hypotheses (400 MB of floats);
#: beyond it type 3 tests of interaction models refuse and type 1 remains
MAX_ALL_LEVELS_CELLS = 50_000_000


def zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's ``zapsmall``: round to ``digits`` significant digits of the largest magnitude."""
    mx = float(np.max(np.abs(x))) if x.size else 0.0
    if mx <= 0:
        return np.round(x, digits)
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))))


def _term_vars(spec) -> tuple[list[str], dict, dict]:
    names = [str(t) for t in spec.terms if str(t) != "1"]
    variables = {str(t): [str(f) for f in t.factors] for t in spec.terms if str(t) != "1"}
    kinds = {k: str(v[0]).split(".")[-1].lower() for k, v in spec.encoder_state.items()}
    numerics = {t: {v for v in vs if kinds.get(v) == "numerical"} for t, vs in variables.items()}
    return names, variables, numerics


def containment(spec) -> dict[str, list[str]]:
    """Term → the terms that contain it (lmerTest's rule)."""
    names, variables, numerics = _term_vars(spec)
    return {
        t: [o for o in names if set(variables[t]) < set(variables[o]) and numerics[t] == numerics[o]] for t in names
    }


def type3_basis(design, df) -> dict | None:
    """What type 3 tests need from the rows, when some term contains another: L = (X⁺ rdX)'
    with the all-levels columns' names; None when no term contains another; a dict with
    ``unsupported`` (the reason) when it cannot be built here."""
    spec = design.fixed_spec
    contains = containment(spec)
    if not any(contains.values()):
        return None
    for name, (kind, state) in spec.encoder_state.items():
        if str(kind).endswith("CATEGORICAL"):
            contrasts = getattr(state.get("contrasts"), "contrasts", None)
            if type(contrasts).__name__ != "TreatmentContrasts":
                return {"unsupported": f"factor {name} is not treatment-coded (lmerTest maps other codings back)"}
    if design.dropped_columns:
        return {"unsupported": "a fixed-effect column was dropped as collinear"}
    # the all-levels design has, per term, the product of its factors' level counts as columns
    levels = {
        k: len(v[1].get("categories", [])) for k, v in spec.encoder_state.items() if str(v[0]).endswith("CATEGORICAL")
    }
    width = sum(int(np.prod([levels.get(str(f), 1) for f in t.factors])) for t in spec.terms)
    if width * len(df) > MAX_ALL_LEVELS_CELLS:
        return {
            "unsupported": f"the all-levels design would have {width} columns on {len(df)} rows "
            f"(more than {MAX_ALL_LEVELS_CELLS:.0e} cells)"
        }
    blocks, names = [], []
    if any(str(t) == "1" for t in spec.terms):
        blocks.append(np.ones((len(df), 1)))
        names.append("(Intercept)")
    try:
        for t in spec.terms:
            if str(t) == "1":
                continue
            mm = formulaic.model_matrix("0 + " + str(t), df, na_action="ignore", output="numpy")
            blocks.append(np.asarray(mm, dtype=float))
            names += [str(c) for c in mm.model_spec.column_names]
    except Exception as exc:  # formulaic's errors are many classes
        return {"unsupported": f"the all-levels design could not be built ({exc})"}
    rdX = np.hstack(blocks)
    B = np.linalg.lstsq(design.X, rdX, rcond=None)[0]
    return {"L": zapsmall(B.T), "names": names, "contains": contains}


def type3_contrasts(design, term_cols: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Term → its type 3 contrast rows (over the fitted coefficients)."""
    basis = design.type3
    if basis is None:
        raise FitError("no term contains another: type 3 contrasts are each term's own columns")
    if "unsupported" in basis:
        raise FitError(f"type 3 tests for this model are not available: {basis['unsupported']}; use type=1")
    L = basis["L"].copy()
    contains = basis["contains"]
    order = sorted(contains, key=lambda t: -t.count(":"))  # highest order first, stable
    for term in order:
        outer = [c for o in contains[term] for c in term_cols.get(o, [])]
        cols = term_cols.get(term, [])
        if outer and cols:
            A, Y = L[:, outer], L[:, cols]
            coef = np.linalg.lstsq(A, Y, rcond=None)[0]
            L[:, cols] = zapsmall(Y - A @ coef)
    index = {n: i for i, n in enumerate(basis["names"])}
    rows = []
    for name in design.fixed_names:
        key = re.sub(r"\[T\.", "[", name)
        if key not in index:
            raise FitError(f"type 3: column {name!r} has no all-levels counterpart; use type=1")
        rows.append(index[key])
    Lx = L[rows]
    out = {}
    for term, cols in term_cols.items():
        if term == "(Intercept)":
            continue
        Lt = Lx[:, cols].T
        out[term] = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
    return out
