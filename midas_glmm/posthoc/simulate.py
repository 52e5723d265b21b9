"""Responses simulated from a fitted model, as lme4's ``simulate()``: new random effects
b ~ N(0, Σ) (``use.u = FALSE``) or the fitted ones, and a response drawn from the family."""

from __future__ import annotations

import numpy as np

from ..checks import check_array_size, check_count, make_rng
from ..design.daskdata import check_available
from ..errors import FitError

__all__ = ["simulate"]


def simulate(res, n: int = 1, seed=None, random_effects: str = "marginal") -> np.ndarray:
    """Responses simulated from the fitted model, an ``nobs × n`` array.

    ``random_effects="marginal"`` draws new random effects b ~ N(0, Σ) (lme4's default
    ``use.u = FALSE``); ``"conditional"`` keeps the fitted ones."""
    if random_effects not in ("marginal", "conditional"):
        raise FitError(f"random_effects must be 'marginal' or 'conditional', not {random_effects!r}")
    n = check_count(n, "n")
    check_available(res.design, "simulation (and the bootstrap)")
    check_array_size(res.design.nobs * n, f"{n} simulated responses of {res.design.nobs} rows", "ask for fewer")
    rng = make_rng(seed)
    d = res.design
    eta_fixed = d.X @ res.params.to_numpy() + d.offset
    out = np.empty((d.nobs, n))
    roots = [_root(Sig) for Sig in res.term_covariances()]
    for k in range(n):
        eta = eta_fixed.copy()
        for t, lam, b_hat in zip(d.terms, roots, res.estimates.b):
            if random_effects == "marginal":
                b = rng.standard_normal((t.nlevels, t.p)) @ lam.T
            else:
                b = b_hat
            eta += np.einsum("ij,ij->i", t.Zcols, b[t.codes])
        out[:, k] = _draw_response(res, eta, rng)
        if d.zi is not None:  # structural zeros with probability π
            out[rng.random(d.nobs) < res.zi_probability(), k] = 0.0
    return out


def _root(S: np.ndarray) -> np.ndarray:
    """A root R of the term's covariance, RR' = Σ: its Cholesky factor, or, where Σ is singular
    (a variance at zero, or a correlation at ±1 with every variance positive), V·√max(w, 0) from
    its eigenvalues w and vectors V."""
    if np.all(np.diag(S) > 0):
        try:
            return np.linalg.cholesky(S)
        except np.linalg.LinAlgError:  # singular with a positive diagonal: the eigenvalues' root
            pass
    w, V = np.linalg.eigh(S)
    return V * np.sqrt(np.maximum(w, 0))


def _draw_response(res, eta, rng):
    fam, d = res.family, res.design
    mu = eta if fam.is_lmm else fam.linkinv(eta)
    return fam.simulate(mu, rng, d.weights, d.trials, res.dispersion)
