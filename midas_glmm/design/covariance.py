"""Covariance structures of a random-effects term: how its parameters give its factor λ.

A term ``(expr | g)`` with p columns has, per level, random effects b ~ N(0, Σ) with
Σ = s·λλ' (s = σ² for an LMM, 1 for a GLMM). A structure maps the term's parameter vector (its
slice of θ, the optimizer's coordinates) to the p × p factor λ; the engine never needs more.

* ``us`` — unstructured (lme4's ``(x | g)``): the lower triangle of λ, column by column; the
  diagonal ≥ 0. Linear in the parameters.
* ``diag`` — independent columns with their own SDs (``(x || g)`` as one term): λ = diag(d), d ≥ 0.
* ``cs`` — compound symmetry with heterogeneous SDs (glmmTMB's): Σ_ij = d_i d_j ρ (i ≠ j), ρ in
  (−1/(p−1), 1) as ρ = logistic(a)(1 + c) − c, c = 1/(p − 1).
* ``ar1`` — first-order autoregressive over equally spaced columns (a time factor): one SD d,
  Σ_ij = d² ρ^|i−j|, ρ = a/√(1 + a²) in (−1, 1).
* ``toep`` — Toeplitz with heterogeneous SDs: Σ_ij = d_i d_j r_|i−j|, the autocorrelations r from
  p − 1 partial autocorrelations φ_k = a_k/√(1 + a_k²) (Durbin–Levinson), so that any a gives
  a valid correlation matrix.
* ``ou`` — Ornstein–Uhlenbeck over the columns' times t (unequally spaced): one SD d,
  Σ_ij = d² exp(−exp(a)·|t_i − t_j|) (glmmTMB's), the times read from the columns' levels.

SDs are relative to σ for an LMM (as lme4's θ) and bounded below by 0 (a singular fit sits on
the bound); correlation parameters are unbounded (ρ → ±1 at a → ±∞, where the fit is singular too).
λ = diag(d)·chol(R) for the correlated structures.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = [
    "Structure",
    "Unstructured",
    "Diagonal",
    "CompoundSymmetry",
    "AR1",
    "Toeplitz",
    "OrnsteinUhlenbeck",
    "CarriesResidual",
    "structure",
    "STRUCTURES",
]

#: a correlation this close to ±1 (or to cs's lower limit) is on the boundary of its range
RHO_BOUNDARY = 1e-6


class Structure:
    """The covariance structure of one term with ``p`` columns (see the module docstring)."""

    name = ""
    #: λ is linear in the parameters (its derivative is a constant)
    linear = False

    def __init__(self, p: int):
        self.p = int(p)

    def __repr__(self) -> str:
        return f"{self.name}({self.p})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.p == other.p

    def __hash__(self) -> int:
        return hash((self.name, self.p))

    # what each structure says
    @property
    def n_par(self) -> int:
        raise NotImplementedError

    def lower(self) -> np.ndarray:
        """Lower bounds of the parameters (0 for SDs, −∞ for the others)."""
        raise NotImplementedError

    def start(self, sd: np.ndarray | None = None) -> np.ndarray:
        """The parameters of λ = diag(sd) (uncorrelated; sd = 1 when None): lme4's start λ = I,
        or a moment start's SDs."""
        raise NotImplementedError

    def lam(self, par: np.ndarray) -> np.ndarray:
        """λ(par), p × p."""
        raise NotImplementedError

    def par_names(self, columns: list[str], group: str) -> list[str]:
        """Names of the parameters (θ's names)."""
        raise NotImplementedError

    def natural(self, par: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, list[str]]:
        """The structure's own parameters on their natural scale — SDs (times ``scale``: σ for
        an LMM) and correlation parameters — and their names by column position, without the
        group: ``sd_0``, ``cor_1.0``, ``rho``, ``cor_lag1``, ``sd`` (ar1's one SD)."""
        raise NotImplementedError

    def par_from_natural(self, v: np.ndarray, scale: float = 1.0) -> np.ndarray | None:
        """The parameters of natural values ``v`` (None when they give no valid structure)."""
        raise NotImplementedError

    def natural_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) limits of the natural values: [0, ∞) for an SD, a correlation's range."""
        names = self.natural(self.start())[1]
        sd = np.array([n.startswith("sd") for n in names])
        return np.where(sd, 0.0, -1.0), np.where(sd, np.inf, 1.0)

    def singular(self, par: np.ndarray, tol: float) -> bool:
        """Whether the parameters are on the boundary (an SD at 0, a correlation at its limit)."""
        raise NotImplementedError

    def covariance(self, par: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """The term's covariance Σ = scale·λλ' (σ² for an LMM, 1 for a GLMM)."""
        lam = self.lam(par)
        return scale * lam @ lam.T


@lru_cache(maxsize=64)
def _lower_by_column(p: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.tril_indices(p)
    order = np.lexsort((rows, cols))
    rows, cols = rows[order], cols[order]
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


class Unstructured(Structure):
    """lme4's unstructured term: the lower triangle of λ by column, the diagonal ≥ 0."""

    name = "us"
    linear = True

    @property
    def n_par(self) -> int:
        return self.p * (self.p + 1) // 2

    @property
    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) in λ of each parameter: the lower triangle column by column, as lme4."""
        return _lower_by_column(self.p)

    def lower(self):
        rows, cols = self.index
        return np.where(rows == cols, 0.0, -np.inf)

    def start(self, sd=None):
        rows, cols = self.index
        sd = np.ones(self.p) if sd is None else np.asarray(sd, dtype=float)
        return np.where(rows == cols, sd[rows], 0.0)

    def lam(self, par):
        if self.p == 1:  # a scalar term (every evaluation of most models): λ = [θ], a new array
            return np.array(par, dtype=float).reshape(1, 1)
        lam = np.zeros((self.p, self.p))
        lam[self.index] = par
        return lam

    def par_of(self, lam: np.ndarray) -> np.ndarray:
        """The parameters of a lower-triangular λ."""
        return np.asarray(lam)[self.index]

    def par_names(self, columns, group):
        return [
            f"{group}.{columns[r]}" if r == c else f"{group}.{columns[r]}.{columns[c]}" for r, c in zip(*self.index)
        ]

    def natural(self, par, scale=1.0):
        lam = self.lam(par)
        Sig = scale**2 * lam @ lam.T
        sd = np.sqrt(np.diag(Sig))
        values, names = [], []
        for r, c in zip(*self.index):
            if r == c:
                values.append(sd[r])
                names.append(f"sd_{r}")
            else:
                values.append(Sig[r, c] / (sd[r] * sd[c]) if sd[r] * sd[c] > 0 else 0.0)
                names.append(f"cor_{r}.{c}")
        return np.array(values), names

    def par_from_natural(self, v, scale=1.0):
        if self.p <= 2:  # the Cholesky factor below in closed form (a profile's every evaluation)
            return _small_par_from_natural(v, scale, self.p)
        sd, R = np.zeros(self.p), np.eye(self.p)
        for value, (r, c) in zip(v, zip(*self.index)):
            if r == c:
                sd[r] = value
            else:
                R[r, c] = R[c, r] = value
        Sig = np.outer(sd, sd) * R
        try:
            lam = np.linalg.cholesky(Sig + 1e-14 * np.eye(self.p) * max(1.0, np.max(np.abs(Sig))))
        except np.linalg.LinAlgError:
            return None
        return self.par_of(lam / scale)

    def singular(self, par, tol):
        rows, cols = self.index
        return bool(np.any(np.asarray(par)[rows == cols] < tol))


def _small_par_from_natural(v, scale: float, p: int) -> np.ndarray | None:
    """:meth:`Unstructured.par_from_natural` for one or two columns: λ the Cholesky factor of
    Σ + jI (j = 1e-14·max(1, max|Σ|), the general path's), l₁₁ = √(Σ₁₁ + j), l₂₁ = Σ₂₁/l₁₁,
    l₂₂ = √(Σ₂₂ + j − l₂₁²), None where that square root's argument is not positive (|ρ| > 1),
    as LAPACK's factorisation fails there."""
    if p == 1:
        a = float(v[0]) ** 2
        return np.array([math.sqrt(a + 1e-14 * max(1.0, a)) / scale])
    s1, rho, s2 = (float(x) for x in v)
    a, c, b = s1 * s1, rho * s1 * s2, s2 * s2
    j = 1e-14 * max(1.0, abs(a), abs(b), abs(c))
    l11 = math.sqrt(a + j)
    l21 = c / l11
    d = b + j - l21 * l21
    if not d > 0:  # also NaN
        return None
    return np.array([l11, l21, math.sqrt(d)]) / scale


class Diagonal(Structure):
    """Independent columns: λ = diag(d), d ≥ 0 (glmmTMB's ``diag``; lme4's ``(x || g)``)."""

    name = "diag"
    linear = True

    @property
    def n_par(self):
        return self.p

    def lower(self):
        return np.zeros(self.p)

    def start(self, sd=None):
        return np.ones(self.p) if sd is None else np.asarray(sd, dtype=float).copy()

    def lam(self, par):
        return np.diag(np.asarray(par, dtype=float))

    def par_names(self, columns, group):
        return [f"{group}.{c}" for c in columns]

    def natural(self, par, scale=1.0):
        return scale * np.abs(np.asarray(par, dtype=float)), [f"sd_{r}" for r in range(self.p)]

    def par_from_natural(self, v, scale=1.0):
        return np.asarray(v, dtype=float) / scale

    def singular(self, par, tol):
        return bool(np.any(np.asarray(par) < tol))


def _rho(a):
    """ρ = a/√(1 + a²): (−1, 1) from the whole line."""
    return a / np.sqrt(1.0 + a * a)


def _a_of(rho):
    """The inverse of :func:`_rho`."""
    return rho / np.sqrt(1.0 - rho * rho)


def _cholesky(R: np.ndarray) -> np.ndarray:
    """The lower Cholesky factor of a correlation matrix; a column whose pivot vanishes (R
    singular, a correlation on its limit) is set to 0 rather than failing."""
    p = len(R)
    L = np.zeros_like(R)
    for j in range(p):
        d = R[j, j] - L[j, :j] @ L[j, :j]
        if d <= 1e-14:
            continue
        L[j, j] = np.sqrt(d)
        L[j + 1 :, j] = (R[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]) / L[j, j]
    return L


class _Correlated(Structure):
    """λ = diag(SDs) · chol(R(correlation parameters)); the SDs first, then the correlations."""

    n_sd = 0

    @property
    def n_par(self):
        return self.n_sd + self.n_cor

    def lower(self):
        return np.concatenate([np.zeros(self.n_sd), np.full(self.n_cor, -np.inf)])

    def start(self, sd=None):
        sd = np.ones(self.p) if sd is None else np.asarray(sd, dtype=float)
        sds = sd if self.n_sd == self.p else np.full(self.n_sd, float(np.sqrt(np.mean(sd**2))))
        return np.concatenate([sds, self.cor_start()])

    def sds(self, par) -> np.ndarray:
        d = np.asarray(par[: self.n_sd], dtype=float)
        return d if self.n_sd == self.p else np.full(self.p, d[0])

    def lam(self, par):
        par = np.asarray(par, dtype=float)
        return self.sds(par)[:, None] * _cholesky(self.correlation(par[self.n_sd :]))

    def par_names(self, columns, group):
        sds = [f"{group}.{c}" for c in columns[: self.n_sd]]
        return sds + [f"{group}.{n}" for n in self.cor_names()]

    def natural(self, par, scale=1.0):
        par = np.asarray(par, dtype=float)
        sd = scale * np.abs(par[: self.n_sd])
        sd_names = [f"sd_{r}" for r in range(self.n_sd)] if self.n_sd == self.p else ["sd"]
        return np.concatenate([sd, self.cor_values(par[self.n_sd :])]), sd_names + list(self.cor_names())

    def par_from_natural(self, v, scale=1.0):
        v = np.asarray(v, dtype=float)
        cor = self.cor_par(v[self.n_sd :])
        return None if cor is None else np.concatenate([v[: self.n_sd] / scale, cor])

    def singular(self, par, tol):
        par = np.asarray(par, dtype=float)
        return bool(np.any(par[: self.n_sd] < tol)) or self.cor_singular(par[self.n_sd :])


class CompoundSymmetry(_Correlated):
    """glmmTMB's ``cs``: heterogeneous SDs, one correlation ρ in (−1/(p−1), 1)."""

    name = "cs"
    n_cor = 1

    @property
    def n_sd(self):
        return self.p

    @property
    def _c(self):
        return 1.0 / max(self.p - 1, 1)

    def _rho_of(self, a):
        return (1.0 + self._c) / (1.0 + np.exp(-a)) - self._c

    def correlation(self, cor):
        rho = self._rho_of(cor[0])
        return np.full((self.p, self.p), rho) + (1.0 - rho) * np.eye(self.p)

    def cor_start(self):
        return np.array([np.log(self._c)])  # ρ = 0

    def cor_names(self):
        return ["rho"]

    def cor_values(self, cor):
        return np.array([self._rho_of(cor[0])])

    def cor_par(self, rho):
        u = (rho[0] + self._c) / (1.0 + self._c)
        return None if not 0.0 < u < 1.0 else np.array([np.log(u / (1.0 - u))])

    def cor_singular(self, cor):
        rho = self._rho_of(cor[0])
        return rho > 1.0 - RHO_BOUNDARY or rho < -self._c + RHO_BOUNDARY

    def natural_bounds(self):
        lo, hi = super().natural_bounds()
        lo[-1] = -self._c
        return lo, hi


class AR1(_Correlated):
    """glmmTMB's ``ar1``: one SD, Σ_ij = d² ρ^|i−j|."""

    name = "ar1"
    n_sd = 1
    n_cor = 1

    def correlation(self, cor):
        rho = _rho(cor[0])
        k = np.arange(self.p)
        return rho ** np.abs(k[:, None] - k[None, :])

    def lam(self, par):
        # the Cholesky factor of an AR(1) correlation in closed form (exact at ρ = ±1 too):
        # L_ij = ρ^(i−j) for j = 0, ρ^(i−j)·√(1 − ρ²) for 0 < j ≤ i
        par = np.asarray(par, dtype=float)
        rho = _rho(par[1])
        k = np.arange(self.p)
        power = np.tril(k[:, None] - k[None, :])
        L = np.tril(rho ** np.where(power >= 0, power, 0))
        L[:, 1:] *= np.sqrt(max(1.0 - rho * rho, 0.0))
        return par[0] * L

    def cor_start(self):
        return np.zeros(1)

    def cor_names(self):
        return ["rho"]

    def cor_values(self, cor):
        return np.array([_rho(cor[0])])

    def cor_par(self, rho):
        return None if abs(rho[0]) >= 1.0 else np.array([_a_of(rho[0])])

    def cor_singular(self, cor):
        return abs(_rho(cor[0])) > 1.0 - RHO_BOUNDARY


class Toeplitz(_Correlated):
    """glmmTMB's ``toep``: heterogeneous SDs, the correlation a function of the lag |i − j|
    only, from the p − 1 partial autocorrelations."""

    name = "toep"

    @property
    def n_sd(self):
        return self.p

    @property
    def n_cor(self):
        return self.p - 1

    @staticmethod
    def _autocorrelations(partial: np.ndarray) -> np.ndarray:
        """r_1..r_m of the partial autocorrelations φ_1..φ_m (Durbin–Levinson)."""
        m = len(partial)
        r = np.zeros(m)
        phi = np.zeros(m)  # the AR coefficients of the current order
        for k in range(m):
            pk = partial[k]
            prev = phi[:k].copy()
            r[k] = pk * (1.0 - prev @ r[:k]) + prev @ r[:k][::-1] if k else pk
            phi[:k] = prev - pk * prev[::-1]
            phi[k] = pk
        return r

    @staticmethod
    def _partials(r: np.ndarray) -> np.ndarray | None:
        """φ of the autocorrelations r (Durbin–Levinson backwards); None when r is no valid
        correlation sequence."""
        m = len(r)
        partial = np.zeros(m)
        phi = np.zeros(m)
        var = 1.0
        for k in range(m):
            num = r[k] - phi[:k] @ r[:k][::-1]
            pk = num / var
            if not abs(pk) < 1.0:
                return None
            phi[:k] = phi[:k] - pk * phi[:k][::-1]
            phi[k] = pk
            partial[k] = pk
            var *= 1.0 - pk * pk
        return partial

    def correlation(self, cor):
        r = np.concatenate([[1.0], self._autocorrelations(_rho(np.asarray(cor, dtype=float)))])
        k = np.arange(self.p)
        return r[np.abs(k[:, None] - k[None, :])]

    def cor_start(self):
        return np.zeros(self.p - 1)

    def cor_names(self):
        return [f"cor_lag{k}" for k in range(1, self.p)]

    def cor_values(self, cor):
        return self._autocorrelations(_rho(np.asarray(cor, dtype=float)))

    def cor_par(self, r):
        partial = self._partials(np.asarray(r, dtype=float))
        return None if partial is None else _a_of(partial)

    def cor_singular(self, cor):
        return bool(np.any(np.abs(_rho(np.asarray(cor, dtype=float))) > 1.0 - RHO_BOUNDARY))


class CarriesResidual(Structure):
    """A structure that carries the residual of a Gaussian model without one (glmmTMB's
    ``dispformula = ~0``, nlme's ``correlation =``): a term whose every row has its own random
    effect (one column per row, one row per level and column: ``ar1(0 + time | subject)`` with
    one row per subject and time), so that Z_cZ_c' = I on the rows.

    With the inner structure's covariance s·R (R its parameters with the first SD at 1, s the
    scale), δ = ½λ_min(R) and the model's profiled scale σ_e² = sδ, the marginal covariance
    s·Z_cRZ_c' + … is σ_e²(I + Z_c(R/δ − I)Z_c' + …): an LMM whose residual is σ_e² and whose
    term has λ = chol(R/δ − I). The term's covariance is σ_e²(λλ' + I) = sR. Its parameters are
    the inner structure's without the first SD (the scale is σ_e's)."""

    linear = False

    def __init__(self, inner: Structure):
        super().__init__(inner.p)
        self.inner = inner
        self.name = inner.name

    def __repr__(self) -> str:
        return f"{self.inner!r} carrying the residual"

    def __eq__(self, other) -> bool:
        return isinstance(other, CarriesResidual) and self.inner == other.inner

    def __hash__(self) -> int:
        return hash(("residual", hash(self.inner)))

    @property
    def n_par(self):
        return self.inner.n_par - 1

    def full(self, par) -> np.ndarray:
        """The inner structure's parameters: the first SD at 1."""
        return np.concatenate([[1.0], np.asarray(par, dtype=float)])

    def shape(self, par) -> tuple[np.ndarray, float]:
        """(R, δ): the covariance with the first SD at 1 and half its smallest eigenvalue."""
        lam = self.inner.lam(self.full(par))
        R = lam @ lam.T
        return R, 0.5 * max(float(np.linalg.eigvalsh(R)[0]), 0.0)

    def lower(self):
        return self.inner.lower()[1:]

    def start(self, sd=None):
        ratio = None if sd is None else np.asarray(sd, dtype=float) / max(float(np.asarray(sd)[0]), 1e-8)
        return self.inner.start(ratio)[1:]

    def lam(self, par):
        R, delta = self.shape(par)
        if delta <= 0.0:  # R singular (a correlation at ±1): no residual to carry
            return np.full((self.p, self.p), np.nan)
        return np.linalg.cholesky(R / delta - np.eye(self.p))

    def covariance(self, par, scale=1.0):
        R, delta = self.shape(par)
        return scale / delta * R

    def par_names(self, columns, group):
        return self.inner.par_names(columns, group)[1:]

    def natural(self, par, scale=1.0):
        _, delta = self.shape(par)
        return self.inner.natural(self.full(par), scale / np.sqrt(delta) if delta > 0 else np.inf)

    def par_from_natural(self, v, scale=1.0):
        return None  # the scale σ_e moves with the shape: no profile through these coordinates

    def natural_bounds(self):
        return self.inner.natural_bounds()

    def singular(self, par, tol):
        return self.inner.singular(self.full(par), tol)


class OrnsteinUhlenbeck(_Correlated):
    """glmmTMB's ``ou``: one SD, Σ_ij = d² exp(−exp(a)·|t_i − t_j|) over the columns' times
    (any spacing); reported as the SD and ``rho``, the correlation one time unit apart."""

    name = "ou"
    n_sd = 1
    n_cor = 1

    def __init__(self, p: int, times=None):
        super().__init__(p)
        self.times = np.arange(p, dtype=float) if times is None else np.asarray(times, dtype=float)

    def __eq__(self, other) -> bool:
        return isinstance(other, OrnsteinUhlenbeck) and np.array_equal(self.times, other.times)

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.times)))

    def correlation(self, cor):
        return np.exp(-np.exp(cor[0]) * np.abs(self.times[:, None] - self.times[None, :]))

    def cor_start(self):
        return np.zeros(1)  # ρ one unit apart = e⁻¹

    def cor_names(self):
        return ["rho"]

    def cor_values(self, cor):
        return np.array([np.exp(-np.exp(cor[0]))])

    def cor_par(self, rho):
        return None if not 0.0 < rho[0] < 1.0 else np.array([np.log(-np.log(rho[0]))])

    def cor_singular(self, cor):
        return bool(np.exp(-np.exp(cor[0])) > 1.0 - RHO_BOUNDARY)

    def natural_bounds(self):
        lo, hi = super().natural_bounds()
        lo[-1] = 0.0
        return lo, hi


#: the structures by the names formulas use (glmmTMB's)
STRUCTURES = {cls.name: cls for cls in (Unstructured, Diagonal, CompoundSymmetry, AR1, Toeplitz, OrnsteinUhlenbeck)}


def structure(name: str, p: int, times=None) -> Structure:
    """The structure ``name`` of a term with ``p`` columns (``times``: the columns' times, for ou)."""
    return OrnsteinUhlenbeck(p, times) if name == "ou" else STRUCTURES[name](p)
