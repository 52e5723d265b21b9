"""Special functions of the families' log-likelihoods, accurate where the textbook forms cancel.

The negative binomial and beta log-densities are differences of log-gamma (and their
derivatives of digamma and trigamma) values at nearby large arguments: NB2's size θ and NB1's
μ/φ grow without bound toward the Poisson limit. Written as differences of library calls they
lose every digit there; the forms below do not.
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["trigamma", "lgamma_ratio", "digamma_difference", "trigamma_difference"]

#: above this size the log-gamma and digamma differences take their asymptotic forms
LARGE = 30.0


def trigamma(x: np.ndarray) -> np.ndarray:
    """ψ'(x) for x > 0 (NaN elsewhere), compiled (:func:`~midas_glmm.linalg.rowkernels.trigamma`):
    scipy's polygamma(1, x) goes through the Hurwitz zeta function and was most of an NB1 or
    beta PIRLS step."""
    x = np.asarray(x, dtype=float)
    flat = np.ascontiguousarray(x).ravel()
    out = np.empty_like(flat)
    from ..linalg import rowkernels  # numba, loaded on first use

    rowkernels.trigamma(flat, out)
    return out.reshape(x.shape)


def lgamma_ratio(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """log Γ(y + s) − log Γ(s), for s > 0 and y ≥ 0, without the cancellation of two numbers near
    s log s when s is large (NB2's θ, NB1's μ/φ near the Poisson limit): Stirling's
    series as (s − ½) log1p(y/s) + y log(s + y) − y + c(s + y) − c(s) (s ≥ 30), with
    c(x) = 1/(12x) − 1/(360x³) + 1/(1260x⁵) − 1/(1680x⁷) (error below 1e-12)."""
    return _by_size(y, s, lambda y, s: special.gammaln(y + s) - special.gammaln(s), _lgamma_asymptotic)


def digamma_difference(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ψ(y + s) − ψ(s), for s > 0 and y ≥ 0, accurate for large s: the asymptotic
    series log1p(y/s) − [d(s + y) − d(s)] for s ≥ 30, d(x) = 1/(2x) + 1/(12x²) − 1/(120x⁴) + 1/(252x⁶) − 1/(240x⁸)."""
    return _by_size(
        y,
        s,
        lambda y, s: special.digamma(y + s) - special.digamma(s),
        lambda y, s: np.log1p(y / s) - (_digamma_tail(s + y) - _digamma_tail(s)),
    )


def trigamma_difference(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """ψ'(y + s) − ψ'(s), for s > 0 and y ≥ 0, accurate for large s (NB1's l_μμ as φ → 0, where
    the two terms agree to all their digits): for s ≥ 30, with t = s + y, the series' first two
    terms as exact differences, −y/(st) − y(s + t)/(2s²t²), plus the difference of the rest,
    1/(6x³) − 1/(30x⁵) + 1/(42x⁷) − 1/(30x⁹)."""
    return _by_size(y, s, lambda y, s: trigamma(y + s) - trigamma(s), _trigamma_asymptotic)


def _by_size(y, s, small, large):
    """``small(y, s)`` where s < 30 and ``large(y, s)`` elsewhere, each only on its own rows."""
    y, s = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(s, dtype=float))
    big = s >= LARGE
    with np.errstate(all="ignore"):
        if not big.any():
            return small(y, s)
        if big.all():
            return large(y, s)
        out = np.empty(s.shape)
        out[big] = large(y[big], s[big])
        out[~big] = small(y[~big], s[~big])
    return out


def _lgamma_asymptotic(y, s):
    t = s + y
    return (s - 0.5) * np.log1p(y / s) + y * np.log(t) - y + _stirling_tail(t) - _stirling_tail(s)


def _trigamma_asymptotic(y, s):
    t = s + y
    return -y / (s * t) - y * (s + t) / (2.0 * s * s * t * t) + (_trigamma_tail(t) - _trigamma_tail(s))


def _trigamma_tail(x):
    r = 1.0 / (x * x)
    return (r / x) * (1.0 / 6.0 - r * (1.0 / 30.0 - r * (1.0 / 42.0 - r / 30.0)))


def _stirling_tail(x):
    r = 1.0 / (x * x)
    return (1.0 / x) * (1.0 / 12.0 - r * (1.0 / 360.0 - r * (1.0 / 1260.0 - r / 1680.0)))


def _digamma_tail(x):
    r = 1.0 / (x * x)
    return 0.5 / x + r * (1.0 / 12.0 - r * (1.0 / 120.0 - r * (1.0 / 252.0 - r / 240.0)))
