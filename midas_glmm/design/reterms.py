"""One random-effects term: grouping codes, per-row model columns and θ → λ.

A term ``(expr | g)`` with ``p`` columns and ``ℓ`` levels contributes ``q = ℓ·p`` random
effects, ordered level by level (the ``p`` effects of level 0, then of level 1, ...), as in
lme4. Its relative covariance factor is ``Λ = I_ℓ ⊗ λ`` where ``λ`` is a ``p × p`` lower
triangular matrix filled, column by column, from the term's slice of θ.

The per-row columns are stored densely as an ``n × p`` array (``p`` is small); the ``n × q``
matrix ``Z`` is never formed densely — :meth:`ReTerm.sparse_Z` gives it in CSR form.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["ReTerm", "ThetaMap", "lme4_term_order"]


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
        """Number of θ elements: the lower triangle of λ, p(p+1)/2."""
        return self.p * (self.p + 1) // 2

    @cached_property
    def theta_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) in λ of each θ element: the lower triangle column by column, as lme4."""
        rows, cols = np.tril_indices(self.p)
        order = np.lexsort((rows, cols))
        return rows[order], cols[order]

    @property
    def theta_lower(self) -> np.ndarray:
        """Lower bounds of this term's θ: 0 on the diagonal of λ, −∞ elsewhere."""
        rows, cols = self.theta_index
        return np.where(rows == cols, 0.0, -np.inf)

    @property
    def theta_start(self) -> np.ndarray:
        """lme4's starting θ: λ = I."""
        return np.where(np.isfinite(self.theta_lower), 1.0, 0.0)

    def theta_names(self) -> list[str]:
        """Names of this term's θ elements as ``group.col1`` or ``group.col2.col1``."""
        out = []
        for r, c in zip(*self.theta_index):
            if r == c:
                out.append(f"{self.group_name}.{self.columns[r]}")
            else:
                out.append(f"{self.group_name}.{self.columns[r]}.{self.columns[c]}")
        return out

    def lam(self, theta: np.ndarray) -> np.ndarray:
        """λ(θ): the ``p × p`` lower-triangular relative covariance factor."""
        lam = np.zeros((self.p, self.p))
        lam[self.theta_index] = theta
        return lam

    def theta_of(self, lam: np.ndarray) -> np.ndarray:
        """θ of a λ (the inverse of :meth:`lam`)."""
        return np.asarray(lam)[self.theta_index]

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
        self.names = [n for t in terms for n in t.theta_names()]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def slices(self) -> list[slice]:
        """Each term's slice of θ."""
        return [slice(a, b) for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def lams(self, theta: np.ndarray) -> list[np.ndarray]:
        """λ_t(θ) for every term."""
        theta = np.asarray(theta, dtype=float)
        return [t.lam(theta[s]) for t, s in zip(self.terms, self.slices())]

    @cached_property
    def jacobian(self) -> list[np.ndarray]:
        """∂λ_t/∂θ as one (len θ, p_t, p_t) array per term (λ is linear in θ)."""
        per_k = [self.lams(e) for e in np.eye(len(self))]
        return [np.stack([lams[t] for lams in per_k]) if per_k else None for t in range(len(self.terms))]

    def theta(self, lams: list[np.ndarray]) -> np.ndarray:
        """θ from the per-term λ matrices (the inverse of :meth:`lams`)."""
        return np.concatenate([t.theta_of(lam) for t, lam in zip(self.terms, lams)])

    def sdcor_names(self) -> list[str]:
        """Names of the SDs and correlations of :meth:`sdcor`, as lme4's ``confint`` with
        ``oldNames = FALSE`` (``sd_(Intercept)|g``, ``cor_Days.(Intercept)|g``), then ``sigma``."""
        names = []
        for t in self.terms:
            for c in range(t.p):
                for r in range(c, t.p):
                    if r == c:
                        names.append(f"sd_{t.columns[r]}|{t.group_name}")
                    else:
                        names.append(f"cor_{t.columns[r]}.{t.columns[c]}|{t.group_name}")
        return names + ["sigma"]

    def interval_names(self, fixed: list[str], sigma: bool, fixed_first: bool) -> list[str]:
        """Row names of an interval table: the SDs and correlations (:meth:`sdcor_names`), then
        ``sigma`` if the model has a scale, and the fixed effects ``fixed`` before or after
        (lme4's bootstrap and profile tables)."""
        varpar = self.sdcor_names()[:-1] + (["sigma"] if sigma else [])
        return list(fixed) + varpar if fixed_first else varpar + list(fixed)

    def sdcor(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        """θ as the SDs and correlations of Σ_t = σ²λ_tλ_t' (per term, its lower triangle by
        column: an SD on the diagonal, a correlation below it), then σ."""
        out = []
        for t, lam in zip(self.terms, self.lams(theta)):
            Sig = sigma**2 * lam @ lam.T
            sd = np.sqrt(np.diag(Sig))
            for c in range(t.p):
                for r in range(c, t.p):
                    out.append(sd[r] if r == c else (Sig[r, c] / (sd[r] * sd[c]) if sd[r] * sd[c] > 0 else 0.0))
        return np.array(out + [sigma])

    def theta_from_sdcor(self, v: np.ndarray) -> np.ndarray | None:
        """The θ of SDs and correlations ``v`` laid out as :meth:`sdcor` (None when the
        correlations do not make a positive semi-definite matrix)."""
        sigma = v[-1]
        out, i = [], 0
        for t in self.terms:
            p = t.p
            sd, R = np.zeros(p), np.eye(p)
            for c in range(p):
                for r in range(c, p):
                    if r == c:
                        sd[r] = v[i]
                    else:
                        R[r, c] = R[c, r] = v[i]
                    i += 1
            Sig = np.outer(sd, sd) * R
            try:
                lam = np.linalg.cholesky(Sig + 1e-14 * np.eye(p) * max(1.0, np.max(np.abs(Sig))))
            except np.linalg.LinAlgError:
                return None
            lam /= sigma
            rows, cols = np.tril_indices(p)
            order = np.lexsort((rows, cols))
            out.extend(lam[rows[order], cols[order]])
        return np.array(out)

    def covariances(self, theta: np.ndarray, scale: float = 1.0) -> list[np.ndarray]:
        """Σ_t = scale·λ_tλ_t' per term (scale σ² for an LMM, 1 for a GLMM: its λ is on the link scale)."""
        return [scale * lam @ lam.T for lam in self.lams(theta)]


def lme4_term_order(nlevels: list[int]) -> list[int]:
    """lme4's order of random-effects terms: if any term has more levels than the one before,
    sort by decreasing number of levels (ties end up in reverse formula order, as in lme4)."""
    if not any(b > a for a, b in zip(nlevels, nlevels[1:])):
        return list(range(len(nlevels)))
    stable_increasing = sorted(range(len(nlevels)), key=lambda i: nlevels[i])
    return stable_increasing[::-1]
