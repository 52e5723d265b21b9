"""Ordered categories: the cumulative link model of ``ordinal::clmm``.

For a response with J ordered levels coded 0, …, J − 1 and the linear predictor η = x'β + z'b
(no intercept: the thresholds take its place), P(Y ≤ j | b) = F(τ_j − η), j = 0, …, J − 2, with
τ_0 < … < τ_{J−2} the thresholds and F the link's distribution function (logistic for
``"logit"``; probit, cloglog, loglog, cauchit). A row's log-likelihood is
log[F(τ_y − η) − F(τ_{y−1} − η)] with τ_{−1} = −∞ and τ_{J−1} = +∞.

The thresholds are the family's parameters (the engine's φ, a vector here); the optimiser
works on a with τ_0 = a_0 and τ_k = τ_{k−1} + exp(a_k), so that every value keeps them in order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from ..errors import DataError, FamilyError, FitError
from ..linalg import codes
from .base import Family, ResponseTerms, observed_levels, shown_levels
from .binomial import bernoulli_variance, bernoulli_variance_deriv

__all__ = ["Ordinal"]

#: latent-scale residual variance of the links (the variance of the distribution F)
#: the most levels an ordinal response may have: each adds a threshold, and the Hessian's cost
#: grows with their square (a 0-100 visual analogue scale has 101)
MAX_LEVELS = 250

_LATENT = {"logit": np.pi**2 / 3, "probit": 1.0, "cloglog": np.pi**2 / 6, "loglog": np.pi**2 / 6}


class Ordinal(Family):
    """Cumulative link model for ordered categories (clmm's parameterisation, see the module)."""

    name = "ordinal"
    label = "ordinal"
    default_link = "logit"
    # F is the inverse of a binomial link
    links = ("logit", "probit", "cloglog", "loglog", "cauchit", "log", "identity")
    exact = True
    laplace_observed = True
    agq = True
    thresholds = True
    categorical_response = True
    drops_intercept = True
    #: log-concave distributions: the observed information is positive in every row
    observed_positive_links = ("logit", "probit", "cloglog", "loglog")
    has_unit_deviance = False
    mean_name = "prob"

    def __init__(self, link=None, levels=None):
        """``levels``: the response's categories in their order, when the column does not say it
        (text, or numbers whose order is not the one meant)."""
        super().__init__(link)
        if self.link_name not in ("logit", "probit", "cloglog", "loglog", "cauchit"):
            raise FamilyError(
                f"the ordinal family takes the logit, probit, cloglog, loglog or cauchit link, not {self.link_name}"
            )
        if isinstance(levels, (str, bytes)) or (levels is not None and not hasattr(levels, "__iter__")):
            raise FamilyError(
                f"levels= takes the response's levels as a list, in order (['low', 'mid', 'high']), not {levels!r}"
            )
        self.levels = None if levels is None else list(levels)
        if self.levels is not None and len(set(map(str, self.levels))) != len(self.levels):
            raise FamilyError(f"levels= has a repeated level: {self.levels}")

    # --- the link's distribution F, its survival 1 − F, density f and f' (scipy, vectorised)
    def cdf(self, x):
        return _DIST[self.link_name](np.asarray(x, dtype=float))[0]

    def survival(self, x):
        """1 − F(x) without cancellation where F(x) is near 1."""
        return _DIST[self.link_name](np.asarray(x, dtype=float))[1]

    def density(self, x):
        return _DIST[self.link_name](np.asarray(x, dtype=float))[2]

    def distribution(self, x):
        """(F, 1 − F, f, f') at x, in one pass."""
        return _DIST[self.link_name](np.asarray(x, dtype=float))

    # --- thresholds
    @staticmethod
    def thresholds_of(a: np.ndarray) -> np.ndarray:
        """τ from the optimiser's a: τ_0 = a_0, τ_k = τ_{k−1} + exp(a_k)."""
        a = np.asarray(a, dtype=float)
        steps = np.concatenate([a[:1], np.exp(np.minimum(a[1:], 700.0))])
        return np.cumsum(steps)

    @staticmethod
    def threshold_params(tau: np.ndarray) -> np.ndarray:
        """a of thresholds τ (the inverse of :meth:`thresholds_of`)."""
        tau = np.asarray(tau, dtype=float)
        return np.concatenate([tau[:1], np.log(np.maximum(np.diff(tau), 1e-300))])

    @staticmethod
    def threshold_jacobian(a: np.ndarray) -> np.ndarray:
        """dτ/da: τ_k = a_0 + Σ_{j=1..k} exp(a_j)."""
        a = np.asarray(a, dtype=float)
        J = np.zeros((len(a), len(a)))
        J[:, 0] = 1.0
        for j in range(1, len(a)):
            J[j:, j] = np.exp(a[j])
        return J

    def threshold_start(self, y: np.ndarray, prior: np.ndarray, n_levels: int) -> np.ndarray:
        """a of the thresholds of the marginal proportions, τ_j = F⁻¹(P(Y ≤ j)) (η = 0)."""
        counts = np.bincount(y.astype(np.int64), weights=prior, minlength=n_levels)[:n_levels]
        cum = np.cumsum(counts)[:-1] / counts.sum()
        cum = np.clip(cum, 1e-4, 1 - 1e-4)
        tau = np.maximum.accumulate(self.link(cum))  # F⁻¹ is the link itself
        tau = tau + 1e-3 * np.arange(len(tau))  # strictly increasing
        return self.threshold_params(tau)

    def _rows(self, y, eta, tau, prior_ll, prior_d=None, derivatives=True):
        """(w log P, score, observed information) per row, P = F(τ_y − η) − F(τ_{y−1} − η)
        (:func:`~midas_glmm.linalg.rowkernels.ordinal_rows`: one compiled pass, no temporaries);
        ``prior_ll`` weighs the log-likelihood, ``prior_d`` (default the same) the derivatives;
        without ``derivatives`` the last two are empty."""
        n = len(y)
        eta = _row_array(eta, n)
        prior_ll = _row_array(prior_ll, n)
        prior_d = prior_ll if prior_d is None else _row_array(prior_d, n)
        tau = np.ascontiguousarray(tau, dtype=float)
        m = n if derivatives else 0
        ll, score, observed = np.empty(n), np.empty(m), np.empty(m)
        from ..linalg import rowkernels  # numba, loaded on first use

        rowkernels.ordinal_rows(_CODE[self.link_name], y, eta, tau, prior_ll, prior_d, ll, score, observed)
        return ll, score, observed

    def variance(self, mu, phi=1.0):
        """A cumulative probability's binomial variance μ(1 − μ)."""
        return bernoulli_variance(mu)

    def variance_deriv(self, mu, phi=1.0):
        return bernoulli_variance_deriv(mu)

    # --- the likelihood in η (μ is η itself: the family reads the thresholds)
    def linkinv(self, eta):
        return np.asarray(eta, dtype=float)

    def mu_eta(self, eta, mu=None):
        return np.ones(np.shape(eta))

    def loglik_constant(self, y, prior, trials):
        return np.zeros(np.shape(y)), {}

    def loglik_rows(self, terms: ResponseTerms, mu, phi):
        return self._rows(terms.y, mu, phi, terms.prior, derivatives=False)[0]

    def loglik_and_derivatives(self, terms: ResponseTerms, mu, eta, prior, phi):
        ll, score, observed = self._rows(terms.y, eta, phi, terms.prior, prior)
        return ll, score, observed, self._expected(observed, eta, prior, phi)

    def derivatives(self, y, mu, eta, prior, phi):
        """(score, observed information, expected information) in η, row by row: with
        P = F(u) − F(l), u = τ_y − η, l = τ_{y−1} − η: ∂ℓ/∂η = −(f(u) − f(l))/P and
        −∂²ℓ/∂η² = [(f(u) − f(l))² − (f'(u) − f'(l))P]/P², positive for the log-concave F of the
        logit, probit, cloglog and loglog links (taken as the expected too); cauchit's expected
        Σ_j (f_j − f_{j−1})²/P_j over the categories."""
        _, score, observed = self._rows(y, eta, phi, prior)
        return score, observed, self._expected(observed, eta, prior, phi)

    def _expected(self, observed, eta, prior, phi):
        """The expected information: the observed one for a log-concave F; cauchit's
        w Σ_j (f_j − f_{j−1})²/P_j over the categories."""
        if self.link_name != "cauchit":
            return observed
        tau, eta = np.asarray(phi, dtype=float), np.asarray(eta, dtype=float)
        cut = tau[None, :] - eta[:, None]
        F, _, f, _ = self.distribution(cut)
        zeros, ones = np.zeros((len(cut), 1)), np.ones((len(cut), 1))
        Pj = np.maximum(np.diff(np.concatenate([zeros, F, ones], axis=1), axis=1), 1e-300)
        expected = np.sum(np.diff(np.concatenate([zeros, f, zeros], axis=1), axis=1) ** 2 / Pj, axis=1)
        return prior * expected

    def threshold_gradient(self, y, eta, tau, prior, h, Zq) -> np.ndarray:
        """The Laplace gradient's channel of the thresholds' coordinates a (see
        :meth:`~midas_glmm.engine.glmmrows.RowBlock.laplace_gradient_sums`): per τ_k analytically
        (:func:`~midas_glmm.linalg.rowkernels.ordinal_threshold_gradient`), then through dτ/da."""
        tau = np.ascontiguousarray(tau, dtype=float)
        g = np.empty(len(tau))
        n = len(y)
        prior, eta = _row_array(prior, n), _row_array(eta, n)
        from ..linalg import rowkernels  # numba, loaded on first use

        rowkernels.ordinal_threshold_gradient(
            _CODE[self.link_name],
            y,
            eta,
            tau,
            prior,
            _row_array(h, n),
            _row_array(Zq, n),
            g,
        )
        return self.threshold_jacobian(self.threshold_params(tau)).T @ g

    def cumulative(self, eta: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """P(Y ≤ j), rows × (J − 1)."""
        return self.cdf(np.asarray(tau)[None, :] - np.asarray(eta, dtype=float)[:, None])

    def probabilities(self, eta: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """P(Y = j), rows × J."""
        cum = self.cumulative(eta, tau)
        full = np.concatenate([np.zeros((len(cum), 1)), cum, np.ones((len(cum), 1))], axis=1)
        return np.diff(full, axis=1)

    # --- what the family answers for
    def simulate(self, mu, rng, prior, trials, phi):
        cum = self.cumulative(mu, np.asarray(phi, dtype=float))
        draw = rng.uniform(size=len(cum))
        return np.sum(cum < draw[:, None], axis=1).astype(float)  # the first j with P(Y ≤ j) ≥ U

    def latent_variance(self, phi=1.0) -> float:
        if self.link_name not in _LATENT:
            raise FitError(f"the {self.link_name} link's distribution has no variance: icc() needs latent_variance=")
        return _LATENT[self.link_name]

    def pearson_residuals(self, y, mu, w, phi):
        raise FitError(
            "an ordinal response has no residuals on its scale here; predict(kind='prob') gives each row's "
            "category probabilities and simulate_residuals() the scaled (quantile) residuals"
        )

    deviance_residuals = pearson_residuals

    def check_support(self, y, name):
        if np.any(y < 0) or np.any(y != np.round(y)):
            raise DataError(f"ordinal response '{name}' must be coded by its levels")

    def check_response(self, y, name, trials=None):
        self.check_support(y, name)
        if len(np.unique(y)) < 2:
            raise DataError(f"ordinal response '{name}' has a single observed level: there are no categories to order")

    # --- the response's levels
    def response_levels(self, values: pd.Series, name: str) -> list:
        """The ordered levels with a row (clmm drops the others, as R's ``droplevels``):
        ``levels=`` when given; an ordered (or any) pandas Categorical's categories; numbers
        sorted; text only with ``levels=`` (its order cannot be known)."""
        declared = self._declared_levels(values, name)
        present = set(values.dropna().astype(str)) if not _numeric(values) else set(values.dropna())
        return [v for v in declared if (v if _numeric(values) else str(v)) in present]

    def _declared_levels(self, values: pd.Series, name: str) -> list:
        if self.levels is not None:
            present = set(values.dropna().astype(str)) if not _numeric(values) else set(values.dropna())
            known = set(map(str, self.levels)) if not _numeric(values) else set(self.levels)
            missing = sorted(present - known, key=str)
            if missing:
                raise DataError(
                    f"ordinal response '{name}' has values not in levels=: {shown_levels(missing)}; list every level"
                )
            return list(self.levels)
        if isinstance(values.dtype, pd.CategoricalDtype):
            return list(values.cat.categories)
        if _numeric(values):
            return sorted(values.dropna().unique().tolist())
        found = observed_levels(values)
        raise DataError(
            f"ordinal response '{name}' is text ({shown_levels(found)}), whose order cannot be known: make it an "
            "ordered pandas Categorical (pd.Categorical(x, categories=[...], ordered=True)) or give the order, "
            "midas_glmm.family('ordinal', levels=[...])"
        )

    def code_levels(self, values: pd.Series, name: str, levels=None) -> np.ndarray:
        """The response as its level's position 0, …, J − 1 (:meth:`response_levels`)."""
        levels = self.response_levels(values, name) if levels is None else list(levels)
        if len(levels) < 2:
            raise DataError(f"ordinal response '{name}' has the single level {shown_levels(levels)}")
        if len(levels) > MAX_LEVELS:
            raise DataError(
                f"ordinal response '{name}' has {len(levels):,} levels, so {len(levels) - 1:,} thresholds to estimate "
                f"(at most {MAX_LEVELS} levels here): it looks like a measurement, not a rating. Fit it with a "
                "continuous family (the default gaussian), or bin it into ordered categories (pd.cut)"
            )
        if isinstance(values.dtype, pd.CategoricalDtype) or not _numeric(values):
            position = {str(v): i for i, v in enumerate(levels)}
            return values.astype(str).map(position).to_numpy(dtype=float)
        position = {v: i for i, v in enumerate(levels)}
        return values.map(position).to_numpy(dtype=float)


def _logistic(x):
    F = special.expit(x)
    S = special.expit(-x)
    f = F * S
    return F, S, f, f * (S - F)


def _normal(x):
    f = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    return special.ndtr(x), special.ndtr(-x), f, -x * f


def _gumbel_min(x):  # cloglog: F(x) = 1 − exp(−eˣ)
    e = np.exp(np.minimum(x, 700.0))
    S = np.exp(-e)
    f = e * S
    return -np.expm1(-e), S, f, f * (1.0 - e)


def _gumbel_max(x):  # loglog: F(x) = exp(−e⁻ˣ)
    e = np.exp(np.minimum(-x, 700.0))
    F = np.exp(-e)
    f = e * F
    return F, -np.expm1(-e), f, f * (e - 1.0)


def _cauchy(x):
    f = 1.0 / (np.pi * (1.0 + x * x))
    return 0.5 + np.arctan(x) / np.pi, 0.5 - np.arctan(x) / np.pi, f, -2.0 * np.pi * x * f * f


#: each link's code in the compiled pass
_CODE = {
    "logit": codes.ORD_LOGIT,
    "probit": codes.ORD_PROBIT,
    "cloglog": codes.ORD_CLOGLOG,
    "loglog": codes.ORD_LOGLOG,
    "cauchit": codes.ORD_CAUCHIT,
}
#: each link's (F, 1 − F, f, f')
_DIST = {"logit": _logistic, "probit": _normal, "cloglog": _gumbel_min, "loglog": _gumbel_max, "cauchit": _cauchy}


def _numeric(values: pd.Series) -> bool:
    return not isinstance(values.dtype, pd.CategoricalDtype) and (
        pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
    )


def cumulative_names(levels: list) -> list[str]:
    """clm's names of the thresholds: ``"1|2"``, ``"2|3"``, …"""
    return [f"{a}|{b}" for a, b in zip(levels[:-1], levels[1:])]


def _row_array(v, n: int) -> np.ndarray:
    """``v`` as a contiguous float array of n rows (a scalar broadcast)."""
    if isinstance(v, np.ndarray) and v.dtype == np.float64 and v.shape == (n,) and v.flags.c_contiguous:
        return v
    v = np.asarray(v, dtype=float)
    if v.ndim == 0:
        return np.full(n, float(v))
    return np.ascontiguousarray(v if v.shape == (n,) else np.broadcast_to(v, (n,)))
