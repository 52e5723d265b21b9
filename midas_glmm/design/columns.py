"""Columns and expressions: the bridge between the formula's text, the DataFrame's columns and formulaic.

R reads ``my.var`` as one column and Python does not; formulaic parses a right-hand side and
reports the variables it reads; a response or offset is an expression evaluated on the columns.
The functions here do that translation once, for the design and for new data alike.
"""

from __future__ import annotations

import ast
import functools
import keyword
import re
import threading
from collections import OrderedDict
from dataclasses import replace

import formulaic
import numpy as np
import pandas as pd
from formulaic.transforms import TRANSFORMS

from ..errors import DataError, FormulaError, did_you_mean
from .formula import ParsedFormula

__all__ = [
    "INTERCEPT",
    "quote_columns",
    "quote_parsed",
    "eval_expression",
    "factorize_sorted",
    "counted_ranks",
    "text_index",
    "interaction_codes",
    "single_column",
    "column_or_values",
    "formula_variables",
    "formulaic_error",
    "model_matrix",
    "coefficient_names",
    "formulaic_types",
    "used_columns",
    "predictor_names",
    "check_columns",
    "unquoted",
    "string_columns",
]

INTERCEPT = "(Intercept)"

_QUOTED = re.compile(r"`([^`]*)`")

_TOKEN = re.compile(r"`[^`]*`|'[^']*'|\"[^\"]*\"|(?:[^\W\d]|\.)[\w.]*")


def string_columns(data):
    """``data`` with its column names as text, so that a formula names any column (a column
    called 0 is ```0``` there); the frame itself when they are text already (no copy of the
    values either way)."""
    if all(isinstance(c, str) for c in data.columns):
        return data
    return data.set_axis([str(c) for c in data.columns], axis=1)


def quote_columns(text: str, columns) -> str:
    """Backtick the names that R reads as one column and Python would not: dotted names
    (``my.var``) and Python keywords (``class``) that are columns of the data.

    Examples
    --------
    >>> quote_columns("log(my.y) + np.log(x) + class", ["my.y", "x", "class"])
    'log(`my.y`) + np.log(x) + `class`'
    """
    return _quote_names(text, _names_to_quote(columns))


def _names_to_quote(columns) -> set[str]:
    """The columns :func:`quote_columns` backticks: dotted names and Python keywords."""
    return {c for c in map(str, columns) if "." in c or keyword.iskeyword(c)}


def _quote_names(text: str, names: set[str]) -> str:
    """``text`` with each token in ``names`` backticked (none: ``text`` itself)."""
    if not names:
        return text

    def quote(match: re.Match) -> str:
        tok = match.group(0)
        return f"`{tok}`" if tok in names else tok

    return _TOKEN.sub(quote, text)


def quote_parsed(parsed: ParsedFormula, columns) -> ParsedFormula:
    """The parsed formula with :func:`quote_columns` applied to every expression in it (the
    parsed formula itself when no column needs quoting: the usual names)."""
    names = _names_to_quote(columns)
    if not names:
        return parsed

    def q(text: str) -> str:
        return _quote_names(text, names)

    return replace(
        parsed,
        response=q(parsed.response),
        fixed=q(parsed.fixed),
        offsets=[q(o) for o in parsed.offsets],
        random=[replace(t, expr=q(t.expr)) for t in parsed.random],
        cbind=None if parsed.cbind is None else (q(parsed.cbind[0]), q(parsed.cbind[1])),
    )


def unquoted(name: str) -> str:
    """A name without the backticks around it (```my y``` → ``my y``); other text as it is."""
    return name.strip("`") if _QUOTED.fullmatch(name) else name


def placeholders(expr: str) -> tuple[str, dict[str, str]]:
    """``expr`` with each backticked name replaced by a Python identifier, and the map back."""
    names: dict[str, str] = {}

    def sub(match: re.Match) -> str:
        key = f"_midas_q{len(names)}_"
        names[key] = match.group(1)
        return key

    return _QUOTED.sub(sub, expr), names


def names_in(expr: str) -> set[str]:
    """Free variable names of a Python expression (``np.log(a + b)`` → {a, b}; backticked
    names such as ```my y``` as they are written)."""
    return set(_names_in_cached(expr))


@functools.lru_cache(maxsize=512)
def _names_in_cached(expr: str) -> frozenset[str]:
    """:func:`names_in`, each expression parsed once (Python's parser: ~20 µs a call)."""
    code, quoted = placeholders(expr)
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
    return frozenset(quoted.get(n, n) for n in names - called - attrs_base)


@functools.lru_cache(maxsize=256)
def _compiled_expression(expr: str):
    """(Python code object, [(its name, the column)]) of an expression: parsed once (a
    simulation refits the same formula many times)."""
    code, quoted = placeholders(expr)
    names = tuple((key, quoted.get(key, key)) for key in sorted(names_in(code)))
    try:
        compiled = compile(code, "<formula>", "eval")
    except Exception as exc:  # names_in parsed it: a compile error is still the user's text
        raise FormulaError(f"cannot evaluate '{expr}': {exc}") from None
    return compiled, names


def eval_expression(expr: str, data: pd.DataFrame) -> np.ndarray:
    """Evaluate a response or offset expression such as ``size - incidence`` or ``np.log(e)``."""
    env = {"__builtins__": {}, "np": np, "numpy": np, "log": np.log, "exp": np.exp, "sqrt": np.sqrt}
    compiled, names = _compiled_expression(expr)
    cols = {key: data[col].to_numpy() for key, col in names if col in data.columns}
    try:
        with np.errstate(all="ignore"):  # log(0) and friends are reported by the caller's checks
            val = eval(compiled, env, cols)  # noqa: S307
    except Exception as exc:  # the expression is the user's: report it, whatever went wrong
        raise FormulaError(f"cannot evaluate '{expr}': {exc}") from None
    val = np.asarray(val)
    if val.ndim == 0:
        val = np.full(len(data), val)
    return val


def single_column(expr: str, columns) -> str | None:
    """The column ``expr`` is, when it is just one column name (``y``, ```my y```), else None."""
    code, quoted = placeholders(expr.strip())
    col = quoted.get(code, code)
    return col if col in columns and (code in quoted or code.isidentifier()) else None


def column_or_values(expr: str, data: pd.DataFrame) -> pd.Series:
    """The column itself when ``expr`` names one (keeping a categorical's levels), else the
    values of the expression."""
    col = single_column(expr, data.columns)
    if col is not None:
        return data[col]
    return pd.Series(eval_expression(expr, data), index=data.index)


def formula_variables(expr: str) -> set[str]:
    """Variables a formulaic right-hand side reads (backticked names as written)."""
    return set(_formula_variables_cached(expr))


#: the names formulaic's evaluation provides itself (its transforms, contrasts and numpy)
_FORMULAIC_NAMES = frozenset(TRANSFORMS) | {"numpy"}


@functools.lru_cache(maxsize=256)
def _formula_variables_cached(expr: str) -> frozenset[str]:
    """:func:`formula_variables`, parsed once per expression (formulaic's parser takes ~1 ms)."""
    code, quoted = placeholders(expr)
    try:
        formula = formulaic.Formula(code)
        names = {str(n) for n in formula.required_variables}
    except Exception as exc:  # formulaic's parser errors: report them, whatever their class
        raise formulaic_error(f"cannot parse '{expr}'", expr, exc) from None
    # formulaic leaves out names its own namespace also has (a column called np, log or C) and the
    # arguments of its stateful transforms (x in center(x)): read them off each factor as well
    for term in formula:
        for factor in term.factors:
            method = getattr(factor.eval_method, "value", factor.eval_method)
            if method == "lookup":
                names.add(str(factor.expr).strip("`"))
            elif method == "python":  # names of formulaic's own (Sum in C(f, Sum)) are not columns here
                try:
                    names |= names_in(str(factor.expr)) - _FORMULAIC_NAMES
                except FormulaError:  # not Python formulaic evaluates: its own list stands
                    pass
    return frozenset(quoted.get(n, n) for n in names)


#: formulaic's ModelSpec of a plain right-hand side by (text, output, the columns' types and a
#: factor's levels): a sum of numeric columns, factors and the intercept, whose spec depends on
#: nothing else, so that a formula refitted to new data (a simulation, a bootstrap) is
#: materialised by numpy
_PLAIN_SPECS: OrderedDict = OrderedDict()
_PLAIN_SEEN: set = set()  # (text, output, column types) fitted once: the numpy path from the second
_PLAIN_LOCK = threading.Lock()
PLAIN_SPECS_KEPT = 64
PLAIN_CHECK_ROWS = 2048


def plain_terms(rhs: str, data: pd.DataFrame) -> tuple[bool, dict[str, pd.Series]] | None:
    """(intercept, {column: its values}) of a right-hand side that is a sum of columns of ``data`` (numbers,
    or a factor: categorical, or pandas' ``str``) with 1, 0 or a trailing −1 (``x + f``, ``0 + x``,
    ``x - 1``); None for anything else.

    >>> intercept, cols = plain_terms("Days - 1", pd.DataFrame({"Days": [0, 1]}))
    >>> intercept, list(cols)
    (False, ['Days'])
    """
    text = rhs.replace(" ", "")
    intercept = None
    if text.endswith("-1"):
        text, intercept = text[:-2], False
    cols: dict[str, pd.Series] = {}
    for tok in text.split("+") if text else []:
        if tok in ("0", "1"):
            if intercept is not None:  # 0 and 1 together, or 1 with −1: formulaic's reading
                return None
            intercept = tok == "1"
        elif tok.isidentifier() and not keyword.iskeyword(tok) and tok not in cols and tok in data.columns:
            col = data[tok]
            dtype = col.dtype
            is_text = isinstance(dtype, pd.StringDtype) and dtype == "str"  # pandas' text: a factor to formulaic
            is_number = isinstance(dtype, np.dtype) and dtype.kind in "fiu"  # not pandas' nullable numbers
            if not (is_number or is_text or isinstance(dtype, pd.CategoricalDtype)):
                return None
            cols[tok] = col
        else:
            return None
    return intercept is not False, cols


def _factor_codes(col: pd.Series) -> tuple[np.ndarray, list]:
    """A factor's codes and levels as formulaic takes them: a categorical's categories in their
    order (unused ones too), text's distinct values sorted."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy(), list(col.cat.categories)
    codes, levels = factorize_sorted(col)
    return codes, list(levels)


#: up to this many rows pandas' text is factorized as Python strings (:func:`factorize_sorted`)
TEXT_OBJECT_ROWS = 4096
#: and up to this many by a Python set, sort and dict (30 rows: 12 µs against pandas' 44 on the
#: strings; 180: 34 against 54; 1,000: 139 against 106)
TEXT_SET_ROWS = 500


def factorize_sorted(col: pd.Series) -> tuple[np.ndarray, np.ndarray | pd.Index]:
    """pandas' ``factorize(col, sort=True)``. Short columns of pandas' text (pyarrow's by
    default) are read as Python strings, which sort alike (by code point, as UTF-8's bytes do)
    and whose factorize costs a third of pyarrow's on 180 rows; from some thousands of rows the
    Python strings cost more than pyarrow's own pass (1e5 rows: 8 ms against 3). Integers whose
    range is not much wider than the column (group ids) are counted instead of hashed and sorted:
    the levels are the values present, the codes their ranks (1e5 rows of 2,000 ids: 0.36 ms
    against pandas' 2.2; 1e6 of 20,000: 4.5 against 32). The levels are an array or an Index."""
    if isinstance(col.dtype, pd.StringDtype) and len(col) <= TEXT_OBJECT_ROWS:
        values = np.asarray(col.array, dtype=object)
        if len(values) <= TEXT_SET_ROWS:
            distinct = set(values.tolist())
            if all(type(v) is str for v in distinct):  # no NA: each row's rank among the sorted levels
                levels = sorted(distinct)
                rank = {v: i for i, v in enumerate(levels)}
                return np.array([rank[v] for v in values.tolist()], dtype=np.int64), np.array(levels, dtype=object)
        return pd.factorize(values, sort=True)
    if isinstance(col.dtype, np.dtype) and col.dtype.kind in "iu" and len(col):
        found = counted_ranks(col.to_numpy())
        if found is not None:
            return found[0], pd.Index(found[1].astype(col.dtype))
    return pd.factorize(col, sort=True)


#: the dtype pandas gives an Index of Python strings (pandas 3: its text, "str"; pandas 2: object)
_TEXT_DTYPE = pd.Index(["a"]).dtype


def text_index(labels: list[str], name=None) -> pd.Index:
    """``pd.Index(labels, name=name)`` of Python strings, the dtype given rather than inferred
    (pandas 3: 37 against 63 µs for 18 labels; the same Index)."""
    if _TEXT_DTYPE == np.dtype(object):
        return pd.Index(labels, dtype=object, name=name)
    return pd.Index(pd.array(labels, dtype=_TEXT_DTYPE), name=name)


def counted_ranks(v: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(the rank of each value among the distinct values, the distinct values sorted, int64) of the
    integers ``v`` by one count over their range; None where that range is more than twice the rows
    (and 1,024), or beyond ±2⁶²."""
    lo, hi = int(v.min()), int(v.max())
    if hi - lo >= max(2 * len(v), 1024) or lo < -(2**62) or hi > 2**62:
        return None
    offset = v.astype(np.int64, copy=False) - lo
    present = np.bincount(offset, minlength=hi - lo + 1) > 0
    return (np.cumsum(present) - 1)[offset], np.flatnonzero(present) + lo


def interaction_codes(parts: list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(codes, each part's codes of the distinct combinations) of the interaction of factors whose
    codes ``parts[i]`` lie in [0, sizes[i]): the combinations in lexicographic order of the parts'
    codes, as ``np.unique(column_stack(parts), axis=0)`` orders them. Each row's combination is one
    mixed-radix integer k = (c₀·n₁ + c₁)·n₂ + c₂ …, whose order is that one, ranked by a count over
    its range (:func:`counted_ranks`) or a sort of the integers (1e5 rows of three nested
    factors: 230 ms by rows as void values against a few ms)."""
    if float(np.prod(np.asarray(sizes, dtype=float))) >= 2.0**62:  # the key would overflow: rows
        uniq, codes = np.unique(np.column_stack(parts), axis=0, return_inverse=True)
        return codes.ravel().astype(np.int64), [uniq[:, i] for i in range(len(parts))]
    key = parts[0].astype(np.int64)
    for part, size in zip(parts[1:], sizes[1:]):
        key = key * size + part
    found = counted_ranks(key) if len(key) else None
    if found is None:
        keys, codes = np.unique(key, return_inverse=True)
    else:
        codes, keys = found
    combos = []
    for size in reversed(sizes[1:]):
        combos.append(keys % size)
        keys = keys // size
    combos.append(keys)
    return codes.ravel().astype(np.int64), combos[::-1]


def _plain_design(intercept: bool, cols: dict[str, pd.Series]):
    """The columns of a plain right-hand side: (key part, names, a function that writes X) with
    formulaic's treatment coding: a factor's first level left out where the intercept (or an
    earlier factor without one) spans it, its columns named ``f[T.b]``, else ``f[a]``, ``f[b]``;
    None when a factor has a missing value (formulaic's error is the one to give)."""
    key, names, parts = [], ["Intercept"] if intercept else [], []
    spanned = intercept
    for c, col in cols.items():
        if isinstance(col.dtype, np.dtype):  # a number (plain_terms)
            key.append(col.dtype.str)
            names.append(c)
            parts.append((col.to_numpy(), None))
            continue
        codes, levels = _factor_codes(col)
        if len(codes) and codes.min() < 0:
            return None
        key.append((str(col.dtype), tuple(levels)))
        first = 1 if spanned else 0
        names += [f"{c}[T.{v}]" if spanned else f"{c}[{v}]" for v in levels[first:]]
        parts.append((codes, range(first, len(levels))))
        spanned = True

    def write(X: np.ndarray, rows: slice = slice(None)) -> None:
        """X's values for ``rows`` of the data (X has that many rows)."""
        j = 0
        if intercept:
            X[:, 0] = 1.0
            j = 1
        for values, levels in parts:
            if levels is None:
                X[:, j] = values[rows]
                j += 1
            else:
                for k in levels:
                    X[:, j] = values[rows] == k
                    j += 1

    return tuple(key), names, write


def model_matrix(rhs: str, data: pd.DataFrame, output: str = "numpy") -> tuple[np.ndarray, list[str], object]:
    """formulaic's model matrix of ``rhs`` on ``data``: (X as floats, formulaic's column names,
    its ModelSpec); ``output`` is formulaic's (the layout of X follows it: rows for "numpy",
    columns for "pandas"). A plain right-hand side (:func:`plain_terms`) seen before with the same
    column types and levels is built by numpy with the spec formulaic gave then (from its third
    build: the second checks formulaic's names and first rows against numpy's); formulaic's own
    errors propagate. The design calls it on complete rows (a missing number is not looked for)."""
    plain = plain_terms(rhs, data)
    if plain is not None:  # a one-off fit pays nothing: the bookkeeping starts at the second
        first = (rhs, output, tuple(str(col.dtype) for col in plain[1].values()))
        with _PLAIN_LOCK:
            if first not in _PLAIN_SEEN:
                if len(_PLAIN_SEEN) >= 4 * PLAIN_SPECS_KEPT:
                    _PLAIN_SEEN.clear()
                _PLAIN_SEEN.add(first)
                plain = None
    built = None if plain is None else _plain_design(*plain)
    if built is None:
        mm = formulaic.model_matrix(rhs, data, na_action="raise", output=output)
        return np.asarray(mm, dtype=float), list(mm.model_spec.column_names), mm.model_spec
    kinds, names, write = built
    order = "C" if output == "numpy" else "F"
    key = (rhs, output, kinds)
    with _PLAIN_LOCK:  # fits in threads share the specs
        spec = _PLAIN_SPECS.get(key)
        if spec is not None:
            _PLAIN_SPECS.move_to_end(key)
    if spec is not None:
        X = np.empty((len(data), len(names)), order=order)
        write(X)
        return X, names, spec
    mm = formulaic.model_matrix(rhs, data, na_action="raise", output=output)
    spec = mm.model_spec
    X = np.asarray(mm, dtype=float)
    if list(spec.column_names) == names:
        # formulaic agrees on the names (the coding, the levels' order) and on the first rows'
        # values: keep its spec (the whole matrix again would cost a 1e6-row fit ~50 ms)
        head = slice(0, min(len(X), PLAIN_CHECK_ROWS))
        mine = np.empty((head.stop, X.shape[1]), order=order)
        write(mine, head)
        if np.array_equal(X[head], mine):
            with _PLAIN_LOCK:
                _PLAIN_SPECS[key] = spec
                if len(_PLAIN_SPECS) > PLAIN_SPECS_KEPT:
                    _PLAIN_SPECS.popitem(last=False)
    return X, list(spec.column_names), spec


def formulaic_error(what: str, expr: str, exc: Exception) -> FormulaError:
    """A FormulaError for formulaic's failure on ``expr``, with the remedy for a column named
    after a Python keyword (formulaic reads ```class``` as a term but not inside a call)."""
    msg = f"{what}: {exc}"
    keywords = [n for n in _QUOTED.findall(expr) if keyword.iskeyword(n)]
    if keywords:
        msg += f"; column '{keywords[0]}' is a Python keyword, which formulaic cannot read inside a call: rename it"
    return FormulaError(msg)


def coefficient_names(cols) -> list[str]:
    return [INTERCEPT if c == "Intercept" else str(c) for c in cols]


def formulaic_types(data: pd.DataFrame, cols) -> pd.DataFrame:
    """``data`` with the columns of ``cols`` in the types formulaic reads as R reads them: an
    object column that holds only numbers (Python or numpy ints and floats, as after
    ``pd.Series([1.5, None], dtype=object)``) as floats, and text with pandas' NA
    (``dtype="string"``) as plain text.

    formulaic would code the first as a factor with one level per value, a silently different
    model (R has no such column: its numbers are numeric), and would try to read the second as
    numbers. Text stays a factor. The caller's frame is not modified."""
    convert = {}
    for c in cols:
        if c not in data.columns:
            continue
        dtype = data[c].dtype
        if dtype == np.dtype(object):
            values = data[c].dropna()
            if len(values) and values.map(_is_number).all():
                convert[c] = data[c].astype(float)
        elif isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA:
            convert[c] = data[c].astype(object)
    return data.assign(**convert) if convert else data


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def used_columns(parsed: ParsedFormula) -> set[str]:
    """Every data column the model reads (for the complete-case filter)."""
    if parsed.cbind:
        needed = names_in(parsed.cbind[0]) | names_in(parsed.cbind[1])
    else:
        needed = names_in(parsed.response)
    needed |= predictor_names(parsed)
    for off in parsed.offsets:
        needed |= names_in(off)
    for t in parsed.random:
        needed |= set(t.group)
    return needed


def predictor_names(parsed: ParsedFormula) -> set[str]:
    """The columns formulaic reads: the fixed part and the random terms' left sides."""
    names = formula_variables(parsed.fixed)
    for t in parsed.random:
        names |= formula_variables(t.expr)
    return names


def check_columns(needed: set[str], data: pd.DataFrame, formula: str, what: str = "formula") -> None:
    """Raise for a column the formula reads that the data lacks, or holds twice (``what``: the
    argument the formula came in, for the message: "formula", "ziformula", "dispformula")."""
    unique = data.columns.is_unique  # pandas caches it: the common case counts nothing
    for name in sorted(needed):
        if name not in data.columns:
            raise DataError(_missing_column(name, data.columns, formula, what))
        if not unique and (data.columns == name).sum() > 1:
            raise DataError(
                f"column '{name}' appears {(data.columns == name).sum()} times in the data; rename or drop "
                "the copies, e.g. data.loc[:, ~data.columns.duplicated()]"
            )


def _missing_column(name: str, columns, formula: str, what: str = "formula") -> str:
    """The message for a missing column; a dotted name (R's ``my.var``) is named whole."""
    dotted = re.findall(rf"(?<![\w.`]){re.escape(name)}\.[\w.]+", formula)
    shown = dotted[0] if dotted else name
    msg = f"column '{shown}' in {what} '{formula}' is not in the data{did_you_mean(shown, columns)}"
    if dotted:
        msg += f"; a name with dots, spaces or symbols is read whole when it is a column, or in backticks: `{shown}`"
    elif name in ("factor", "as.factor") and re.search(rf"(?<![\w.]){re.escape(name)}\s*\(", formula):
        msg += f"; R's {name}(x) is C(x) here (formulaic), or make x a pandas Categorical"
    return msg
