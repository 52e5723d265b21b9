"""From a DataFrame and a parsed formula to the arrays the engines use.

:func:`build_design` selects the columns the model uses, drops rows with a missing value in any
of them (counting them, as lme4 does), and builds

* the response ``y`` (for ``cbind(s, f)``: the proportion ``s/(s+f)`` with ``s+f`` trials as
  weights), offsets and prior weights (:mod:`.response`),
* the fixed-effects matrix ``X`` through formulaic (its ModelSpec replays on new data:
  :meth:`Design.replay`), rank checked (:mod:`.fixed`),
* one :class:`~midas_glmm.design.reterms.ReTerm` per random-effects term, in lme4's order.

The caller's DataFrame is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import DataError, FitError, FormulaError, did_you_mean
from ..linalg.orderings import SMALL_Q_TERMS, fill_reducing_levels
from .columns import (
    INTERCEPT,
    check_columns,
    coefficient_names,
    column_or_values,
    factorize_sorted,
    formula_variables,
    formulaic_error,
    formulaic_types,
    interaction_codes,
    model_matrix,
    predictor_names,
    quote_parsed,
    string_columns,
    text_index,
    used_columns,
)
from .dispersion import build_dispersion
from .fixed import check_weighted_rank, column_moments, independent_columns, null_space
from .formula import ParsedFormula, RandomTermSpec, parse_formula
from .grid import reference_grid, reference_grid_info
from .replay import NewRows, dispersion_on, fixed_on, population_columns, replay_on, zero_inflation_on
from .response import (
    argument_values,
    check_finite,
    check_weights,
    infinite_message,
    label_of,
    offset_of,
    response_of,
)
from .reterms import (
    ITERATIVE_TAIL,
    ReTerm,
    dense_tail,
    lme4_term_order,
    small_crossed,
    tail_bound,
    with_structure,
)
from .type3 import type3_basis
from .zeroinfl import build_zero_inflation

__all__ = ["Design", "build_design", "design_from_arrays", "parse_for", "ordered_terms"]


@dataclass
class Design:
    """Everything the engines need, built once from the data.

    Attributes
    ----------
    y : ndarray (n,)
        Response (a proportion for ``cbind`` responses).
    X : ndarray (n, p)
        Fixed-effects model matrix.
    fixed_names : list of str
        Column names of X (``"(Intercept)"`` for the intercept).
    terms : list of ReTerm
        Random-effects terms in lme4's order.
    weights : ndarray (n,)
        Prior weights (trials for ``cbind`` responses; ones if none given).
    offset : ndarray (n,)
        Offset added to the linear predictor.
    nobs, n_dropped : int
        Rows used, and rows dropped for missing values. A row with a zero prior weight is
        used: it counts in ``nobs`` (and in the n of the LMM criterion), as lme4 counts it —
        ``nobs(fit)`` is ``nrow(model.frame)`` there, zero weights included (lme4 issues
        #386 and #880 discuss that this differs from dropping the rows, which ``lm()`` does
        for σ). Drop such rows from the data to fit without them.
    """

    formula: str
    parsed: ParsedFormula
    y: np.ndarray
    X: np.ndarray
    fixed_names: list[str]
    fixed_spec: object
    terms: list[ReTerm]
    weights: np.ndarray
    offset: np.ndarray
    response_name: str
    nobs: int
    n_dropped: int
    dropped_columns: list[str] = field(default_factory=list)
    fixed_keep: np.ndarray | None = None
    has_prior_weights: bool = False
    trials: np.ndarray | None = None
    row_index: pd.Index | None = None
    source: object = None  # a DaskSource when the rows live in a Dask DataFrame
    gram: np.ndarray | None = None  # X'X (unweighted), from the rank check
    grid: dict | None = None  # fixed-part variable → ("factor"/"kept", levels) or ("numeric", mean): emmeans
    type3: dict | None = None  # type 3 contrast basis when terms contain one another (:mod:`.type3`)
    zi: object = None  # a ZeroInflation (:mod:`.zeroinfl`) for a model with a ziformula
    disp: object = None  # a DispersionModel (:mod:`.dispersion`) for a model with a dispformula
    # orthonormal basis of the null space of the full fixed-effects matrix (before aliased columns
    # were dropped), for emmeans' estimability rule; None when X has full rank
    nonestimable: np.ndarray | None = None
    # an ordinal response's levels in order (its codes 0, …, J − 1 are their positions)
    response_levels: list | None = None

    def replay(self, data: pd.DataFrame | None, random_effects: bool = True) -> NewRows:
        """The design on new rows (the fitted rows when None), as the fit encoded it: X, the
        offset, each term's columns and level positions (:func:`~midas_glmm.design.replay.replay_on`)."""
        return replay_on(self, data, random_effects)

    def zero_inflation_on(self, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(complete rows, X_zi of those rows) of the zero-inflation part on new rows."""
        return zero_inflation_on(self, data)

    def dispersion_on(self, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(complete rows, X_d of those rows) of the dispersion part on new rows."""
        return dispersion_on(self, data)

    def population_columns(self, term: ReTerm, data: pd.DataFrame | None, complete: np.ndarray) -> np.ndarray:
        """A term's columns on the complete rows of ``data``, without their levels."""
        return population_columns(term, data, complete)

    def reference_grid(self) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
        """emmeans' reference grid: (grid, its fixed-effects matrix with every column of the
        formula, aliased ones too: :meth:`estimable` reads it, :meth:`kept` subsets it; the
        variables crossed in it)."""
        if self.grid is None:
            raise FitError(
                "emmeans() needs the reference grid recorded when the model was built from a pandas DataFrame"
            )
        grid, factors = reference_grid(self.grid)
        return grid, fixed_on(self, grid, "the reference grid", all_columns=True), factors

    def kept(self, L: np.ndarray) -> np.ndarray:
        """The columns of L (over every column of the formula) that the fit kept."""
        return L if self.fixed_keep is None else L[:, self.fixed_keep]

    def estimable(self, L: np.ndarray, tol: float = 1e-8) -> np.ndarray:
        """Whether each row l of L (over every column of the formula) gives an estimable l'β:
        ‖N'l‖² < tol·‖l‖², N the null space of X (emmeans' ``is.estble``)."""
        if self.nonestimable is None:
            return np.ones(len(L), bool)
        check = L @ self.nonestimable
        size = np.einsum("ij,ij->i", L, L)
        return np.einsum("ij,ij->i", check, check) < tol * np.where(size < tol, 1.0, size)


def _group_codes(data: pd.DataFrame, group: tuple[str, ...]) -> tuple[np.ndarray, pd.Index]:
    """Level codes and labels of the interaction of the ``group`` columns (levels sorted)."""
    parts_codes, parts_levels = [], []
    for g in group:
        col = data[g]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.cat.remove_unused_categories()
            codes, levels = col.cat.codes.to_numpy(), col.cat.categories
        else:
            codes, levels = factorize_sorted(col)
        parts_codes.append(codes.astype(np.int64, copy=False))  # factorize's are int64 already
        parts_levels.append(list(map(str, levels.tolist())))  # an Index's own loop costs 2x
    if len(group) == 1:
        return parts_codes[0], text_index(parts_levels[0], name=group[0])
    codes, combos = interaction_codes(parts_codes, [len(levels) for levels in parts_levels])
    labels = np.array(parts_levels[0], dtype=object)[combos[0]]
    for levels, part in zip(parts_levels[1:], combos[1:]):  # "a:b:c", one Python + per level and part
        labels = labels + ":" + np.array(levels, dtype=object)[part]
    return codes, text_index(labels.tolist(), name=":".join(group))


def _build_term(spec: RandomTermSpec, data: pd.DataFrame) -> ReTerm:
    return with_structure(_term_columns(spec, data), spec.structure, str(spec))


def _term_columns(spec: RandomTermSpec, data: pd.DataFrame) -> ReTerm:
    codes, levels = _group_codes(data, spec.group)
    if spec.expr.strip() == "1":  # a random intercept needs no model matrix
        return ReTerm(
            spec.group_name,
            spec.group,
            spec.expr,
            [INTERCEPT],
            levels if levels.name == spec.group_name else levels.rename(spec.group_name),
            codes,
            np.broadcast_to(1.0, (len(data), 1)),  # a random intercept's column: no memory
            None,
        )
    try:
        Zcols, names, term_spec = model_matrix(spec.expr, data, output="pandas")
    except Exception as exc:
        raise formulaic_error(f"cannot build the random-effects term '{spec}'", spec.expr, exc) from None
    if Zcols.shape[1] == 0:
        raise FormulaError(f"random-effects term '{spec}' has no columns; write (1 | g) or (x | g)")
    return ReTerm(
        group_name=spec.group_name,
        group=spec.group,
        expr=spec.expr,
        columns=coefficient_names(names),
        levels=levels if levels.name == spec.group_name else levels.rename(spec.group_name),
        codes=codes,
        Zcols=Zcols,
        spec=term_spec,
    )


def _missing(col: pd.Series) -> np.ndarray:
    """Where ``col`` has no value: NaN in a numpy float column, nowhere in a numpy integer or
    boolean one (they cannot hold a missing value), its array's isna() for every other type
    (pandas' own test, without the Series around it: 0.6 µs against 29 for a column of text)."""
    kind = col.dtype.kind if isinstance(col.dtype, np.dtype) else None
    if kind == "f":
        return np.isnan(col.to_numpy())
    if kind in ("i", "u", "b"):
        return np.zeros(len(col), dtype=bool)
    return np.asarray(col.array.isna(), dtype=bool)


def _complete_rows(data: pd.DataFrame, cols: list[str], extra: dict[str, np.ndarray]) -> tuple[np.ndarray, set]:
    """(rows with a value in every used column and argument (lme4's na.omit), the columns known
    to hold no infinite value: looked for, or of a type that cannot hold one). A numpy float
    column is read once for both: where it is not finite, NaN is missing and ±inf, in a complete
    row, an error (:func:`check_finite`'s)."""
    missing, infinite, checked = {}, {}, set()
    for c in cols:
        col = data[c]
        dtype = col.dtype
        if isinstance(dtype, np.dtype) and dtype.kind == "f":
            checked.add(c)
            v = col.to_numpy()
            finite = np.isfinite(v)
            if finite.all():
                continue
            missing[c] = np.isnan(v)
            infinite[c] = ~finite & ~missing[c]
        elif isinstance(dtype, np.dtype) and dtype.kind in "iub":  # no NA, no infinity
            checked.add(c)
        else:
            if isinstance(dtype, (pd.StringDtype, pd.CategoricalDtype)):
                checked.add(c)  # text and factors: no number to be infinite (check_finite's rule)
            missing[c] = _missing(col)
    complete = np.ones(len(data), dtype=bool)
    for m in [*missing.values(), *(np.isnan(a) for a in extra.values())]:
        complete &= ~m
    if not complete.any():
        worst = max(missing, key=lambda c: missing[c].sum()) if missing else "weights"
        raise DataError(f"every row has a missing value (column '{worst}' is the emptiest); nothing to fit")
    for c, inf in infinite.items():
        inf &= complete
        if inf.any():
            raise DataError(infinite_message(c, data.index[int(np.argmax(inf))]))
    return complete, checked


def _fixed_effects(parsed: ParsedFormula, df: pd.DataFrame, drop_intercept: bool = False):
    """(X, names, ModelSpec, kept indices, dropped names, X'X, the null space of the full X when
    columns were dropped) of the fixed part, rank checked; ``drop_intercept``: without the
    intercept's column (an ordinal model's thresholds hold it; the rank is checked with it)."""
    try:  # formulaic's array (rows contiguous: the data pass reads it in row chunks)
        X, names, spec = model_matrix(parsed.fixed, df, output="numpy")
    except Exception as exc:  # formulaic's errors are many classes: report them, whatever they are
        raise formulaic_error(f"cannot build the fixed effects '{parsed.fixed}'", parsed.fixed, exc) from None
    names = coefficient_names(names)
    mean, centred = column_moments(X)
    gram = centred + len(X) * np.outer(mean, mean)
    keep, dropped = independent_columns(len(X), mean, centred, names)
    nonestimable = None
    if dropped:
        nonestimable = null_space(len(X), mean, centred)
    if drop_intercept and INTERCEPT in names:
        keep = np.array([i for i in keep if names[i] != INTERCEPT], dtype=np.int64)
    if len(keep) < len(names):
        X, names, gram = X[:, keep], [names[i] for i in keep], gram[np.ix_(keep, keep)]
    return X, names, spec, keep, dropped, gram, nonestimable


def parse_for(formula: str, columns, require_random: bool = True) -> ParsedFormula:
    """Parse ``formula`` and quote its dotted and keyword column names (:func:`quote_columns`)."""
    parsed = parse_formula(formula)
    if require_random and not parsed.random:
        raise FormulaError(
            f"formula '{formula}' has no random-effects term; add one such as (1 | group), "
            "or use a GLM (statsmodels) for a model without random effects"
        )
    if not parsed.response:
        raise FormulaError(f"formula '{formula}' has no response on the left of '~'")
    return quote_parsed(parsed, columns)


def _used_rows_and_columns(data: pd.DataFrame, cols: list[str], complete: np.ndarray, n_dropped: int) -> pd.DataFrame:
    """The used columns of the complete rows (pandas' copy-on-write shares the caller's memory): the
    frame itself (read only) when it is all used and complete; else taken by the columns' positions
    (a selection by names, ``data[cols]``, costs ~0.5 ms on pandas 3 whatever the frame's size,
    by positions ~0.14 ms), and by the rows' when some are dropped. Only the used columns: a formula
    reads its functions (``scale``, ``C``) from the frame's namespace, where an unused column of
    that name would stand in their way."""
    names = data.columns.tolist()
    if not n_dropped and len(names) == len(cols) and set(names) == set(cols):
        return data
    wanted = set(cols)
    pos = [i for i, c in enumerate(names) if c in wanted]
    if len(pos) != len(cols):  # a used name is repeated: pandas' selection (checked before)
        return data.loc[complete, cols] if n_dropped else data[cols]
    df = data.take(pos, axis=1)
    return df.take(np.flatnonzero(complete)) if n_dropped else df


def build_design(
    formula: str,
    data: pd.DataFrame,
    weights=None,
    offset=None,
    require_random: bool = True,
    family=None,
    zi_rhs: str | None = None,
    disp_rhs: str | None = None,
) -> Design:
    """Build the :class:`Design` of ``formula`` on ``data``.

    Parameters
    ----------
    formula : str
        lme4-style formula, e.g. ``"y ~ x + (1 | g)"``.
    data : pandas.DataFrame
        Not modified. Rows with a missing value in a used column, or a missing weight or offset,
        are dropped and counted (lme4's na.omit). Rows with a zero weight are kept and counted
        in ``nobs``, as lme4 counts them (``nobs(fit)`` is the rows of the model frame).
    weights, offset : str, array-like or None
        A column name or an array with one value per row of ``data``.
    family : Family, optional
        Codes a response that is not numbers (binomial: lme4's first level = failure).
    zi_rhs : str, optional
        The right-hand side of a zero-inflation formula (:mod:`~midas_glmm.design.zeroinfl`); its
        variables must be complete too (glmmTMB drops a row missing a variable of either part).
    disp_rhs : str, optional
        The right-hand side of a dispersion formula (:mod:`~midas_glmm.design.dispersion`); its
        variables must be complete too.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if len(data) == 0:
        raise DataError("the data has no rows")
    data = string_columns(data)
    parsed = parse_for(formula, data.columns, require_random)
    needed = used_columns(parsed)
    check_columns(needed, data, formula)
    if zi_rhs is not None:
        zi_needed = formula_variables(zi_rhs)
        check_columns(zi_needed, data, f"~ {zi_rhs}", "ziformula")
        needed = needed | zi_needed
    if disp_rhs is not None and disp_rhs.replace(" ", "") not in ("0", "-1"):
        disp_needed = formula_variables(disp_rhs)
        check_columns(disp_needed, data, f"~ {disp_rhs}", "dispformula")
        needed = needed | disp_needed
    extra = {k: argument_values(k, v, data) for k, v in (("weights", weights), ("offset", offset)) if v is not None}

    cols = sorted(needed)
    complete, finite_checked = _complete_rows(data, cols, extra)
    n_dropped = int((~complete).sum())
    df = _used_rows_and_columns(data, cols, complete, n_dropped)
    df = formulaic_types(df, predictor_names(parsed))
    extra = {k: v[complete] for k, v in extra.items()}

    check_finite(df, [c for c in cols if c not in finite_checked])
    if "weights" in extra:
        check_weights(extra["weights"], df.index, label=label_of("weights", weights))
    y, w, trials, response_name = response_of(parsed, df, extra.get("weights"), family)
    response_levels = None
    if family is not None and family.categorical_response:
        response_levels = family.response_levels(column_or_values(parsed.response, df), response_name)
    drop_intercept = family is not None and family.drops_intercept
    X, names, spec, keep, dropped, gram, nonestimable = _fixed_effects(parsed, df, drop_intercept)
    check_weighted_rank(X, names, w)
    off = offset_of(parsed, df, extra.get("offset"))
    terms = [_build_term(t, df) for t in parsed.random]
    terms = ordered_terms(terms, lmm=family is None or family.is_lmm)

    design = Design(
        grid=reference_grid_info(parsed, df),
        formula=formula,
        parsed=parsed,
        y=np.asarray(y, dtype=float),
        X=X,
        fixed_names=names,
        fixed_spec=spec,
        terms=terms,
        weights=w,
        offset=off,
        response_name=response_name,
        nobs=len(df),
        n_dropped=n_dropped,
        dropped_columns=dropped,
        fixed_keep=keep,
        has_prior_weights="weights" in extra,
        trials=None if trials is None else np.asarray(trials, dtype=float),
        row_index=df.index,
        gram=gram,
        nonestimable=nonestimable,
        response_levels=response_levels,
    )
    design.type3 = type3_basis(design, df)
    if zi_rhs is not None:
        design.zi = build_zero_inflation(zi_rhs, df)
    if disp_rhs is not None:
        design.disp = build_dispersion(disp_rhs, df)
    return design


def ordered_terms(terms: list[ReTerm], lmm: bool = False) -> list[ReTerm]:
    """lme4's order of the terms, then a fill-reducing order of each later term's levels
    (:func:`~midas_glmm.linalg.orderings.fill_reducing_levels`; reported in the original order).
    Not when the crossed block is as large as the iterative solver takes by default
    (:data:`~.reterms.ITERATIVE_TAIL`): ordering its graph costs a pass of the size of the rows'
    pairs of levels (gigabytes at MovieLens' size) for a factor that is not formed; nor when
    the factor is one dense block (:data:`~midas_glmm.linalg.orderings.SMALL_Q_TERMS`; for an
    ``lmm`` of crossed terms :data:`~midas_glmm.linalg.orderings.SMALL_Q_CROSSED`)."""
    terms = [terms[i] for i in lme4_term_order([t.nlevels for t in terms])]
    if tail_bound(terms) >= ITERATIVE_TAIL and dense_tail(terms) >= ITERATIVE_TAIL:
        return terms
    if sum(t.q for t in terms) <= SMALL_Q_TERMS or (lmm and small_crossed(terms)):
        return terms
    orders = fill_reducing_levels([t.codes for t in terms], [t.nlevels for t in terms])
    return [t if perm is None else t.reordered(perm) for t, perm in zip(terms, orders)]


def _float_array(values, what: str, n: int | None = None, ndim: int = 1) -> np.ndarray:
    """``values`` as a finite float array of ``ndim`` dimensions (a 1-D exog becomes one column)
    with ``n`` rows, or a DataError naming ``what`` and the first bad row."""
    try:
        arr = np.asarray(values, dtype=float)
    except (ValueError, TypeError) as exc:  # text, or a ragged list: no library code runs here
        raise DataError(f"{what} must be numbers in a rectangular array ({exc})") from None
    if ndim == 1 and arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if ndim == 2 and arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != ndim:
        raise DataError(f"{what} must be {ndim}-dimensional, not of shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise DataError(f"{what} has {arr.shape[0]} rows but endog has {n}")
    flat = arr.reshape(len(arr), -1)
    for bad, kind in ((np.isnan(flat).any(axis=1), "a missing"), (np.isinf(flat).any(axis=1), "an infinite")):
        if bad.any():
            raise DataError(
                f"{what} has {kind} value at row {int(np.argmax(bad))}; drop or fix those rows first "
                "(from_formula drops rows with missing values, as lme4 does)"
            )
    return arr


def _array_term(name: str, g, Z: np.ndarray, n: int) -> ReTerm:
    """A random-effects term from a grouping array and its per-row columns."""
    g = pd.Series(np.asarray(g, dtype=object).ravel() if not isinstance(g, pd.Series) else g.to_numpy())
    if len(g) != n:
        raise DataError(f"grouping factor '{name}' has {len(g)} values but endog has {n}")
    if g.isna().any():
        raise DataError(
            f"grouping factor '{name}' has a missing value at row {int(np.argmax(g.isna().to_numpy()))}; "
            "drop or fill incomplete rows first"
        )
    codes, levels = pd.factorize(g, sort=True)
    cols = [INTERCEPT if np.all(Z[:, j] == 1) else f"z{j}" for j in range(Z.shape[1])]
    labels = text_index([str(v) for v in levels], name=name)
    return ReTerm(name, (name,), "+".join(cols), cols, labels, codes.astype(np.int64), Z, None)


def design_from_arrays(endog, exog, groups, exog_re=None, weights=None, offset=None, exog_names=None) -> Design:
    """The :class:`Design` of statsmodels-style arrays (``MixedModel(endog, exog, groups)``).

    Every array is checked: numbers, one row per response, no missing or infinite value (the
    array constructor does not drop rows; from_formula does). Rank-deficient ``exog`` columns
    are dropped as in from_formula."""
    y = _float_array(endog, "endog")
    n = len(y)
    X = _float_array(exog, "exog", n, ndim=2)
    names = [INTERCEPT if np.all(X[:, j] == 1) else f"x{j}" for j in range(X.shape[1])]
    if exog_names is not None:
        names = [str(v) for v in exog_names]
        if len(names) != X.shape[1]:
            raise DataError(f"exog_names has {len(names)} names but exog has {X.shape[1]} columns")
    groups = groups if isinstance(groups, dict) else {"group": groups}
    if exog_re is not None and not isinstance(exog_re, dict):
        exog_re = {next(iter(groups)): exog_re}
    exog_re = exog_re or {}
    for name in exog_re:
        if name not in groups:
            raise DataError(f"exog_re names '{name}', which is not a grouping factor{did_you_mean(name, groups)}")
    terms = []
    for name, g in groups.items():
        Z = _float_array(exog_re[name], f"exog_re['{name}']", n, ndim=2) if name in exog_re else np.ones((n, 1))
        terms.append(_array_term(name, g, Z, n))
    terms = ordered_terms(terms)
    w = np.ones(n) if weights is None else _float_array(weights, "weights", n)
    check_weights(w, pd.RangeIndex(n))
    mean, centred = column_moments(X)
    keep, dropped = independent_columns(n, mean, centred, names)
    check_weighted_rank(X[:, keep], [names[i] for i in keep], w)
    return Design(
        formula="<arrays>",
        parsed=ParsedFormula("y", "<arrays>"),
        y=y,
        X=X[:, keep] if dropped else X,
        fixed_names=[names[i] for i in keep],
        fixed_spec=None,
        terms=terms,
        weights=w,
        offset=np.zeros(n) if offset is None else _float_array(offset, "offset", n),
        response_name="y",
        nobs=n,
        n_dropped=0,
        dropped_columns=dropped,
        has_prior_weights=weights is not None,
        fixed_keep=keep,
    )
