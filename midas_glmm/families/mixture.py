"""The zero-inflated log-likelihood (glmmTMB's ``ziformula``) of a block of rows, in η.

A row is a structural zero with probability π = logit⁻¹(ζ), ζ = X_zi γ, and otherwise a draw
from the conditional family f(· | μ):

    log f_zi(0) = log(π + (1 − π) f(0 | μ)),    log f_zi(y) = log(1 − π) + log f(y | μ),  y > 0.

With r = (1 − π) f(0 | μ) / f_zi(0), the probability that a zero came from the count part,

    ∂ log f_zi(0)/∂η = r s₀,    −∂² log f_zi(0)/∂η² = r o₀ − r (1 − r) s₀²,

s₀ and o₀ the score and observed information of log f(0 | μ); rows with y > 0 keep the
conditional family's. The observed information may be negative on a zero row (the mixture is not
log-concave in η); the Laplace log-determinant takes it as it is, as glmmTMB's exact Hessian does.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ZeroInflatedRows", "zero_inflated_pearson"]


class ZeroInflatedRows:
    """The zero-inflated log-likelihood of a block of rows and its derivatives in η, at γ.

    Parameters
    ----------
    X : ndarray (n, p_zi)
        The zero-inflation part's model matrix on the rows.
    y : ndarray (n,)
        The response.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray):
        self.X = X
        self.zero = y == 0
        self.set(np.zeros(X.shape[1]))

    def set(self, gamma: np.ndarray) -> None:
        """Use γ: the linear predictor ζ = X_zi γ, and log π and log(1 − π) per row."""
        self.gamma = np.array(gamma, dtype=float)
        self.zeta = self.X @ self.gamma
        self.logpi, self.log1mpi = log_probs(self.zeta)

    def loglik_rows(self, ll_cond: np.ndarray, dzeta: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(log f_zi per row, r per row) from the conditional family's unweighted log f (with
        ζ shifted by ``dzeta``: the gradient's differences)."""
        logpi, log1mpi = (self.logpi, self.log1mpi) if dzeta == 0.0 else log_probs(self.zeta + dzeta)
        ll = log1mpi + ll_cond
        r = np.ones_like(ll)
        z = self.zero
        mixed = np.logaddexp(logpi[z], ll[z])
        r[z] = np.exp(ll[z] - mixed)
        ll[z] = mixed
        return ll, r

    @staticmethod
    def derivatives(r, score, observed, expected):
        """(score, observed, a positive information for Newton steps) of log f_zi in η."""
        obs = r * observed - r * (1.0 - r) * score * score
        return r * score, obs, r * expected


def log_probs(zeta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log π, log(1 − π)) for π = logit⁻¹(ζ), without overflow."""
    return -np.logaddexp(0.0, -zeta), -np.logaddexp(0.0, zeta)


def zero_inflated_pearson(y, mu, pi, variance, w) -> np.ndarray:
    """Pearson residuals of the mixture, as glmmTMB's: √w (y − (1 − π)μ)/√((1 − π)(V(μ) + πμ²)),
    ``variance`` the conditional family's V(μ)."""
    var = (1.0 - pi) * (variance + pi * mu**2)
    return np.sqrt(w / var) * (y - (1.0 - pi) * mu)
