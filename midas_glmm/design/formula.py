"""Parse lme4-style formulas into a response, a fixed part and random-effect terms.

``"y ~ x + (x | g) + (1 | a/b)"`` becomes a :class:`ParsedFormula` whose ``fixed`` string is
handed to formulaic and whose ``random`` list holds one :class:`RandomTermSpec` per
random-effects term after expansion:

* ``(x || g)``  → ``(1 | g) + (0 + x | g)``           (uncorrelated terms)
* ``(1 | a/b)`` → ``(1 | b:a) + (1 | a)``             (nesting, named as lme4 names it)
* ``(1 | a:b)`` → one term grouped by the interaction of ``a`` and ``b``
* ``ar1(0 + tf | g)`` → one term with glmmTMB's covariance structure ``ar1`` (also ``us``,
  ``diag``, ``cs``, ``toep``; ``us(...)`` is the plain ``(... | g)``)

R's ``^`` is a power wherever R evaluates arithmetic (``I(x^2)``, ``log(x^2)``, the response),
but Python's ``^`` is a bitwise XOR: :func:`r_power` rewrites those ``^`` as ``**`` so that an
lme4 formula means here what it means in lme4.

This module only handles text: it knows nothing about data columns.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace

from ..errors import FormulaError

__all__ = ["ParsedFormula", "RandomTermSpec", "parse_formula", "r_power", "split_top_level"]


@dataclass(frozen=True)
class RandomTermSpec:
    """One random-effects term ``(expr | g1:g2:...)``.

    Attributes
    ----------
    expr : str
        The left side of the bar, a formulaic right-hand side such as ``"1 + x"``.
    group : tuple of str
        Names of the factors whose interaction defines the groups.
    name : str
        The grouping factor's name when it is not ``":".join(group)`` (nesting).
    structure : str
        The covariance structure (:mod:`~midas_glmm.design.covariance`): ``"us"`` (lme4's
        unstructured term), ``"diag"``, ``"cs"``, ``"ar1"`` or ``"toep"``.
    """

    expr: str
    group: tuple[str, ...]
    name: str = ""
    structure: str = "us"

    @property
    def group_name(self) -> str:
        """Name of the grouping factor, as lme4 writes it (``"a:b"``; ``"b:a"`` for ``a/b``)."""
        return self.name or ":".join(self.group)

    def __str__(self) -> str:
        if self.structure != "us":
            return f"{self.structure}({self.expr} | {self.group_name})"
        return f"({self.expr} | {self.group_name})"


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into its parts.

    Attributes
    ----------
    response : str
        The left-hand side (``""`` if absent); ``cbind(s, f)`` is kept verbatim.
    fixed : str
        The fixed-effects right-hand side for formulaic, ``offset(...)`` terms removed.
    offsets : list of str
        Expressions inside ``offset(...)`` terms.
    random : list of RandomTermSpec
        Random-effects terms after expanding ``||`` and ``/``.
    cbind : tuple of str or None
        ``(successes, failures)`` expressions when the response is ``cbind(s, f)``.
    """

    response: str
    fixed: str
    offsets: list[str] = field(default_factory=list)
    random: list[RandomTermSpec] = field(default_factory=list)
    cbind: tuple[str, str] | None = None


def _check_parentheses(text: str, where: str) -> None:
    depth = 0
    for pos, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unmatched ')' at position {pos} of {where} '{text}':\n  {text}\n  {' ' * pos}^")
    if depth > 0:
        pos = _last_unclosed(text)
        raise FormulaError(
            f"unclosed '(' at position {pos} of {where} '{text}': add the missing ')'\n  {text}\n  {' ' * pos}^"
        )


def _last_unclosed(text: str) -> int:
    stack = []
    for pos, ch in enumerate(text):
        if ch == "(":
            stack.append(pos)
        elif ch == ")" and stack:
            stack.pop()
    return stack[-1] if stack else 0


def split_top_level(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` where it is outside all parentheses and brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _opens_call(text: str, pos: int) -> bool:
    """True if the ``(`` at ``pos`` opens a function call (``I(``, ``np.log(``), not a group."""
    before = text[:pos].rstrip()
    return bool(before) and (before[-1].isalnum() or before[-1] in "_.")


def r_power(text: str, everywhere: bool = False) -> str:
    """R's power operator ``^`` as Python's ``**`` where Python evaluates the text.

    Inside a function call (``I(x^2)``, ``np.log(x^2)``) the arguments are Python, in which ``^``
    is a bitwise XOR; R reads them as arithmetic, so ``^`` becomes ``**``. Between formula terms
    (``(a + b)^2``, interactions up to order 2) ``^`` keeps its formula meaning, the same in R
    and formulaic. With ``everywhere`` (a response or an offset, evaluated as a whole) every
    ``^`` becomes ``**``. Quoted names and strings are left alone.

    Examples
    --------
    >>> r_power("x + I(x^2) + (a + b)^2")
    'x + I(x**2) + (a + b)^2'
    >>> r_power("log(y)^2", everywhere=True)
    'log(y)**2'
    """
    out: list[str] = []
    calls: list[bool] = []  # one entry per open parenthesis: does it open a call?
    quote = ""
    for pos, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "`'\"":
            quote = ch
        elif ch == "(":
            calls.append(_opens_call(text, pos))
        elif ch == ")" and calls:
            calls.pop()
        elif ch == "^" and (everywhere or any(calls)):
            ch = "**"
        out.append(ch)
    return "".join(out)


def _strip_outer(text: str) -> str | None:
    """``"(a | b)"`` → ``"a | b"`` if the parentheses enclose the whole text, else None."""
    text = text.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return None
    depth = 0
    for pos, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and pos < len(text) - 1:
            return None
    return text[1:-1]


#: a column name as R reads one (a letter of any script, "_" or "." first), or any name in backticks
_NAME = re.compile(r"^(?:[^\W\d]|\.)[\w.]*$|^`[^`]+`$")


def _parse_group(text: str, term: str) -> list[tuple[tuple[str, ...], str]]:
    """Grouping factors and their lme4 names, innermost first as lme4 lists them.

    ``"a:b"`` → ``[(("a", "b"), "a:b")]``; ``"a/b"`` → ``[(("b", "a"), "b:a"), (("a",), "a")]``;
    ``"a/b/c"`` → ``c:(b:a)``, ``b:a``, ``a``."""
    text = text.strip()
    if not text:
        raise FormulaError(f"random-effects term '{term}' has no grouping factor after '|'")
    nested = [p.strip() for p in split_top_level(text, "/")]
    groups: list[tuple[tuple[str, ...], str]] = []
    prefix: tuple[str, ...] = ()
    prefix_name = ""
    for piece in nested:
        written = [f.strip() for f in split_top_level(piece, ":")]
        for f in written:
            if not _NAME.match(f) or f == "``":
                raise FormulaError(
                    f"grouping factor '{piece}' in '{term}' is not a column name; write (expr | g), "
                    "(expr | a/b) or (expr | a:b), with a name holding spaces or symbols in backticks: `my g`"
                )
        factors = tuple(f.strip("`") for f in written)
        name = ":".join(factors)
        if prefix:
            inner = f"({prefix_name})" if len(prefix) > 1 else prefix_name
            name = f"{name}:{inner}"
        prefix = factors + prefix
        prefix_name = name
        groups.append((prefix, name))
    return groups[::-1]


def _split_uncorrelated(expr: str, term: str) -> list[str]:
    """``"1 + x + z"`` → ``["1", "0 + x", "0 + z"]`` for a ``||`` term."""
    pieces = [p.strip() for p in split_top_level(expr, "+") if p.strip()]
    intercept = True
    rest: list[str] = []
    for p in pieces:
        for i, q in enumerate(split_top_level(p, "-")):
            q = q.strip()
            if not q:
                continue
            removed = i > 0
            if q in ("0", "1"):
                intercept = intercept and not (q == "0" or removed)
            elif removed:
                raise FormulaError(f"cannot remove '{q}' inside the uncorrelated term '{term}'")
            else:
                rest.append(q)
    out = ["1"] if intercept else []
    out += [f"0 + {q}" for q in rest]
    if not out:
        raise FormulaError(f"random-effects term '{term}' has no columns")
    return out


#: glmmTMB's covariance structures written as a call around a bar term: ``ar1(0 + tf | g)``
STRUCTURE_CALL = re.compile(r"^(us|diag|cs|ar1|toep|ou)\s*\((.*)\)$", flags=re.S)
#: glmmTMB structures this library does not fit (yet): named in the error
OTHER_STRUCTURES = ("exp", "gau", "mat", "rr", "homdiag", "homcs", "propto")


def _parse_bar(inner: str, term: str, structure: str = "us") -> list[RandomTermSpec]:
    double = split_top_level(inner, "||")
    if len(double) == 2 and structure != "us":
        raise FormulaError(
            f"'{term}' puts '||' inside {structure}(...); write {structure}(expr | g): the structure says "
            "how the columns are correlated"
        )
    if len(double) == 2:
        lhs, rhs, correlated = double[0], double[1], False
    else:
        single = split_top_level(inner, "|")
        if len(single) != 2:
            raise FormulaError(f"random-effects term '{term}' must have exactly one '|' or '||'")
        lhs, rhs, correlated = single[0], single[1], True
    lhs = lhs.strip()
    if not lhs:
        raise FormulaError(f"random-effects term '{term}' has nothing before the bar; write (1 | g)")
    groups = _parse_group(rhs, term)
    if structure != "us":  # glmmTMB's numFactor(t): the factor of numeric times, C(t) here
        lhs = re.sub(r"(?<![\w.])numFactor\(([^()]*)\)", r"C(\1)", lhs)
    exprs = [lhs] if correlated else _split_uncorrelated(lhs, term)
    return [RandomTermSpec(e, g, name, structure) for g, name in groups for e in exprs]


def _is_bar_term(piece: str) -> bool:
    inner = _strip_outer(piece)
    return inner is not None and len(split_top_level(inner, "|")) > 1


def _structure_call(piece: str) -> tuple[str, str] | None:
    """(structure, inner text) of a term written as ``ar1(0 + tf | g)``, else None; a call of
    another name around a bar term is a FormulaError naming the structures there are."""
    m = STRUCTURE_CALL.fullmatch(piece)
    if m and _strip_outer(piece[piece.index("(") :]) is not None:
        inner = m.group(2)
        if len(split_top_level(inner, "|")) > 1:
            return m.group(1), inner
    call = re.fullmatch(r"([A-Za-z_][\w.]*)\s*\((.*)\)", piece, flags=re.S)
    if call and _strip_outer(piece[piece.index("(") :]) is not None and len(split_top_level(call.group(2), "|")) > 1:
        name = call.group(1)
        known = "us, diag, cs, ar1, toep and ou"
        if name in OTHER_STRUCTURES:
            raise FormulaError(
                f"the covariance structure '{name}' in '{piece}' is not available; the structures are {known}"
            )
        raise FormulaError(f"'{piece}' is no random-effects term: write (expr | g) or a structure ({known})")
    return None


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4-style formula into response, fixed part, offsets and random terms.

    Parameters
    ----------
    formula : str
        For example ``"score ~ hours + (1 | school)"``.

    Returns
    -------
    ParsedFormula

    Examples
    --------
    >>> p = parse_formula("y ~ x + (x || g) + (1 | a/b)")
    >>> p.fixed
    'x'
    >>> [str(t) for t in p.random]
    ['(1 | g)', '(0 + x | g)', '(1 | b:a)', '(1 | a)']
    """
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError("the formula must be a non-empty string such as 'y ~ x + (1 | g)'")
    parsed = _parse_cached(formula)  # a refitted formula (a simulation, a bootstrap) is read once
    return replace(parsed, offsets=list(parsed.offsets), random=list(parsed.random))  # lists of its own


@functools.lru_cache(maxsize=256)
def _parse_cached(formula: str) -> ParsedFormula:
    """:func:`parse_formula`'s work (errors are raised, not cached)."""
    _check_parentheses(formula, "the formula")
    sides = split_top_level(formula, "~")
    if len(sides) != 2:
        raise FormulaError(
            f"formula '{formula}' must contain exactly one '~' outside parentheses (response ~ predictors)"
        )
    response, rhs = r_power(sides[0].strip(), everywhere=True), r_power(sides[1].strip())
    if not rhs:
        raise FormulaError(f"formula '{formula}' has nothing after '~'")

    cbind = None
    m = re.fullmatch(r"cbind\((.*)\)", response, flags=re.S)
    if m:
        args = [a.strip() for a in split_top_level(m.group(1), ",")]
        if len(args) != 2 or not all(args):
            raise FormulaError(f"'{response}' must have two arguments: cbind(successes, failures)")
        cbind = (args[0], args[1])

    fixed_terms: list[str] = []
    offsets: list[str] = []
    random: list[RandomTermSpec] = []
    for piece in split_top_level(rhs, "+"):
        stripped = piece.strip()
        if not stripped:
            raise FormulaError(f"empty term (a stray '+') in '{rhs}'")
        if _is_bar_term(stripped):
            random.extend(_parse_bar(_strip_outer(stripped) or "", stripped))
            continue
        structured = _structure_call(stripped)
        if structured is not None:
            random.extend(_parse_bar(structured[1], stripped, structured[0]))
            continue
        if "|" in stripped and not _is_bar_term(stripped):
            raise FormulaError(
                f"'{stripped}' uses '|' outside a parenthesised random-effects term; write (expr | group)"
            )
        off = re.fullmatch(r"offset\((.*)\)", stripped, flags=re.S)
        if off:
            offsets.append(off.group(1).strip())
            continue
        fixed_terms.append(stripped)
    fixed = " + ".join(fixed_terms) if fixed_terms else "1"
    return ParsedFormula(response, fixed, offsets, random, cbind)


def update_formula(old: str, new: str) -> str:
    """lme4's ``update()`` of a formula: in ``new``, ``.`` (or nothing) on the left stands for
    ``old``'s response and ``.`` on the right for its terms; ``+ term`` adds a term and ``- term`` removes
    one (written as in ``old``, spaces aside).

    Examples
    --------
    >>> update_formula("y ~ x + (1 | g)", ". ~ . + z - (1 | g) + (x | g)")
    'y ~ x + z + (x | g)'
    >>> update_formula("y ~ x - 1 + (1 | g)", "~ . + z")
    'y ~ x - 1 + (1 | g) + z'
    """
    if "~" not in new:
        raise FormulaError(f"the new formula {new!r} has no '~'; write e.g. '. ~ . + x'")
    old_lhs, old_rhs = old.split("~", 1) if "~" in old else ("", old)
    new_lhs, new_rhs = new.split("~", 1)
    lhs = old_lhs.strip() if new_lhs.strip() in ("", ".") else new_lhs.strip()

    def norm(term: str) -> str:
        return "".join(term.split())

    # signed terms: "- 1" in the old formula (no intercept) stays a removal in the new one
    terms: list[tuple[str, str]] = []
    for sign, term in _signed_terms(new_rhs):
        if term == ".":
            terms += [
                (sg, t) for sg, t in _signed_terms(old_rhs) if (sg, norm(t)) not in {(a, norm(b)) for a, b in terms}
            ]
        elif sign == "+":
            terms = [(sg, t) for sg, t in terms if not (sg == "-" and norm(t) == norm(term))]
            if ("+", norm(term)) not in {(a, norm(b)) for a, b in terms}:
                terms.append(("+", term))
        else:
            keep = [(sg, t) for sg, t in terms if not (sg == "+" and norm(t) == norm(term))]
            if len(keep) == len(terms):
                if norm(term) not in ("0", "1"):
                    present = ", ".join(t for sg, t in terms if sg == "+")
                    raise FormulaError(f"cannot remove '{term}': the formula has no such term (its terms: {present})")
                if ("-", norm(term)) not in {(a, norm(b)) for a, b in keep}:
                    keep.append(("-", term))
            terms = keep
    if not any(sg == "+" for sg, _ in terms):
        raise FormulaError(f"updating {old!r} with {new!r} leaves no terms on the right of '~'")
    first, rest = terms[0], terms[1:]
    text = (first[1] if first[0] == "+" else f"-{first[1]}") + "".join(f" {sg} {t}" for sg, t in rest)
    return f"{lhs} ~ {text}" if lhs else f"~ {text}"


def _signed_terms(rhs: str) -> list[tuple[str, str]]:
    """The '+'/'-'-separated terms at the top level of a right-hand side, with their signs."""
    out, depth, sign, cur, quoted = [], 0, "+", "", False
    for ch in rhs:
        if ch == "`":
            quoted = not quoted
        elif quoted:
            pass
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if depth == 0 and not quoted and ch in "+-":
            if cur.strip():
                out.append((sign, cur.strip()))
            sign, cur = ch, ""
            continue
        cur += ch
    if cur.strip():
        out.append((sign, cur.strip()))
    return out
