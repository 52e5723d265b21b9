"""From a DataFrame and a parsed formula to the arrays the engines use.

:func:`build_design` selects the columns the model uses, drops rows with a missing value in any
of them (counting them, as lme4 does), and builds

* the response ``y`` (for ``cbind(s, f)``: the proportion ``s/(s+f)`` with ``s+f`` trials as
  weights),
* the fixed-effects matrix ``X`` through formulaic (its ModelSpec replays on new data),
* offsets and prior weights,
* one :class:`~midas_glmm.reterms.ReTerm` per random-effects term, in lme4's order.

The caller's DataFrame is never modified.
"""

from __future__ import annotations

import ast
import functools
import keyword
import re
import warnings
from dataclasses import dataclass, field, replace

import formulaic
import numpy as np
import pandas as pd

from .errors import DataError, FormulaError, RankDeficiencyWarning, did_you_mean
from .formula import ParsedFormula, RandomTermSpec, parse_formula
from .reterms import ReTerm, lme4_term_order

__all__ = ["Design", "build_design", "eval_expression", "fixed_matrix", "random_columns"]

INTERCEPT = "(Intercept)"


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
    grid: dict | None = None  # fixed-part variable → ("factor", levels) or ("numeric", mean): emmeans
    type3: dict | None = None  # type 3 contrast basis when terms contain one another (type3.py)
    zi: object = None  # a ZeroInflation (zeroinfl.py) for a model with a ziformula


_QUOTED = re.compile(r"`([^`]*)`")
_TOKEN = re.compile(r"`[^`]*`|'[^']*'|\"[^\"]*\"|[A-Za-z_.][A-Za-z0-9_.]*")


def quote_columns(text: str, columns) -> str:
    """Backtick the names that R reads as one column and Python would not: dotted names
    (``my.var``) and Python keywords (``class``) that are columns of the data.

    Examples
    --------
    >>> quote_columns("log(my.y) + np.log(x) + class", ["my.y", "x", "class"])
    'log(`my.y`) + np.log(x) + `class`'
    """
    cols = {str(c) for c in columns}

    def quote(match: re.Match) -> str:
        tok = match.group(0)
        if tok in cols and ("." in tok or keyword.iskeyword(tok)):
            return f"`{tok}`"
        return tok

    return _TOKEN.sub(quote, text)


def _quote_parsed(parsed: ParsedFormula, columns) -> ParsedFormula:
    """The parsed formula with :func:`quote_columns` applied to every expression in it."""

    def q(text: str) -> str:
        return quote_columns(text, columns)

    return replace(
        parsed,
        response=q(parsed.response),
        fixed=q(parsed.fixed),
        offsets=[q(o) for o in parsed.offsets],
        random=[replace(t, expr=q(t.expr)) for t in parsed.random],
        cbind=None if parsed.cbind is None else (q(parsed.cbind[0]), q(parsed.cbind[1])),
    )


def _placeholders(expr: str) -> tuple[str, dict[str, str]]:
    """``expr`` with each backticked name replaced by a Python identifier, and the map back."""
    names: dict[str, str] = {}

    def sub(match: re.Match) -> str:
        key = f"_midas_q{len(names)}_"
        names[key] = match.group(1)
        return key

    return _QUOTED.sub(sub, expr), names


def _names_in(expr: str) -> set[str]:
    """Free variable names of a Python expression (``np.log(a + b)`` → {a, b}; backticked
    names such as ```my y``` as they are written)."""
    code, quoted = _placeholders(expr)
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError as exc:
        raise FormulaError(
            f"cannot read the expression '{expr}': {exc.msg}; a column name with spaces or symbols "
            "goes in backticks, as in R: `my y`"
        ) from None
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    attrs_base = {n.value.id for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return {quoted.get(n, n) for n in names - called - attrs_base}


def eval_expression(expr: str, data: pd.DataFrame) -> np.ndarray:
    """Evaluate a response or offset expression such as ``size - incidence`` or ``np.log(e)``."""
    env = {"np": np, "numpy": np, "log": np.log, "exp": np.exp, "sqrt": np.sqrt}
    code, quoted = _placeholders(expr)
    cols = {}
    for key in _names_in(code):
        col = quoted.get(key, key)
        if col in data.columns:
            cols[key] = data[col].to_numpy()
    try:
        with np.errstate(all="ignore"):  # log(0) and friends are reported by the caller's checks
            val = eval(compile(code, "<formula>", "eval"), {"__builtins__": {}, **env}, cols)  # noqa: S307
    except Exception as exc:  # the expression is the user's: report it, whatever went wrong
        raise FormulaError(f"cannot evaluate '{expr}': {exc}") from None
    val = np.asarray(val)
    if val.ndim == 0:
        val = np.full(len(data), val)
    return val


def _single_column(expr: str, columns) -> str | None:
    """The column ``expr`` is, when it is just one column name (``y``, ```my y```), else None."""
    code, quoted = _placeholders(expr.strip())
    col = quoted.get(code, code)
    return col if col in columns and (code in quoted or code.isidentifier()) else None


def _column_or_values(expr: str, data: pd.DataFrame) -> pd.Series:
    """The column itself when ``expr`` names one (keeping a categorical's levels), else the
    values of the expression."""
    col = _single_column(expr, data.columns)
    if col is not None:
        return data[col]
    return pd.Series(eval_expression(expr, data), index=data.index)


def _formulaic_names(expr: str) -> set[str]:
    """Variables a formulaic right-hand side reads (backticked names as written)."""
    return set(_formulaic_names_cached(expr))


@functools.lru_cache(maxsize=256)
def _formulaic_names_cached(expr: str) -> frozenset[str]:
    """:func:`_formulaic_names`, parsed once per expression (formulaic's parser takes ~1 ms)."""
    code, quoted = _placeholders(expr)
    try:
        names = formulaic.Formula(code).required_variables
    except Exception as exc:  # formulaic's parser errors: report them, whatever their class
        raise formulaic_error(f"cannot parse '{expr}'", expr, exc) from None
    return frozenset(quoted.get(str(n), str(n)) for n in names)


def formulaic_error(what: str, expr: str, exc: Exception) -> FormulaError:
    """A FormulaError for formulaic's failure on ``expr``, with the remedy for a column named
    after a Python keyword (formulaic reads ```class``` as a term but not inside a call)."""
    msg = f"{what}: {exc}"
    keywords = [n for n in _QUOTED.findall(expr) if keyword.iskeyword(n)]
    if keywords:
        msg += f"; column '{keywords[0]}' is a Python keyword, which formulaic cannot read inside a call: rename it"
    return FormulaError(msg)


def _rename(cols) -> list[str]:
    return [INTERCEPT if c == "Intercept" else str(c) for c in cols]


def numbers_as_floats(data: pd.DataFrame, cols) -> pd.DataFrame:
    """``data`` with each object column of ``cols`` that holds only numbers (Python or numpy
    ints and floats, as after ``pd.Series([1.5, None], dtype=object)``) as floats.

    formulaic would code such a column as a factor with one level per value, a silently
    different model; R has no such column: its numbers are numeric. Text stays a factor.
    The caller's frame is not modified."""
    convert = {}
    for c in cols:
        if c in data.columns and data[c].dtype == object:
            values = data[c].dropna()
            if len(values) and values.map(_is_number).all():
                convert[c] = data[c].astype(float)
    return data.assign(**convert) if convert else data


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def fixed_matrix(design: Design, data: pd.DataFrame) -> np.ndarray:
    """Replay the fixed-effects ModelSpec on (new) data, keeping the columns the fit kept."""
    data = numbers_as_floats(data, _formulaic_names(design.parsed.fixed))
    X = np.asarray(design.fixed_spec.get_model_matrix(data), dtype=float)
    return X[:, design.fixed_keep]


def random_columns(term: ReTerm, data: pd.DataFrame) -> np.ndarray:
    """Replay a random term's column spec on (new) data: the ``n × p`` per-row values."""
    if term.spec is None:
        return np.broadcast_to(1.0, (len(data), 1))
    data = numbers_as_floats(data, _formulaic_names(term.expr))
    return np.asarray(term.spec.get_model_matrix(data), dtype=float)


def _group_codes(data: pd.DataFrame, group: tuple[str, ...]) -> tuple[np.ndarray, pd.Index]:
    """Level codes and labels of the interaction of the ``group`` columns (levels sorted)."""
    parts_codes, parts_levels = [], []
    for g in group:
        col = data[g]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.cat.remove_unused_categories()
            codes, levels = col.cat.codes.to_numpy(), col.cat.categories
        else:
            codes, levels = pd.factorize(col, sort=True)
        parts_codes.append(codes.astype(np.int64))
        parts_levels.append([str(v) for v in levels])
    if len(group) == 1:
        return parts_codes[0], pd.Index(parts_levels[0], name=group[0])
    stacked = np.column_stack(parts_codes)
    uniq, codes = np.unique(stacked, axis=0, return_inverse=True)
    labels = [":".join(parts_levels[i][c] for i, c in enumerate(row)) for row in uniq]
    return codes.ravel().astype(np.int64), pd.Index(labels, name=":".join(group))


def _build_term(spec: RandomTermSpec, data: pd.DataFrame) -> ReTerm:
    codes, levels = _group_codes(data, spec.group)
    if spec.expr.strip() == "1":  # a random intercept needs no model matrix
        return ReTerm(
            spec.group_name,
            spec.group,
            spec.expr,
            [INTERCEPT],
            levels.rename(spec.group_name),
            codes,
            np.broadcast_to(1.0, (len(data), 1)),  # a random intercept's column: no memory
            None,
        )
    try:
        mm = formulaic.model_matrix(spec.expr, data, na_action="raise")
    except Exception as exc:
        raise formulaic_error(f"cannot build the random-effects term '{spec}'", spec.expr, exc) from None
    Zcols = np.asarray(mm, dtype=float)
    if Zcols.shape[1] == 0:
        raise FormulaError(f"random-effects term '{spec}' has no columns; write (1 | g) or (x | g)")
    return ReTerm(
        group_name=spec.group_name,
        group=spec.group,
        expr=spec.expr,
        columns=_rename(mm.columns),
        levels=levels.rename(spec.group_name),
        codes=codes,
        Zcols=Zcols,
        spec=mm.model_spec,
    )


#: a column is linearly dependent on others when its residual norm is below this fraction of its
#: (centred) norm; and a column whose spread is below CONSTANT_TOL times its size is constant
RANK_TOL = 1e-5
CONSTANT_TOL = 1e-12
_CHUNK_ROWS = 1 << 16


def column_moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means ``m`` and the cross-product of the centred columns ``(X − 1m')'(X − 1m)``.

    One pass over the rows in chunks, around the first chunk's means (so that neither a copy of
    X nor a large common shift such as ``x + 1e7`` costs precision). ``X'X = C + n m m'``."""
    n, p = X.shape
    shift = X[:_CHUNK_ROWS].mean(axis=0) if n else np.zeros(p)
    total, C = np.zeros(p), np.zeros((p, p))
    for start in range(0, n, _CHUNK_ROWS):
        D = X[start : start + _CHUNK_ROWS] - shift
        total += D.sum(axis=0)
        C += D.T @ D
    dm = total / max(n, 1)
    return shift + dm, C - n * np.outer(dm, dm)


def moments_from_gram(G: np.ndarray, names: list[str]) -> tuple[float, np.ndarray, np.ndarray]:
    """``(n, m, C)`` of :func:`column_moments` read off ``G = X'X`` when X has an intercept column
    (whose row holds the column sums); without one, ``(1, 0, G)``: the columns as they are."""
    if INTERCEPT not in names:
        return 1.0, np.zeros(len(names)), G
    i = names.index(INTERCEPT)
    n = float(G[i, i])
    m = G[i] / n
    return n, m, G - n * np.outer(m, m)


def _sqrt_factor(C: np.ndarray) -> np.ndarray:
    """F with F'F = C for a positive semi-definite C, from the eigenvalues of its correlation form."""
    s = np.sqrt(np.maximum(np.diag(C), 0.0))
    inv = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0)
    lam, V = np.linalg.eigh(C * np.outer(inv, inv))
    return (np.sqrt(np.maximum(lam, 0.0))[:, None] * V.T) * s


def _residual(v: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """v less its projection on the orthonormal columns of Q (twice, for orthogonality)."""
    for _ in range(2):
        v = v - Q @ (Q.T @ v)
    return v


def independent_columns(
    n: float, mean: np.ndarray, centred: np.ndarray, names: list[str], what: str = "fixed-effect model matrix"
) -> tuple[np.ndarray, list]:
    """Columns to keep: a column linearly dependent on the columns before it is dropped, as lme4
    does, with a :class:`RankDeficiencyWarning`. Returns the indices kept and the names dropped
    (the rule is :func:`_independent`)."""
    keep = _independent(n, mean, centred)
    dropped = [names[i] for i in range(len(names)) if i not in keep]
    if dropped:
        warnings.warn(
            f"{what} is rank deficient: dropping {len(dropped)} column(s) {dropped}",
            RankDeficiencyWarning,
            stacklevel=4,
        )
    return np.array(keep, dtype=int), dropped


def _independent(n: float, mean: np.ndarray, centred: np.ndarray) -> list[int]:
    """Indices of the columns independent of the columns before them.

    Judged from the moments of :func:`column_moments`: X = 1m' + X_c, so the rows ``[√n m'; F]``
    with F'F = X_c'X_c are a square root of X'X built from accurate pieces. Column k is dependent
    when its residual on the kept columns is below ``RANK_TOL`` times its norm, and, once the
    constant lies in the span of the kept columns (an intercept, or a full set of dummies), times
    its centred norm: a shift such as ``x + 1e7`` or Julian dates does not make a predictor look
    constant."""
    M = _sqrt_rows(n, mean, centred)
    const = np.zeros(M.shape[0])
    const[0] = 1.0  # the constant column 1 in these coordinates
    Q = np.zeros((M.shape[0], 0))  # orthonormal basis of the kept columns
    keep: list[int] = []
    for k in range(M.shape[1]):
        size, spread = np.linalg.norm(M[:, k]), np.linalg.norm(M[1:, k])
        if np.linalg.norm(_residual(const, Q)) < RANK_TOL:  # the constant is in the span
            if spread <= CONSTANT_TOL * size:
                continue
            size = spread
        res = _residual(M[:, k], Q)
        if size > 0 and np.linalg.norm(res) > RANK_TOL * size:
            keep.append(k)
            Q = np.column_stack([Q, res / np.linalg.norm(res)])
    return keep


def check_weighted_rank(X: np.ndarray, names: list[str], w: np.ndarray) -> None:
    """Raise when the rows with a positive weight cannot estimate every kept fixed effect (the
    zero-weight rows carry no information: lme4 judges rank on all rows and then fails)."""
    positive = w > 0
    if positive.all():
        return
    keep = _independent(int(positive.sum()), *column_moments(X[positive]))
    lost = [names[i] for i in range(len(names)) if i not in keep]
    if lost:
        raise DataError(
            f"the {int(positive.sum())} rows with a positive weight cannot estimate the fixed effect(s) {lost} "
            "(they are constant or collinear in those rows); give those rows weight or drop the term"
        )


def used_columns(parsed: ParsedFormula) -> set[str]:
    """Every data column the model reads (for the complete-case filter)."""
    if parsed.cbind:
        needed = _names_in(parsed.cbind[0]) | _names_in(parsed.cbind[1])
    else:
        needed = _names_in(parsed.response)
    needed |= _predictor_names(parsed)
    for off in parsed.offsets:
        needed |= _names_in(off)
    for t in parsed.random:
        needed |= set(t.group)
    return needed


def _predictor_names(parsed: ParsedFormula) -> set[str]:
    """The columns formulaic reads: the fixed part and the random terms' left sides."""
    names = _formulaic_names(parsed.fixed)
    for t in parsed.random:
        names |= _formulaic_names(t.expr)
    return names


def check_finite(df: pd.DataFrame, cols) -> None:
    """Raise on infinite values in the numeric columns used."""
    for c in cols:
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            vals = df[c].to_numpy(dtype=float)
            if np.isinf(vals).any():
                raise DataError(
                    f"column '{c}' holds infinite values (row {df.index[np.isinf(vals)][0]!r}); remove or recode them"
                )


def response_of(parsed: ParsedFormula, df: pd.DataFrame, weights=None, family=None, levels=None):
    """(y, prior weights, trials or None, response name); cbind(s, f) gives s/(s+f) with s+f trials.

    A response that is not numbers (a pandas Categorical, text) is coded by ``family``
    (:meth:`~midas_glmm.families.Family.code_levels`: binomial codes it as lme4 does, other
    families refuse it), with ``levels`` when they are known beforehand."""
    if parsed.cbind:
        succ = _numeric(eval_expression(parsed.cbind[0], df), parsed.cbind[0])
        fail = _numeric(eval_expression(parsed.cbind[1], df), parsed.cbind[1])
        trials = succ + fail
        if (succ < 0).any() or (fail < 0).any():
            raise DataError(f"'{parsed.response}' has negative counts; cbind needs successes, failures >= 0")
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(trials > 0, succ / np.where(trials > 0, trials, 1), 0.0)
        w = trials.astype(float)
        name = parsed.cbind[0]
    else:
        name = parsed.response.strip("`") if _QUOTED.fullmatch(parsed.response) else parsed.response
        y = _response_numbers(_column_or_values(parsed.response, df), name, family, levels)
        w = np.broadcast_to(1.0, len(df))  # no weights: a read-only view, no memory
        trials = None
    if weights is not None:
        w = w * weights
    return y, w, trials, name


def _response_numbers(values: pd.Series, name: str, family, levels) -> np.ndarray:
    """The response as floats: numbers as they are, anything else coded by the family."""
    numbers = as_numbers(values)
    if numbers is not None:
        return numbers
    if family is None:  # a design built without a family is Gaussian
        from .families import resolve_family

        family = resolve_family(None)
    return family.code_levels(values, name, levels)


def as_numbers(values: pd.Series) -> np.ndarray | None:
    """``values`` as floats (bool as 0/1, numbers stored as text converted), or None when they
    are not numbers (text, a pandas Categorical)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return None
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=float, na_value=np.nan)
    if values.map(lambda v: isinstance(v, (bool, np.bool_))).all():
        return values.to_numpy(dtype=float)
    converted = pd.to_numeric(values, errors="coerce")
    if converted.notna().sum() == values.notna().sum():
        return converted.to_numpy(dtype=float, na_value=np.nan)
    return None


def response_column(parsed: ParsedFormula, data: pd.DataFrame) -> str | None:
    """The column the response is, when it is one column (``y``, ```my y```), else None."""
    return None if parsed.cbind else _single_column(parsed.response, data.columns)


def is_factor_response(parsed: ParsedFormula, data: pd.DataFrame) -> bool:
    """True when the response is a factor (a pandas Categorical, text), not numbers or bool."""
    col = response_column(parsed, data)
    if col is None:
        return False
    values = data[col]
    if len(values) == 0:  # Dask's meta: judge by the dtype alone
        return not (pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype))
    return as_numbers(values) is None


def check_weights(w: np.ndarray, index: pd.Index, allow_all_zero: bool = False, label: str = "weights") -> None:
    """Raise for prior weights lme4 refuses (negative) or that make no model (infinite, all zero)."""
    for bad, kind in ((np.isinf(w), "infinite"), (w < 0, "negative")):
        if bad.any():
            raise DataError(
                f"{label} has {kind} values (row {index[np.argmax(bad)]!r}: {w[bad][0]:g}); prior weights "
                "must be finite and >= 0 (a missing weight drops its row)"
            )
    if not allow_all_zero and len(w) and not (w > 0).any():
        raise DataError("every prior weight is zero; nothing to fit")


def offset_of(parsed: ParsedFormula, df: pd.DataFrame, offset=None) -> np.ndarray:
    """Sum of the formula's offset(...) terms and the offset= argument."""
    off = np.broadcast_to(0.0, len(df))  # no offset: a read-only view, no memory
    for expr in parsed.offsets:
        off = off + _numeric(eval_expression(expr, df), f"offset({expr})")
    if offset is not None:
        off = off + offset
    if (parsed.offsets or offset is not None) and not np.all(np.isfinite(off)):
        raise DataError("the offset has non-finite values (e.g. log of 0); check the exposure column")
    return off


def _check_columns(needed: set[str], data: pd.DataFrame, formula: str) -> None:
    """Raise for a column the formula reads that the data lacks, or holds twice."""
    for name in sorted(needed):
        if name not in data.columns:
            raise DataError(_missing_column(name, data.columns, formula))
        if (data.columns == name).sum() > 1:
            raise DataError(
                f"column '{name}' appears {(data.columns == name).sum()} times in the data; rename or drop "
                "the copies, e.g. data.loc[:, ~data.columns.duplicated()]"
            )


def _missing_column(name: str, columns, formula: str) -> str:
    """The message for a missing column; a dotted name (R's ``my.var``) is named whole."""
    dotted = re.findall(rf"(?<![\w.`]){re.escape(name)}\.[\w.]+", formula)
    shown = dotted[0] if dotted else name
    msg = f"column '{shown}' in formula '{formula}' is not in the data{did_you_mean(shown, columns)}"
    if dotted:
        msg += f"; a name with dots, spaces or symbols is read whole when it is a column, or in backticks: `{shown}`"
    return msg


def _label(label: str, arg) -> str:
    """``"weights column 'w'"`` for a column name, ``"weights"`` for an array."""
    return f"{label} column '{arg}'" if isinstance(arg, str) else label


def _argument_values(label: str, arg, data: pd.DataFrame) -> np.ndarray:
    """The weights= or offset= argument (a column name, or one value per row) as floats."""
    what = _label(label, arg)
    if isinstance(arg, str):
        _check_columns({arg}, data, f"{label}='{arg}'")
        values = data[arg]
    else:
        raw = np.asarray(arg, dtype=object).ravel()
        if raw.shape[0] != len(data):
            raise DataError(f"{label} has {raw.shape[0]} values but the data has {len(data)} rows")
        values = pd.Series(raw, index=data.index)
    numbers = as_numbers(values)
    if numbers is None:
        raise DataError(f"{what} is not numeric (e.g. {values.dropna().iloc[0]!r}); {label} must be numbers")
    return numbers


def _complete_rows(data: pd.DataFrame, cols: list[str], extra: dict[str, np.ndarray]) -> np.ndarray:
    """Rows with a value in every used column and argument (lme4's na.omit)."""
    missing = {c: data[c].isna().to_numpy() for c in cols}
    complete = np.ones(len(data), dtype=bool)
    for m in [*missing.values(), *(np.isnan(a) for a in extra.values())]:
        complete &= ~m
    if not complete.any():
        worst = max(missing, key=lambda c: missing[c].sum()) if missing else "weights"
        raise DataError(f"every row has a missing value (column '{worst}' is the emptiest); nothing to fit")
    return complete


def _fixed_effects(parsed: ParsedFormula, df: pd.DataFrame):
    """(X, names, ModelSpec, kept indices, dropped names, X'X) of the fixed part, rank checked."""
    try:
        mm = formulaic.model_matrix(parsed.fixed, df, na_action="raise", output="numpy")
    except Exception as exc:  # formulaic's errors are many classes: report them, whatever they are
        raise formulaic_error(f"cannot build the fixed effects '{parsed.fixed}'", parsed.fixed, exc) from None
    names = _rename(mm.model_spec.column_names)
    spec = mm.model_spec
    X = np.asarray(mm, dtype=float)  # formulaic's array itself: the data pass reads it in row chunks
    del mm
    mean, centred = column_moments(X)
    gram = centred + len(X) * np.outer(mean, mean)
    keep, dropped = independent_columns(len(X), mean, centred, names)
    if dropped:
        X, names, gram = X[:, keep], [names[i] for i in keep], gram[np.ix_(keep, keep)]
    return X, names, spec, keep, dropped, gram


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
    return _quote_parsed(parsed, columns)


def build_design(
    formula: str,
    data: pd.DataFrame,
    weights=None,
    offset=None,
    require_random: bool = True,
    family=None,
    zi_rhs: str | None = None,
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
        The right-hand side of a zero-inflation formula (:mod:`~midas_glmm.zeroinfl`); its
        variables must be complete too (glmmTMB drops a row missing a variable of either part).
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    if len(data) == 0:
        raise DataError("the data has no rows")
    parsed = parse_for(formula, data.columns, require_random)
    needed = used_columns(parsed)
    _check_columns(needed, data, formula)
    if zi_rhs is not None:
        zi_needed = _formulaic_names(zi_rhs)
        _check_columns(zi_needed, data, f"ziformula '~ {zi_rhs}'")
        needed = needed | zi_needed
    extra = {k: _argument_values(k, v, data) for k, v in (("weights", weights), ("offset", offset)) if v is not None}

    cols = sorted(needed)
    complete = _complete_rows(data, cols, extra)
    n_dropped = int((~complete).sum())
    # the used columns of the complete rows: pandas' copy-on-write shares the caller's memory
    df = data.loc[complete, cols] if n_dropped else data[cols]
    df = numbers_as_floats(df, _predictor_names(parsed))
    extra = {k: v[complete] for k, v in extra.items()}

    check_finite(df, cols)
    if "weights" in extra:
        check_weights(extra["weights"], df.index, label=_label("weights", weights))
    y, w, trials, response_name = response_of(parsed, df, extra.get("weights"), family)
    X, names, spec, keep, dropped, gram = _fixed_effects(parsed, df)
    check_weighted_rank(X, names, w)
    off = offset_of(parsed, df, extra.get("offset"))
    terms = [_build_term(t, df) for t in parsed.random]
    terms = ordered_terms(terms)

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
    )
    from .type3 import type3_basis

    design.type3 = type3_basis(design, df)
    if zi_rhs is not None:
        from .zeroinfl import build_zero_inflation

        design.zi = build_zero_inflation(zi_rhs, df)
    return design


def reference_grid_info(parsed: ParsedFormula, df: pd.DataFrame) -> dict:
    """For each variable of the fixed part, what a reference grid holds (emmeans): its levels
    (sorted, as R's factor levels) if it is text, categorical, boolean or wrapped in ``C()``,
    else its mean over the rows used."""
    out = {}
    categorical_calls = set(re.findall(r"C\(\s*`?([^,)`]+)`?", parsed.fixed))
    for name in sorted(_formulaic_names(parsed.fixed)):
        if name not in df.columns:
            continue
        col = df[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if numeric and name not in categorical_calls:
            out[name] = ("numeric", float(col.mean()))
        elif isinstance(col.dtype, pd.CategoricalDtype):
            out[name] = ("factor", list(col.cat.categories))
        else:
            out[name] = ("factor", sorted(col.dropna().unique().tolist()))
    return out


def ordered_terms(terms: list[ReTerm]) -> list[ReTerm]:
    """lme4's order of the terms, then a fill-reducing order of each later term's levels
    (:func:`sparsity.fill_reducing_levels`; reported in the original order)."""
    from .sparsity import fill_reducing_levels

    terms = [terms[i] for i in lme4_term_order([t.nlevels for t in terms])]
    return [t if perm is None else t.reordered(perm) for t, perm in zip(terms, fill_reducing_levels(terms))]


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
    labels = pd.Index([str(v) for v in levels], name=name)
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


def _numeric(values: np.ndarray, name: str) -> np.ndarray:
    """Values of a cbind(...) count or an offset as floats, or a DataError naming them."""
    numbers = as_numbers(pd.Series(values))
    if numbers is None:
        raise DataError(
            f"'{name}' is not numeric (dtype {values.dtype}); it must be numbers "
            "(recode categories as 0/1, or use cbind(successes, failures))"
        )
    return numbers


def standardize(
    X: np.ndarray, names: list[str], gram: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centring and scaling of the columns of X, for conditioning, without a copy.

    Returns ``(shift, scale, S)``: the data pass uses X_s = (X − shift)/scale column-wise, and
    ``X β = X_s β_s`` with ``β = S β_s`` and ``Var β = S Var(β_s) S'``. Columns are centred
    only when the constant lies in the span of X, through ``X a = 1`` (an intercept, or a full
    set of dummies as in ``0 + C(f) + x``); the columns carrying ``a`` are left as they are, so
    the column space is unchanged. Without a constant in the span the columns are only scaled.
    The moments come from ``gram`` = X'X when the model has an intercept and the caller has it.
    """
    n, p = X.shape
    shift, scale, S = np.zeros(p), np.ones(p), np.eye(p)
    a, moments = _centring_plan(X, names, gram)
    for c in range(p):
        if a is not None and a[c] != 0:  # the columns that make the constant stay as they are
            continue
        m, s = moments(c)
        if not np.isfinite(s) or s <= 1e-12 * max(abs(m), 1.0):
            continue
        shift[c], scale[c] = m, s
        S[c, c] = 1.0 / s
        if a is not None:
            S[:, c] -= a * (m / s)
    return shift, scale, S


def _centring_plan(X: np.ndarray, names: list[str], gram: np.ndarray | None):
    """``(a, moments)``: the coefficients a with X a = 1 (None if the constant is not in the
    span of X), and a function of a column index returning its centre and spread."""
    if INTERCEPT in names:
        icpt = names.index(INTERCEPT)
        return np.eye(len(names))[icpt], lambda c: _moments(X, c, icpt, gram)
    n = X.shape[0]
    mean, centred = column_moments(X)
    a = constant_combination(n, mean, centred)
    spread = np.sqrt(np.maximum(np.diag(centred), 0.0) / max(n, 1))
    if a is None:
        return None, lambda c: (0.0, float(np.hypot(mean[c], spread[c])))
    return a, lambda c: (float(mean[c]), float(spread[c]))


def constant_combination(n: float, mean: np.ndarray, centred: np.ndarray) -> np.ndarray | None:
    """Coefficients a with ``X a = 1`` when the constant lies in the span of X's columns (for
    example a full set of dummies ``0 + C(f)``), from the moments of :func:`column_moments`;
    None when it does not. ``X a = 1`` means ``X_c a = 0`` and ``m'a = 1``: a is in the null
    space of the centred cross-product; it is then solved for, by least squares on the columns
    it uses, in the square root of :func:`_sqrt_rows`."""
    s = np.sqrt(np.maximum(np.diag(centred), 0.0))
    d = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 1.0)
    lam, V = np.linalg.eigh(centred * np.outer(d, d))
    null = V[:, lam <= RANK_TOL**2 * max(lam.max(initial=0.0), 1.0)] * d[:, None]
    along = null.T @ mean
    nonzero = np.abs(along) > 1e-8 * (np.abs(null).T @ np.abs(mean))  # beyond rounding
    if not nonzero.any():
        return None
    null, along = null[:, nonzero], along[nonzero]
    a = null @ along / (along @ along)
    used = np.abs(a) > 1e-8 * np.abs(a).max()
    M = _sqrt_rows(n, mean[used], centred[np.ix_(used, used)])
    target = np.zeros(M.shape[0])
    target[0] = np.sqrt(n)
    a = np.zeros_like(a)
    a[used] = np.linalg.lstsq(M, target, rcond=None)[0]
    return a


def _sqrt_rows(n: float, mean: np.ndarray, centred: np.ndarray) -> np.ndarray:
    """``[√n m'; F]`` with F'F = C: a square root of X'X = C + n m m' built from accurate pieces."""
    return np.vstack([np.sqrt(n) * mean, _sqrt_factor(centred)])


def _moments(X: np.ndarray, c: int, icpt: int, gram: np.ndarray | None) -> tuple[float, float]:
    """Mean m and spread s = √(mean (x − m)²) of column c.

    From ``gram`` (mean = G[1,c]/n, mean square = G[c,c]/n) unless the column's mean dwarfs its
    spread (``x + 1e7``): the difference of the two would have lost the spread, which is then
    read off the column."""
    n = X.shape[0]
    col = X[:, c]
    if gram is None:
        m = col.mean()
        return float(m), float(np.sqrt(np.mean((col - m) ** 2)))
    m = gram[icpt, c] / n
    msq = gram[c, c] / n
    var = msq - m * m
    if var <= 1e-6 * msq:
        var = float(np.mean((col - m) ** 2))
    return float(m), float(np.sqrt(max(var, 0.0)))
