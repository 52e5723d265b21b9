"""Dask DataFrames as data: the data pass runs partition by partition on the workers.

A linear mixed model needs its rows only through the cross-product blocks of ``[Z X y]``
(:class:`~midas_glmm.design.blocks.CrossProducts`), which add up over disjoint sets of rows. So:

1. **scan** — one pass: rows, complete rows, column kinds, and the levels of every grouping
   factor and categorical predictor (so that every partition codes them alike);
2. **data pass** — one pass: each partition builds its rows of y, X, Z with those levels and
   returns its blocks (sized by the levels, never by the rows); a tree of additions on the
   workers reduces them to one.

The fit then runs on the client from the reduced blocks, exactly as in memory. Predictions and
residuals are lazy Dask series. Works with any Dask scheduler, including a
``dask.distributed.Client``. (Install with ``pip install midas_glmm[dask]``.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import formulaic
import numpy as np
import pandas as pd

from ..checks import memory_bytes
from ..errors import DataError, FitError, MidasError
from ..families import Family
from .blocks import CrossProducts
from .columns import INTERCEPT, check_columns, coefficient_names, formula_variables, formulaic_error, used_columns
from .design import Design, parse_for
from .fixed import independent_columns, moments_from_gram, standardize
from .formula import ParsedFormula
from .response import check_finite, check_weights, is_factor_response, offset_of, response_column, response_of
from .reterms import ReTerm, lme4_term_order, with_structure

__all__ = ["is_dask_frame", "build_dask_design", "DaskSource"]

PROTOTYPE_ROWS = 2000


def is_dask_frame(obj) -> bool:
    """True for a dask.dataframe.DataFrame (without importing dask when it is not one)."""
    return type(obj).__module__.startswith("dask") and hasattr(obj, "map_partitions") and hasattr(obj, "npartitions")


def _categorical_fixed(parsed: ParsedFormula, meta: pd.DataFrame) -> list[str]:
    """Fixed-part variables coded as factors: non-numeric columns and those inside C(...)."""
    names = formula_variables(parsed.fixed)
    inside_c = {m.strip("`") for m in re.findall(r"\bC\(\s*(`[^`]+`|[^\W\d][\w.]*)", parsed.fixed)}
    return sorted(
        c
        for c in names
        if c in inside_c or not pd.api.types.is_numeric_dtype(meta[c]) or pd.api.types.is_bool_dtype(meta[c])
    )


@dataclass(frozen=True)
class RowCheck:
    """The checks the in-memory design makes on its rows, run by the scan on each partition's
    complete rows: finite values, prior weights, and the response inside the family's support
    (a factor response needs no range check: it is coded 0/1)."""

    parsed: ParsedFormula
    family: Family | None
    cols: list[str]
    weights_col: str | None

    def __call__(self, rows: pd.DataFrame) -> MidasError | None:
        """The first error these rows raise, or None."""
        try:
            check_finite(rows, self.cols)
            if self.weights_col:
                w = rows[self.weights_col].to_numpy(dtype=float)
                check_weights(w, rows.index, allow_all_zero=True, label=f"weights column '{self.weights_col}'")
            if self.family is not None and not is_factor_response(self.parsed, rows):
                y, _, trials, name = response_of(self.parsed, rows)
                self.family.check_response(y, name, trials)
        except MidasError as exc:  # returned, so that the client raises it whatever the scheduler
            return exc
        return None


def _scan_partition(part: pd.DataFrame, cols: list[str], factor_groups: list[tuple[str, ...]], check=None) -> dict:
    """Pass 1 on one partition: counts, column kinds, the levels seen and the first error of
    ``check`` on the complete rows (never the rows)."""
    complete = ~part[cols].isna().any(axis=1)
    sub = part.loc[complete, cols]
    return {
        "rows": len(part),
        "complete": int(complete.sum()),
        "kinds": {c: ("number" if pd.api.types.is_numeric_dtype(part[c]) else "other") for c in part.columns},
        "levels": {g: sub[list(g)].drop_duplicates() for g in factor_groups},
        "error": None if check is None else check(sub),
        "weighted": int((sub[check.weights_col] > 0).sum()) if check is not None and check.weights_col else 0,
    }


def _known_categories(column) -> bool:
    """Whether a categorical column of a Dask frame's meta lists its categories (pandas' own
    accessor has no ``known``: dask marks unknown ones with a placeholder category)."""
    from dask.dataframe.utils import has_known_categories

    return bool(has_known_categories(column))


def _global_levels(frames: list[pd.DataFrame], group: tuple[str, ...], meta: pd.DataFrame) -> pd.DataFrame:
    """Observed level combinations of ``group`` across partitions, in the in-memory order."""
    allv = pd.concat(frames, ignore_index=True).drop_duplicates()
    order = []
    for g in group:
        if isinstance(meta[g].dtype, pd.CategoricalDtype) and _known_categories(meta[g]):
            cats = [c for c in meta[g].cat.categories if c in set(allv[g])]
            order.append(pd.Categorical(allv[g], categories=cats, ordered=True).codes)
        else:
            order.append(pd.Index(sorted(allv[g].unique())).get_indexer(allv[g]))
    idx = np.lexsort(order[::-1])
    return allv.iloc[idx].reset_index(drop=True)


@dataclass
class DaskSource:
    """What a Dask-backed design needs to reach its rows again: the frame, the levels and specs
    found by the scan, and the reduced cross-products (computed once, then cached)."""

    ddf: object
    parsed: ParsedFormula
    cols: list[str]
    factors: dict[str, list]  # fixed-part categorical column -> global categories
    group_levels: dict[tuple[str, ...], pd.DataFrame]
    fixed_spec: object
    keep: np.ndarray
    terms: list[ReTerm]
    weights_col: str | None
    offset_col: str | None
    family: Family | None = None
    response_levels: list | None = None  # a factor response's levels, over all partitions
    shift: np.ndarray = None
    scale: np.ndarray = None
    beta_removed: np.ndarray = None
    S: np.ndarray = None
    _cache: dict = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- one partition's rows
    def _prepare(self, part: pd.DataFrame) -> pd.DataFrame:
        extra = [c for c in (self.weights_col, self.offset_col) if c]
        need = list(dict.fromkeys(self.cols + extra))
        part = part[need]
        part = part.loc[~part.isna().any(axis=1)]
        for c, cats in self.factors.items():
            part = part.assign(**{c: pd.Categorical(part[c], categories=cats)})
        return part

    def _codes(self, part: pd.DataFrame, term: ReTerm) -> np.ndarray:
        lev = self.group_levels[term.group]
        if len(term.group) == 1:
            codes = pd.Index(lev[term.group[0]]).get_indexer(part[term.group[0]])
        else:
            keys = pd.MultiIndex.from_frame(lev[list(term.group)])
            codes = keys.get_indexer(pd.MultiIndex.from_frame(part[list(term.group)].astype(lev.dtypes.to_dict())))
        if (codes < 0).any():
            raise DataError(
                f"a partition has levels of '{term.group_name}' the scan did not see; "
                "was the data changed between passes?"
            )
        return codes.astype(np.int64)

    def rows(self, part: pd.DataFrame, with_terms: bool = True):
        """This partition's complete rows: (y, X, weights, offset, terms with rows)."""
        part = self._prepare(part)
        check_finite(part, self.cols)
        wcol = part[self.weights_col].to_numpy(dtype=float) if self.weights_col else None
        y, w, trials, _ = response_of(self.parsed, part, wcol, self.family, self.response_levels)
        off = offset_of(self.parsed, part, part[self.offset_col].to_numpy(dtype=float) if self.offset_col else None)
        X = np.asarray(self.fixed_spec.get_model_matrix(part), dtype=float)[:, self.keep]
        terms = []
        if with_terms:
            for t in self.terms:
                Z = (
                    np.broadcast_to(1.0, (len(part), 1))
                    if t.spec is None
                    else np.asarray(t.spec.get_model_matrix(part), float)
                )
                terms.append(
                    ReTerm(
                        t.group_name, t.group, t.expr, t.columns, t.levels, self._codes(part, t), Z, t.spec, cov=t.cov
                    )
                )
        return y, X, w, off, terms, trials

    def partition_blocks(self, part: pd.DataFrame, weighted: bool) -> tuple[CrossProducts, float]:
        """Pass 2 on one partition: its cross-product blocks and Σ log w — sized by the levels."""
        y, X, w, off, terms, _ = self.rows(part)
        cp = CrossProducts.from_rows(
            terms, X, y - off, w if weighted else None, self.shift, self.scale, beta_removed=self.beta_removed
        )
        return cp, float(np.sum(np.log(w[w > 0]))) if weighted else 0.0

    # ---------------------------------------------------------------- reductions
    def cross_products(self, weighted: bool) -> tuple[CrossProducts, float]:
        """The blocks of all rows: one pass, reduced by a tree of additions on the workers."""
        key = ("cp", weighted)
        if key not in self._cache:
            import dask

            parts = [dask.delayed(self.partition_blocks)(p, weighted) for p in self.ddf.to_delayed()]
            while len(parts) > 1:
                parts = [
                    dask.delayed(_add_pair)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                    for i in range(0, len(parts), 2)
                ]
            (self._cache[key],) = dask.compute(parts[0])
        return self._cache[key]

    def gram(self) -> np.ndarray:
        """X'X of the rows used (unweighted), from the unweighted data pass: its blocks hold the
        standardised X_s = X S⁻¹, so X'X = S⁻ᵀ X_s'X_s S⁻¹."""
        cp, _ = self.cross_products(False)
        p = self.S.shape[0]
        Sinv = np.linalg.inv(self.S)
        return Sinv.T @ cp.XytXy[:p, :p] @ Sinv

    # ---------------------------------------------------------------- lazy per-row results
    def map_rows(self, func, name: str = "value"):
        """A lazy Dask series of ``func(rows)`` over each partition's complete rows, coded with the
        global levels (one value per row used in the fit)."""

        def apply(part):
            prepared = self._prepare(part)
            return pd.Series(np.asarray(func(prepared), dtype=float), index=prepared.index, name=name)

        return self.ddf.map_partitions(apply, meta=pd.Series(dtype=float, name=name))

    def response(self, prepared: pd.DataFrame) -> np.ndarray:
        """The response of prepared (complete, coded) rows."""
        wcol = prepared[self.weights_col].to_numpy(dtype=float) if self.weights_col else None
        return response_of(self.parsed, prepared, wcol, self.family, self.response_levels)[0]


def _add_pair(a, b):
    return a[0] + b[0], a[1] + b[1]


def build_dask_design(formula: str, ddf, weights=None, offset=None, family: Family | None = None) -> Design:
    """The Design of ``formula`` on a Dask DataFrame: one scan pass; rows stay on the workers.

    The scan also runs the in-memory design's checks on every partition (:class:`RowCheck`),
    so bad values are reported here, as with pandas data, not as a failed fit."""
    import dask

    if not all(isinstance(c, str) for c in ddf.columns):  # a formula names every column by its text
        ddf = ddf.rename(columns={c: str(c) for c in ddf.columns})
    meta = ddf._meta
    parsed = parse_for(formula, meta.columns)
    needed = used_columns(parsed)
    check_columns(needed, meta, formula)
    for label, arg in (("weights", weights), ("offset", offset)):
        if arg is not None and not isinstance(arg, str):
            raise DataError(f"with Dask data, {label}= must be a column name, not {type(arg).__name__}")
        if arg is not None:
            check_columns({arg}, meta, f"{label}='{arg}'")
            if not pd.api.types.is_numeric_dtype(meta[arg]):
                raise DataError(
                    f"{label} column '{arg}' is not numeric (dtype {meta[arg].dtype}); {label} must be numbers"
                )
    cols = sorted(needed)
    filter_cols = cols + [c for c in (weights, offset) if c]
    factors = _categorical_fixed(parsed, meta)
    response = response_column(parsed, meta)
    factor_response = [(response,)] if response and is_factor_response(parsed, meta) else []
    groups = list(dict.fromkeys([t.group for t in parsed.random] + [(c,) for c in factors] + factor_response))
    check = RowCheck(parsed, family, cols, weights)

    scans = dask.compute(*[dask.delayed(_scan_partition)(p, filter_cols, groups, check) for p in ddf.to_delayed()])
    kinds0 = scans[0]["kinds"]
    for i, sc in enumerate(scans):
        if set(sc["kinds"]) != set(kinds0):
            raise DataError(
                f"partition {i} has columns {sorted(sc['kinds'])}, partition 0 has {sorted(kinds0)}; "
                "every partition needs the same schema"
            )
        bad = [c for c in filter_cols if sc["kinds"][c] != kinds0[c]]
        if bad:
            raise DataError(
                f"column '{bad[0]}' is {sc['kinds'][bad[0]]} in partition {i} but {kinds0[bad[0]]} in "
                "partition 0; every partition needs the same schema"
            )
    rows = sum(sc["rows"] for sc in scans)
    n = sum(sc["complete"] for sc in scans)
    if rows == 0:
        raise DataError("the data has no rows")
    if n == 0:
        raise DataError("every row has a missing value in a column the model uses; nothing to fit")
    _raise_scan_errors(scans, weights)
    levels = {g: _global_levels([sc["levels"][g] for sc in scans], g, meta) for g in groups}
    factor_cats = {c: list(levels[(c,)][c]) for c in factors}
    response_levels = _response_levels(levels, factor_response, family)

    # specs from real rows: the first partition with complete rows, coded with the global levels
    first = next(i for i, sc in enumerate(scans) if sc["complete"] > 0)
    src = DaskSource(ddf, parsed, cols, factor_cats, levels, None, None, [], weights, offset, family, response_levels)
    head = ddf.get_partition(first).head(PROTOTYPE_ROWS, npartitions=1, compute=True)
    proto = src._prepare(head)
    try:
        mm = formulaic.model_matrix(parsed.fixed, proto, na_action="raise", output="numpy")
    except Exception as exc:
        raise formulaic_error(f"cannot build the fixed effects '{parsed.fixed}'", parsed.fixed, exc) from None
    names = coefficient_names(mm.model_spec.column_names)
    src.fixed_spec = mm.model_spec
    src.keep = np.arange(len(names))
    terms = []
    for spec in parsed.random:
        lev = levels[spec.group]
        labels = lev.astype(str).agg(":".join, axis=1) if len(spec.group) > 1 else lev[spec.group[0]].astype(str)
        index = pd.Index(list(labels), name=spec.group_name)
        if spec.expr.strip() == "1":
            cols_re, tspec = [INTERCEPT], None
        else:
            mz = formulaic.model_matrix(spec.expr, proto, na_action="raise")
            cols_re, tspec = coefficient_names(mz.columns), mz.model_spec
        terms.append(
            ReTerm(
                spec.group_name,
                spec.group,
                spec.expr,
                cols_re,
                index,
                np.zeros(0, np.int64),
                np.zeros((0, len(cols_re))),
                tspec,
            )
        )
        with_structure(terms[-1], spec.structure, str(spec))
    terms = [terms[i] for i in lme4_term_order([t.nlevels for t in terms])]
    dense = sum(t.q**2 for t in terms[1:]) * 8 + terms[0].q * (len(names) + 1 + terms[0].p) * 8
    # the iterative solver (fit(solver="auto")) forms no dense block: Gaussian, canonical binomial and Poisson
    iterative = family is None or family.is_lmm or getattr(family, "kernel_link", None) is not None
    if dense > 0.5 * memory_bytes() and not iterative:
        raise DataError(
            f"the random-effects blocks need about {dense / 2**30:.1f} GiB (grouping factors "
            f"{', '.join(f'{t.group_name}: {t.nlevels} levels' for t in terms)}); more than half of this "
            "machine's memory. Put the factor with most levels first or use fewer crossed levels"
        )
    src.terms = terms
    proto_X = np.asarray(mm, dtype=float)
    src.shift, src.scale, src.S = standardize(proto_X, names)
    src.scale = np.where(src.scale > 0, src.scale, 1.0)
    # the blocks hold y minus its mean on the first rows (as in memory y − X b_OLS): numbers of
    # the size of y's spread, not of y, so nothing is lost when the factorisation subtracts them
    src.beta_removed = np.zeros(len(names))
    if INTERCEPT in names:
        y0, _, _, off0, _, _ = src.rows(head, with_terms=False)
        if len(y0):
            src.beta_removed[names.index(INTERCEPT)] = float(np.mean(y0 - off0))

    # rank deficiency is read off the (reduced) cross-products, as in memory off X'X
    cp, _ = src.cross_products(weights is not None)
    p = len(names)
    keep, dropped = independent_columns(*moments_from_gram(cp.XytXy[:p, :p], names), names)
    kept_names = [names[i] for i in keep]
    if dropped:
        src.keep = keep
        src.shift, src.scale, src.beta_removed = src.shift[keep], src.scale[keep], src.beta_removed[keep]
        src.S = src.S[np.ix_(keep, keep)]
        src._cache.clear()
    return Design(
        formula=formula,
        parsed=parsed,
        y=np.zeros(0),
        X=np.zeros((0, len(keep))),
        fixed_names=kept_names,
        fixed_spec=src.fixed_spec,
        terms=terms,
        weights=np.zeros(0),
        offset=np.zeros(0),
        response_name=parsed.cbind[0] if parsed.cbind else parsed.response,
        nobs=n,
        n_dropped=rows - n,
        dropped_columns=dropped,
        fixed_keep=src.keep,
        has_prior_weights=weights is not None,
        source=src,
    )


def _raise_scan_errors(scans, weights: str | None) -> None:
    """Raise the first error a partition's rows gave, as the in-memory design would have."""
    for sc in scans:
        if sc["error"] is not None:
            raise sc["error"]
    if weights and not any(sc["weighted"] for sc in scans):
        raise DataError("every prior weight is zero; nothing to fit")


def _response_levels(levels: dict, factor_response: list, family: Family | None) -> list | None:
    """The levels of a factor response over all partitions (None for a numeric response), checked
    by the family once, on the client (binomial only; two levels or more)."""
    if not factor_response:
        return None
    (col,) = factor_response[0]
    found = list(levels[(col,)][col])
    if family is not None:
        family.code_levels(pd.Series(found, dtype=object), col, found)
    return found


def check_available(design: Design, what: str) -> None:
    """Raise for the things a Dask-backed design cannot do yet."""
    if getattr(design, "source", None) is not None:
        raise FitError(f"{what} is not available for Dask data yet; compute() a sample into pandas for it")
