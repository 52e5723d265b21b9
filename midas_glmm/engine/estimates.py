"""What an engine hands to the results object: the estimates and how they were found."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

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
    condvar_fn : callable
        Returns their conditional covariances, a list of ``(ℓ_i, p_i, p_i)`` arrays; computed
        on first use of :attr:`condvar` (it needs an inverse of the factor's dense blocks).
    llf : float
        Log-likelihood (REML log-likelihood for REML fits; Laplace/AGQ approximation for GLMMs).
    criterion : float
        −2 llf: the REML criterion, the ML deviance, or the Laplace/AGQ −2ℓ of a GLMM.
    method : str
        ``"REML"``, ``"ML"``, ``"Laplace"``, ``"AGQ"`` or ``"nAGQ=0"``.
    deviance : float or None
        GLMMs: Σ wᵢ d(yᵢ, μ̂ᵢ)/φ + ‖û‖² + log|L|², the Laplace criterion without the saturated
        log-likelihood. Not lme4's ``deviance()`` (Σ wᵢ d(yᵢ, μ̂ᵢ) alone), which the results
        compute from the fitted values; kept for the engine's diagnostics.
    notes : list of str
        Cautions about the approximation (small groups, rare events) for the summary.
    zi_params, zi_vcov : ndarray or None
        The zero-inflation coefficients γ and their covariance (zero-inflated models only).
    disp_params, disp_vcov : ndarray or None
        The dispersion formula's coefficients (log φᵢ = (X_d γ)ᵢ, glmmTMB's scale) and their
        covariance (models with a dispformula only).
    row_weights : ndarray or None
        A Gaussian dispersion model's weights wᵢ (σᵢ² = σ²/wᵢ, prior weights included): the
        results read the fit as an LMM with these weights.
    thresholds, thresholds_vcov : ndarray or None
        An ordinal model's thresholds τ (clmm's Theta) and their covariance.
    solver : IterativeInfo or None
        How the iterative solver's fit went (probes, Monte Carlo errors); None for the exact engine.
    terms : list of ReTerm or None
        The terms as the engine fitted them when they differ from the model's (a term carrying
        the residual of ``dispformula = "~ 0"``).
    """

    theta: np.ndarray
    beta: np.ndarray
    vcov_beta: np.ndarray
    sigma: float
    b: list[np.ndarray]
    condvar_fn: Callable[[], list[np.ndarray]]
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
    deviance: float | None = None
    notes: list[str] = field(default_factory=list)
    zi_params: np.ndarray | None = None
    zi_vcov: np.ndarray | None = None
    disp_params: np.ndarray | None = None
    disp_vcov: np.ndarray | None = None
    row_weights: np.ndarray | None = None
    terms: list | None = None
    thresholds: np.ndarray | None = None
    thresholds_vcov: np.ndarray | None = None
    solver: object = None

    @cached_property
    def condvar(self) -> list[np.ndarray]:
        """Conditional covariances of the random effects per level, ``(ℓ_i, p_i, p_i)`` per term."""
        return self.condvar_fn()
