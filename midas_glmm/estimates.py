"""What an engine hands to the results object: the estimates and how they were found."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .optimize import OptResult

__all__ = ["Estimates"]


@dataclass
class Estimates:
    """Estimates of one fit, on the scale of the original design.

    Attributes
    ----------
    theta : ndarray
        Relative covariance parameters, lme4's order.
    beta, vcov_beta : ndarray
        Fixed effects and their covariance.
    sigma : float
        Residual SD (LMM), sqrt(φ) (Gamma) or 1 (binomial, Poisson).
    b : list of ndarray (ℓ_i, p_i)
        Random effects per term (BLUPs or conditional modes).
    condvar : list of ndarray (ℓ_i, p_i, p_i)
        Their conditional covariances.
    llf : float
        Log-likelihood (REML log-likelihood for REML fits; Laplace/AGQ approximation for GLMMs).
    criterion : float
        −2 llf (the REML criterion or the deviance as lme4 defines them).
    method : str
        ``"REML"``, ``"ML"``, ``"Laplace"``, ``"AGQ"`` or ``"PQL-free nAGQ=0"``.
    """

    theta: np.ndarray
    beta: np.ndarray
    vcov_beta: np.ndarray
    sigma: float
    b: list[np.ndarray]
    condvar: list[np.ndarray]
    llf: float
    criterion: float
    method: str
    nAGQ: int
    opt: OptResult
    lower: np.ndarray
    singular: bool
    convergence: list[str] = field(default_factory=list)
    dispersion: float = 1.0
    n_params: int = 0
