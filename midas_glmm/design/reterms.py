"""One random-effects term: grouping codes, per-row model columns and θ → λ.

A term ``(expr | g)`` with ``p`` columns and ``ℓ`` levels contributes ``q = ℓ·p`` random
effects, ordered level by level (the ``p`` effects of level 0, then of level 1, ...), as in
lme4. Its relative covariance factor is ``Λ = I_ℓ ⊗ λ`` where ``λ`` is a ``p × p`` lower
triangular matrix given by the term's slice of θ through its covariance structure
(:mod:`.covariance`): lme4's unstructured term fills it column by column.

The per-row columns are stored densely as an ``n × p`` array (``p`` is small); the ``n × q``
matrix ``Z`` is never formed densely — :meth:`ReTerm.sparse_Z` gives it in CSR form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DataError, FormulaError
from ..linalg.orderings import SMALL_Q_CROSSED
from .covariance import CarriesResidual, Diagonal, Structure, Unstructured, structure

__all__ = ["ITERATIVE_TAIL", "ReTerm", "ThetaMap", "dense_tail", "lme4_term_order", "tail_bound", "with_structure"]


@dataclass
class ReTerm:
    """A random-effects term evaluated on the data.

    Attributes
    ----------
    group_name : str
        Grouping factor name (``"a:b"`` for an interaction).
    group : tuple of str
        Columns whose interaction forms the groups.
    expr : str
        The term's left side, e.g. ``"1 + Days"``.
    columns : list of str
        Names of the ``p`` per-row columns, lme4 style (``"(Intercept)"``).
    levels : pandas.Index
        Level labels, in the order of the random effects.
    codes : ndarray of int, shape (n,)
        Level index of each row.
    Zcols : ndarray, shape (n, p)
        Per-row values of the term's columns.
    spec : object
        formulaic ModelSpec of ``expr``, to rebuild ``Zcols`` on new data.
    display : ndarray of int or None
        When the levels were reordered for the factorisation
        (:func:`~midas_glmm.linalg.orderings.fill_reducing_levels`), the positions of the levels
        in their original (sorted) order, for reporting.
    cov : Structure or None
        The covariance structure (:mod:`.covariance`); None is lme4's unstructured term.
    """

    group_name: str
    group: tuple[str, ...]
    expr: str
    columns: list[str]
    levels: pd.Index
    codes: np.ndarray
    Zcols: np.ndarray
    spec: object
    display: np.ndarray | None = None
    cov: Structure | None = None

    @property
    def structure(self) -> Structure:
        """The term's covariance structure (unstructured unless the formula said otherwise)."""
        if self.cov is not None:
            return self.cov
        us = self.__dict__.get("_unstructured")
        if us is None or us.p != self.p:
            us = self.__dict__["_unstructured"] = Unstructured(self.p)
        return us

    @property
    def label(self) -> str:
        """The term as the formula writes it: ``(1 + x | g)``, ``ar1(0 + tf | g)``."""
        prefix = self.cov.name if self.structured else ""
        return f"{prefix}({self.expr} | {self.group_name})"

    @property
    def carries_residual(self) -> bool:
        """Whether the term carries the residual of a model without one (``dispformula="~ 0"``)."""
        return isinstance(self.cov, CarriesResidual)

    @property
    def structured(self) -> bool:
        """Whether the term has a structure other than lme4's unstructured one."""
        return self.cov is not None and not isinstance(self.cov, Unstructured)

    def reordered(self, perm: np.ndarray) -> ReTerm:
        """The same term with its levels in the order ``perm`` (new position i holds old level
        ``perm[i]``); ``display`` keeps the way back."""
        newpos = np.empty(len(perm), np.int64)
        newpos[perm] = np.arange(len(perm))
        old_display = np.arange(len(perm)) if self.display is None else self.display
        return ReTerm(
            self.group_name,
            self.group,
            self.expr,
            self.columns,
            self.levels[perm],
            newpos[self.codes],
            self.Zcols,
            self.spec,
            newpos[old_display],
            self.cov,
        )

    @cached_property
    def is_intercept(self) -> bool:
        """A pure random intercept: one column, all ones."""
        return self.columns == ["(Intercept)"] and bool(np.all(self.Zcols[:, 0] == 1.0))

    @property
    def p(self) -> int:
        """Number of columns (random effects per level)."""
        return len(self.columns)

    @property
    def nlevels(self) -> int:
        """Number of levels ℓ of the grouping factor."""
        return len(self.levels)

    @property
    def q(self) -> int:
        """Number of random effects ℓ·p."""
        return self.nlevels * self.p

    @property
    def n_theta(self) -> int:
        """Number of θ elements: the lower triangle of λ, p(p+1)/2, for lme4's term; the
        structure's parameters otherwise."""
        return self.structure.n_par

    @cached_property
    def theta_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) in λ of each θ element of an unstructured term: the lower triangle
        column by column, as lme4."""
        if self.structured:
            raise TypeError(f"a {self.cov.name} term has no lower-triangle index")
        return Unstructured(self.p).index

    @property
    def theta_lower(self) -> np.ndarray:
        """Lower bounds of this term's θ: 0 for SDs (the diagonal of λ), −∞ elsewhere."""
        return self.structure.lower()

    @property
    def theta_start(self) -> np.ndarray:
        """lme4's starting θ: λ = I."""
        return self.structure.start()

    def theta_names(self) -> list[str]:
        """Names of this term's θ elements as ``group.col1`` or ``group.col2.col1`` (a structure's
        correlation parameters as ``group.rho``, ``group.cor_lag1``)."""
        return self.structure.par_names(self.columns, self.group_name)

    def lam(self, theta: np.ndarray) -> np.ndarray:
        """λ(θ): the ``p × p`` lower-triangular relative covariance factor."""
        return self.structure.lam(theta)

    def theta_of(self, lam: np.ndarray) -> np.ndarray:
        """θ of a λ (the inverse of :meth:`lam`) of an unstructured or diagonal term."""
        if self.structured and not isinstance(self.cov, Diagonal):
            raise TypeError(f"a {self.cov.name} term's θ is not read off λ")
        return np.diag(lam).copy() if self.structured else np.asarray(lam)[self.theta_index]

    def sparse_Z(self, weights: np.ndarray | None = None, rows: slice = slice(None)) -> sp.csr_matrix:
        """Z of this term for ``rows`` (all by default), rows scaled by ``weights``, in CSR form."""
        Zc, codes = self.Zcols[rows], self.codes[rows]
        n, p = Zc.shape
        vals = Zc if weights is None else Zc * weights[:, None]
        cols = (codes[:, None] * p + np.arange(p)).ravel()
        indptr = np.arange(0, n * p + 1, p)
        return sp.csr_matrix((vals.ravel(), cols, indptr), shape=(n, self.q))


class ThetaMap:
    """The θ layout of a model, in one place: the vector θ ↔ the per-term λ matrices, with bounds,
    lme4's start and names (lme4's order: term by term, each λ's lower triangle by column)."""

    def __init__(self, terms: list[ReTerm]):
        self.terms = terms
        sizes = [t.n_theta for t in terms]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.lower = np.concatenate([t.theta_lower for t in terms]) if terms else np.zeros(0)
        self.start = np.concatenate([t.theta_start for t in terms]) if terms else np.zeros(0)

    @cached_property
    def names(self) -> list[str]:
        """θ's names (:meth:`ReTerm.theta_names`, term by term), formed on first use: a fit reads them
        only in its messages (a map unpickled from before it kept them too)."""
        return [n for t in self.terms for n in t.theta_names()]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def slices(self) -> tuple[slice, ...]:
        """Each term's slice of θ."""
        return self._slices

    @cached_property
    def _slices(self) -> tuple[slice, ...]:
        """:meth:`slices`, formed once (on first use: a map unpickled from before it kept them too)."""
        return tuple(slice(int(a), int(b)) for a, b in zip(self.offsets[:-1], self.offsets[1:]))

    def lams(self, theta: np.ndarray) -> list[np.ndarray]:
        """λ_t(θ) for every term."""
        theta = np.asarray(theta, dtype=float)
        return [t.lam(theta[s]) for t, s in zip(self.terms, self._slices)]

    @property
    def linear(self) -> bool:
        """Whether every λ_t is linear in θ (unstructured and diagonal terms)."""
        return all(t.structure.linear for t in self.terms)

    @cached_property
    def jacobian(self) -> list[np.ndarray]:
        """∂λ_t/∂θ as one (len θ, p_t, p_t) array per term, when λ is linear in θ (a constant)."""
        if not self.linear:
            raise TypeError("λ is not linear in θ: use jacobian_at(theta)")
        per_k = [self.lams(e) for e in np.eye(len(self))]
        return [np.stack([lams[t] for lams in per_k]) if per_k else None for t in range(len(self.terms))]

    def jacobian_at(self, theta: np.ndarray) -> list[np.ndarray]:
        """∂λ_t/∂θ at θ, one (len θ, p_t, p_t) array per term: the constant :attr:`jacobian`
        when λ is linear, else central differences of each structured term's λ in its own
        parameters (p_t is small: a few evaluations of a p_t × p_t map)."""
        if self.linear:
            return self.jacobian
        theta = np.asarray(theta, dtype=float)
        out = []
        for t, sl in zip(self.terms, self.slices()):
            J = np.zeros((len(self), t.p, t.p))
            par = theta[sl]
            if t.structure.linear:
                for k in range(t.n_theta):
                    J[sl.start + k] = t.lam(np.eye(t.n_theta)[k])
            else:
                for k in range(t.n_theta):
                    h = 1e-6 * max(1.0, abs(par[k]))
                    up, down = par.copy(), par.copy()
                    up[k] += h
                    down[k] -= h
                    J[sl.start + k] = (t.lam(up) - t.lam(down)) / (2 * h)
            out.append(J)
        return out

    def singular(self, theta: np.ndarray, tol: float) -> bool:
        """lme4's ``isSingular`` for every structure: an SD (a diagonal element of λ) within
        ``tol`` of 0, or a structure's correlation at the limit of its range."""
        theta = np.asarray(theta, dtype=float)
        return any(t.structure.singular(theta[sl], tol) for t, sl in zip(self.terms, self.slices()))

    def theta(self, lams: list[np.ndarray]) -> np.ndarray:
        """θ from the per-term λ matrices (the inverse of :meth:`lams`) of unstructured and
        diagonal terms."""
        return np.concatenate([t.theta_of(lam) for t, lam in zip(self.terms, lams)])

    @staticmethod
    def _natural_names(t: ReTerm) -> list[str]:
        """A term's natural-parameter names with its columns and group: ``sd_Days|Subject``,
        ``cor_Days.(Intercept)|Subject``, ``rho|Subject``, ``sd|Subject`` (ar1's one SD)."""
        names = t.structure.natural(t.structure.start())[1]
        out = []
        for name in names:
            if name.startswith("sd_") and name[3:].isdigit():
                name = f"sd_{t.columns[int(name[3:])]}"
            elif name.startswith("cor_") and "." in name and name[4:].replace(".", "").isdigit():
                r, c = (int(v) for v in name[4:].split("."))
                name = f"cor_{t.columns[r]}.{t.columns[c]}"
            out.append(f"{name}|{t.group_name}")
        return out

    def sdcor_names(self) -> list[str]:
        """Names of the SDs and correlations of :meth:`sdcor`, as lme4's ``confint`` with
        ``oldNames = FALSE`` (``sd_(Intercept)|g``, ``cor_Days.(Intercept)|g``; a structure's
        own correlation ``rho|g``), then ``sigma``."""
        return [n for t in self.terms for n in self._natural_names(t)] + ["sigma"]

    def interval_names(self, fixed: list[str], sigma: bool, fixed_first: bool) -> list[str]:
        """Row names of an interval table: the SDs and correlations (:meth:`sdcor_names`), then
        ``sigma`` if the model has a scale, and the fixed effects ``fixed`` before or after
        (lme4's bootstrap and profile tables)."""
        varpar = self.sdcor_names()[:-1] + (["sigma"] if sigma else [])
        return list(fixed) + varpar if fixed_first else varpar + list(fixed)

    def sdcor(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        """θ on its natural scale, then σ: per unstructured term the SDs and correlations of
        Σ_t = σ²λ_tλ_t' (its lower triangle by column: an SD on the diagonal, a correlation below
        it); per structured term its own parameters (SDs × σ, then ρ or the lag correlations)."""
        theta = np.asarray(theta, dtype=float)
        out = [t.structure.natural(theta[sl], sigma)[0] for t, sl in zip(self.terms, self.slices())]
        return np.concatenate(out + [[sigma]])

    def sdcor_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) limits of the values of :meth:`sdcor`: [0, ∞) for SDs and σ, each
        correlation's range (cs's ρ > −1/(p − 1))."""
        lo = [t.structure.natural_bounds()[0] for t in self.terms] + [[0.0]]
        hi = [t.structure.natural_bounds()[1] for t in self.terms] + [[np.inf]]
        return np.concatenate(lo), np.concatenate(hi)

    @cached_property
    def _natural_sizes(self) -> list[int]:
        """How many natural values (:meth:`sdcor`) each term has."""
        return [len(t.structure.natural(t.structure.start())[1]) for t in self.terms]

    def theta_from_sdcor(self, v: np.ndarray) -> np.ndarray | None:
        """The θ of natural values ``v`` laid out as :meth:`sdcor` (None when they make no valid
        covariance: correlations outside their range or not positive semi-definite)."""
        sigma = v[-1]
        out, i = [], 0
        for t, k in zip(self.terms, self._natural_sizes):
            par = t.structure.par_from_natural(np.asarray(v[i : i + k], dtype=float), sigma)
            if par is None:
                return None
            out.append(par)
            i += k
        return np.concatenate(out) if out else np.zeros(0)

    def covariances(self, theta: np.ndarray, scale: float = 1.0) -> list[np.ndarray]:
        """Σ_t = scale·λ_tλ_t' per term (scale σ² for an LMM, 1 for a GLMM: its λ is on the link
        scale; a term carrying the residual adds it: :class:`~.covariance.CarriesResidual`)."""
        theta = np.asarray(theta, dtype=float)
        return [t.structure.covariance(theta[s], scale) for t, s in zip(self.terms, self.slices())]


def with_structure(term: ReTerm, name: str, written: str) -> ReTerm:
    """``term`` with the covariance structure ``name`` (the formula's ``ar1(...)``; ``written``
    is the term as written, for the error): lme4's unstructured term, and a one-column diag
    term (the same thing), keep none."""
    if name == "us" or (name == "diag" and term.p == 1):
        return term
    if term.p < 2 and name != "diag":
        raise FormulaError(
            f"the {name} term '{written}' has one column ({term.columns[0]}); {name} correlates two or more: "
            f"over the levels of a factor write e.g. {name}(0 + C(time) | g), time a factor of equally spaced times"
        )
    times = None
    if name in ("ar1", "toep"):
        _check_time_order(term, written)
    if name == "ou":
        times = column_times(term)
        if times is None or len(np.unique(times)) < term.p:
            raise DataError(
                f"ou in '{written}' reads each column's time from its level ({', '.join(term.columns)}): write "
                "ou(0 + C(time) | g) (or glmmTMB's numFactor(time)) on a numeric time column, distinct times"
            )
    term.cov = structure(name, term.p, times)
    return term


def column_times(term: ReTerm) -> np.ndarray | None:
    """The times the columns of a factor's indicators name (``C(t)[2.5]`` → 2.5), or None when
    a column names no number."""
    labels = [re.search(r"\[(?:T\.)?([^\]]*)\]$", c) for c in term.columns]
    if not all(labels):
        return None
    try:
        return np.array([float(m.group(1)) for m in labels])
    except ValueError:
        return None


def _check_time_order(term: ReTerm, written: str) -> None:
    """An ar1 or toep term correlates its columns by their order, which is the order of the
    factor's levels: levels that are numbers out of numeric order (text sorted as text: 10, 12,
    14, 8) would correlate the wrong times, so they are refused."""
    values = column_times(term)
    if values is None:
        return
    steps = np.diff(values)
    if np.all(steps > 0) or np.all(steps < 0):
        return
    shown = ", ".join(f"{v:g}" for v in values)
    raise DataError(
        f"the columns of '{written}' are in the order {shown}, which is not the order of the times they "
        "name: ar1 and toep correlate neighbouring columns. Make the column a pandas Categorical with its "
        "categories in time order, or write C(time) on a numeric column"
    )


def lme4_term_order(nlevels: list[int]) -> list[int]:
    """lme4's order of random-effects terms: if any term has more levels than the one before,
    sort by decreasing number of levels (ties end up in reverse formula order, as in lme4)."""
    if not any(b > a for a, b in zip(nlevels, nlevels[1:])):
        return list(range(len(nlevels)))
    stable_increasing = sorted(range(len(nlevels)), key=lambda i: nlevels[i])
    return stable_increasing[::-1]


#: random effects in the exact factor's dense tail from which fit(solver="auto") takes the
#: iterative solver: a 5000-square tail is 200 MB and ~1 s per factorisation on two cores, ~30 of
#: them per fit, where the iterative path costs a few passes over the rows per evaluation
ITERATIVE_TAIL = 5000


def tail_bound(terms: list[ReTerm]) -> int:
    """An upper bound of :func:`dense_tail` without reading the rows: every term but the one with
    the most random effects counted as crossed (a fit checks it first and skips the O(rows) pass
    when even the bound is small)."""
    return sum(t.q for t in terms) - max((t.q for t in terms), default=0)


def dense_tail(terms: list[ReTerm]) -> int:
    """An estimate of the exact factor's dense tail: the random effects of every term the term
    with the most random effects is not nested in (nested terms add no fill-in; crossed ones
    fill a block as large as their levels). O(rows), no symbolic analysis; without the rows in
    memory (a Dask design) every other term is taken as crossed."""
    if len(terms) < 2:
        return 0
    e = max(range(len(terms)), key=lambda i: terms[i].q)
    ce = terms[e].codes
    if not len(ce):  # rows not in memory (Dask): every other term counts as crossed
        return tail_bound(terms)
    tail = 0
    for i, t in enumerate(terms):
        if i == e:
            continue
        first = np.empty(terms[e].nlevels, dtype=t.codes.dtype)
        first[ce[::-1]] = t.codes[::-1]  # the first level of t seen with each level of e
        if not np.array_equal(first[ce], t.codes):  # not nested: crossed with e
            tail += t.q
    return tail


def small_crossed(terms: list[ReTerm]) -> bool:
    """Several crossed terms (:func:`dense_tail` > 0) of at most
    :data:`~midas_glmm.linalg.orderings.SMALL_Q_CROSSED` random effects: an LMM of them is
    factored as one dense block (engine.lmm.LMMCriterion), so its levels need no order."""
    return len(terms) > 1 and sum(t.q for t in terms) <= SMALL_Q_CROSSED and dense_tail(terms) > 0
