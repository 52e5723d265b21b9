"""Generalized linear mixed models: PIRLS, the Laplace approximation and adaptive Gauss–Hermite.

With b = Λ(θ)u and u ~ N(0, I), the conditional modes û maximise the penalised log-likelihood
Σᵢ log f(yᵢ | ηᵢ) − ‖u‖²/2, η = offset + Xβ + ZΛu. PIRLS finds them by Fisher scoring with
step-halving; each step is one weighted data pass (:class:`~midas_glmm.design.blocks.CrossProducts`
with the working weights) and one blocked Cholesky — the same machinery as the LMM.

* Laplace   −2ℓ(θ, β, φ) ≈ −2 Σ log f(y | μ̂) + ‖û‖² + log|Λ'Z'WZΛ + I|,
  W the information of η at û: expected (Fisher) for binomial and Poisson, as lme4; observed for
  Gamma, as glmmTMB (the two agree for canonical links).
* AGQ       for one scalar term the integral factors by group: −2 Σⱼ log[ sⱼ Σₖ wₖ
  exp(qⱼ(ûⱼ + sⱼtₖ) + tₖ²/2) ], with qⱼ the log integrand and sⱼ = Hⱼ^(−1/2); one node is Laplace.

``fit_glmm`` optimises θ with β from PIRLS first (lme4's nAGQ = 0, the seed's method), then,
unless ``fast=True``, θ and β (and log φ for Gamma) jointly on the Laplace/AGQ likelihood, as
lme4's ``glmer`` does; where the Laplace deviance has its analytic gradient the joint search
starts at θ₀ itself, and takes the first stage only when it needs it.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..design import Design, ThetaMap, standardize
from ..design.blocks import CrossProducts
from ..errors import ConvergenceWarning, FitError, LaplaceAccuracyWarning
from ..families import Family
from ..linalg.threads import THREADED_TAIL, fit_threads
from .controls import current_control
from .estimates import Estimates
from .factor import Factor
from .glm import fit_glm
from .glmmrows import DaskRows, LocalRows, RowBlock
from .gradient import laplace_gradient, mode_derivatives
from .lmm import moment_start
from .optimize import (
    SINGULAR_TOL,
    OptResult,
    check_convergence,
    fd_derivatives,
    fd_hessian,
    gradient_derivatives,
    gradient_size,
    minimize_bounded,
    newton_step,
    restart_if_unconverged,
)
from .scalarterm import SCALAR_TERM_ROWS, ScalarTerm
from .sparsity import FactorPlan, small_model

__all__ = ["GLMMProblem", "PirlsState", "fit_glmm"]


@dataclass
class PirlsState:
    """Converged PIRLS quantities at one (θ, β, φ)."""

    u: list[np.ndarray]
    beta: np.ndarray
    factor: Factor
    loglik_cond: float
    converged: bool


def _largest(a: np.ndarray) -> float:
    """max |x| over the entries of ``a`` (0 when there are none)."""
    return float(np.abs(a).max()) if a.size else 0.0


class GLMMProblem:
    """The Laplace/AGQ objective of a GLMM, with PIRLS for the conditional modes.

    Parameters
    ----------
    design : Design
    family : Family
    standardize_X : bool
        Work with β_s for the centred and scaled columns X_s = X S⁻¹-equivalent (better
        conditioned); X itself is never copied: X_s β_s = X (S β_s).
    dense : bool or None
        Factor Λ'Z'WZΛ + I as one dense block by LAPACK (none of the sparse factor's compiled
        kernels to compile on a first fit) or by the sparse plan; None: dense for few random
        effects (:func:`~.sparsity.small_model`), except for one random intercept, whose
        diagonal factor is numpy's already (and cheaper than LAPACK's dense one: cbpp 18 → 16 ms).
    """

    def __init__(self, design: Design, family: Family, standardize_X: bool = False, dense: bool | None = None):
        self.d = design
        self.fam = family
        p = len(design.fixed_names)
        if design.source is not None:  # Dask: one block of rows per partition, on the workers
            src = design.source
            self.rows = DaskRows(src, family)
            self.shift, self.scale, self.S = (
                (src.shift, src.scale, src.S) if standardize_X else (np.zeros(p), np.ones(p), np.eye(p))
            )
            self.plan: FactorPlan | None = None  # from the first pass's blocks
        else:
            disp_X = None if design.disp is None else design.disp.X
            block = RowBlock(
                family,
                design.y,
                design.X,
                design.weights,
                design.offset,
                design.terms,
                design.trials,
                design.zi,
                disp_X,
            )
            if dense is None:  # a small model: one LAPACK factor, only the row passes compiled
                one_intercept = len(design.terms) == 1 and design.terms[0].p == 1
                dense = small_model(design.terms) and not one_intercept
            self.plan = FactorPlan(design.terms, block.pattern(), dense=dense)
            block.attach_plan(self.plan)
            self.rows = LocalRows(block)
            self.shift, self.scale, self.S = (
                standardize(design.X, design.fixed_names, design.gram)
                if standardize_X
                else (np.zeros(p), np.ones(p), np.eye(p))
            )
        self.tmap = ThetaMap(design.terms)
        self._u = [np.zeros(t.q) for t in design.terms]
        # each term's (first, end) in the vector of all modes
        self._term_bounds = list(itertools.pairwise(int(e) for e in np.cumsum([0, *(t.q for t in design.terms)])))
        self.last_run: tuple | None = None  # (θ, β, φ, state) of the last PIRLS run in u alone
        # one scalar term of a canonical binomial or Poisson model, not many rows: PIRLS, the
        # Laplace deviance and its gradient group by group (scalarterm), without the factor
        self.scalar = None
        if isinstance(self.rows, LocalRows) and self.rows.block.compiled and self.tmap.linear:
            terms = design.terms
            if len(terms) == 1 and terms[0].p == 1 and design.nobs <= SCALAR_TERM_ROWS:
                self.scalar = ScalarTerm(self.rows.block)

    # ------------------------------------------------------------- PIRLS
    @property
    def has_gradient(self) -> bool:
        """Whether the Laplace deviance has its analytic gradient here (gradient.laplace_gradient):
        in memory, with a log-determinant that takes the observed information −ℓ'' (which the
        gradient's response of the modes assumes): a canonical binomial or Poisson model (where
        it is the expected one), and every family whose Laplace approximation takes the observed
        information (Gamma, NB2, NB1, beta, Gaussian with a link) or with zero-inflation, with a
        link defined on the whole line (``Family.whole_line_link``): with the inverse, identity or
        sqrt link a step can leave the link's domain, which derivative-free BOBYQA steps back from
        more surely than L-BFGS-B's line search."""
        if not isinstance(self.rows, LocalRows):
            return False
        fam = self.fam
        if self.rows.block.compiled:
            return True
        return (self.d.zi is not None or fam.laplace_observed) and fam.whole_line_link

    def gradient_channels(self) -> tuple[str, ...]:
        """The parameters after (θ, β) in the gradient: log φ, then the zero-inflation's γ."""
        if self.fam.thresholds:  # an ordinal model: its thresholds' coordinates a
            return ("thresholds",)
        return (("log_phi",) if self.fam.has_dispersion else ()) + (("zeta",) if self.d.zi is not None else ())

    def pirls(
        self, theta, beta, phi=1.0, joint=False, maxit=60, with_X=False, tol=1e-10, _restarted=False
    ) -> PirlsState:
        """Conditional modes û (and β̂ too when ``joint``) at θ by penalised IRLS with step-halving,
        to steps below ``tol`` relative to 1 + max|u|.

        Each evaluation is one pass over the rows (:meth:`RowBlock.evaluate`): the penalised
        deviance at (β, u) and the blocks of the working system there; the solve is level-sized."""
        fam = self.fam
        lams = self.tmap.lams(np.asarray(theta, dtype=float))
        # the modes as one vector U, and per term as views of it (the rows' passes take them so)
        bounds = self._term_bounds

        def parts(U_):
            return [U_[a:b] for a, b in bounds]

        U = np.concatenate(self._u)
        beta = np.asarray(beta, dtype=float).copy()

        # Newton steps on the observed information where the whole system is positive definite
        # even if some rows are not (NB1, beta, cauchit): quadratic convergence to the modes, so
        # the gradient built on them is exact; the expected information where it is not
        steps = "laplace" if fam.exact and fam.laplace_observed and not fam.observed_positive else "newton"

        def evaluate(U_, beta_, info=steps):
            ll, cp_ = self.rows("evaluate", self.S @ beta_, lams, parts(U_), phi, joint, self.shift, self.scale, info)
            return -2 * ll + float(U_ @ U_), ll, cp_

        def factor(blocks):
            if isinstance(blocks, CrossProducts):  # Dask: summed on the workers
                if self.plan is None:
                    self.plan = FactorPlan(self.d.terms, blocks)
                blocks = self.plan.load(blocks)
            return Factor(self.plan, blocks, lams)

        def newton(cp_, beta_):
            """The factor of the working system and the (β, U) it proposes."""
            L_ = factor(cp_)
            nb = L_.beta() if joint else beta_
            return L_, nb, L_.u_flat(nb if joint else np.zeros(0))

        if joint and not with_X and self.scalar is not None and self.rows.block.rowmap.numpy_rows and not _restarted:
            # one scalar term, few rows (the passes here are numpy's too): the joint modes group by
            # group, then this pass's factor there. With more rows the compiled joint pass costs
            # less than the numpy Newton steps (Bernoulli 1e5: 1.13x slower group by group)
            found = self.scalar.joint_modes(
                float(lams[0][0, 0]), beta, U, self.S, self.shift, self.scale, maxit=maxit, tol=tol
            )
            if found is not None:
                U, beta = found
                _, ll, cp = evaluate(U, beta)
                if cp is not None:
                    self._u = [U.copy()]
                    return PirlsState(parts(U), beta, factor(cp), ll, True)

        # warm start from the previous modes; from u = 0 if that start is unusable
        obj, ll, cp = evaluate(U, beta)
        if not np.isfinite(obj):
            U = np.zeros_like(U)
            obj, ll, cp = evaluate(U, beta)
        converged = False
        L = None
        for _ in range(maxit):
            if cp is None:
                break  # the start is outside the link's domain: reported below
            try:
                L, new_beta, new_U = newton(cp, beta)
            except np.linalg.LinAlgError:
                try:  # an observed (or zero-inflation's exact) system is indefinite here: a positive one
                    if self.d.zi is None and steps == "newton":
                        raise
                    _, _, cp = evaluate(U, beta, "safe" if self.d.zi is not None else "newton")
                    L, new_beta, new_U = newton(cp, beta)
                except np.linalg.LinAlgError:
                    L = None
                    break  # a degenerate working system: report non-convergence, keep the best so far
            size = 1 + _largest(U)
            dU, dbeta = new_U - U, new_beta - beta
            proposed = max(_largest(dU), _largest(dbeta))
            if proposed < tol * size:  # at the modes already: L is the factor there
                converged = True
                break
            step = 1.0
            for _half in range(12):
                cand_U = U + step * dU
                cand_beta = beta + step * dbeta
                cand_obj, cand_ll, cand_cp = evaluate(cand_U, cand_beta)
                if np.isfinite(cand_obj) and cand_obj <= obj + 1e-10 * abs(obj):
                    break
                step /= 2
            else:
                break
            change = obj - cand_obj
            delta = max(_largest(cand_U - U), _largest(cand_beta - beta))
            U, beta, obj, ll, cp = cand_U, cand_beta, cand_obj, cand_ll, cand_cp
            L = None
            size = 1 + _largest(U)
            if delta < tol * size or (abs(change) < 1e-14 * (1 + abs(obj)) and delta < 1e-7 * size):
                converged = True
                break
        us = parts(U)
        if not converged and not _restarted and any(np.any(u) for u in self._u):
            self._u = [np.zeros_like(u) for u in self._u]  # a poor warm start: try again from u = 0
            return self.pirls(theta, beta, phi, joint, maxit, with_X, tol, _restarted=True)
        # The factor at the modes, with the information of the Laplace log-determinant: the
        # last evaluation's blocks unless the Newton steps used another one (probit: observed
        # for the steps, expected for the log-determinant, as lme4), or R_X is wanted too.
        if cp is None:
            raise FitError(
                f"PIRLS diverged at theta = {np.round(theta, 4).tolist()}: the linear predictor left the "
                f"{fam.link_name} link's domain or overflowed. Try another link (log for Gamma), rescale "
                "the predictors, or check the response"
            )
        # The Newton steps' information is the Laplace one for a canonical link and where the
        # observed one is positive in every row; elsewhere (NB1, beta, zero-inflation, other
        # links) the steps may have taken another, and the log-determinant takes the observed one
        newton_is_laplace = self.d.zi is None and (fam.canonical or fam.observed_positive)
        if not newton_is_laplace or (with_X and not joint):
            saved = joint
            joint = joint or with_X
            _, ll, cp = evaluate(U, beta, "laplace")
            joint = saved
            L = None
            if cp is None:  # the log-determinant's information is not finite at the modes
                raise FitError(f"the Laplace approximation is not defined at theta = {np.round(theta, 4).tolist()}")
        if L is None:
            L = factor(cp)
        self._u = [u.copy() for u in us]
        state = PirlsState(us, beta, L, ll, converged)
        if not joint:  # kept with its point for _mode_predictor
            self.last_run = (np.array(theta, dtype=float), beta, phi, state)
        return state

    def set_zero_inflation(self, gamma) -> None:
        """Use the zero-inflation coefficients γ from here on (a zero-inflated model only)."""
        self.rows("set_zero_inflation", np.asarray(gamma, dtype=float))

    # ------------------------------------------------------------- objectives
    def laplace(self, st: PirlsState) -> float:
        """−2ℓ ≈ −2 Σ log f(y|μ̂) + ‖û‖² + log|L|²."""
        return -2 * st.loglik_cond + sum(float(u @ u) for u in st.u) + st.factor.logdet_Z

    def agq(self, st: PirlsState, theta: np.ndarray, phi: float, nAGQ: int) -> float:
        """Adaptive Gauss–Hermite −2ℓ for a single scalar random-effects term."""
        s = 1.0 / st.factor.L00[:, 0, 0]  # H = λ² Σ w + 1 per group; s = H^(−1/2)
        return self._agq_value(st.beta, float(theta[0]), st.u[0], s, phi, nAGQ)

    def laplace_gradient(self, theta, beta, phi=1.0, channels=()) -> tuple[float, np.ndarray]:
        """(Laplace −2ℓ, its gradient in (θ, β) and the ``channels``): group by group for one
        scalar term (:class:`~.scalarterm.ScalarTerm`), else :func:`~.gradient.laplace_gradient`."""
        if self.scalar is not None and not channels:
            out = self._scalar_laplace(theta, beta, gradient=True)
            if out is not None:
                return out
        return laplace_gradient(self, theta, beta, phi, channels)

    def _scalar_laplace(self, theta, beta, gradient: bool):
        """:class:`~.scalarterm.ScalarTerm`'s −2ℓ (and gradient in (θ, β)) from the last modes,
        which it then keeps; None where its PIRLS does not converge."""
        theta = np.asarray(theta, dtype=float)
        lam = float(self.tmap.lams(theta)[0][0, 0])
        out = self.scalar.laplace(lam, self.S @ np.asarray(beta, dtype=float), self._u[0], gradient)
        if out is None:
            return None
        value, u, grads = out
        self._u = [u]
        if not gradient:
            return value
        g_lam, g_raw = grads
        return value, np.concatenate([self.tmap.jacobian[0][:, 0, 0] * g_lam, self.S.T @ g_raw])

    def objective(self, theta, beta, phi, nAGQ=1, joint=False) -> float:
        """−2 log-likelihood (Laplace or AGQ) at (θ, β, φ); β from PIRLS when ``joint``."""
        if self.scalar is not None and nAGQ == 1 and not joint:
            value = self._scalar_laplace(theta, beta, gradient=False)
            if value is not None:
                return value
        if nAGQ > 1 and not joint and self._scalar_agq:
            modes = self.scalar_modes(float(theta[0]), beta, phi)
            if modes is not None:
                u, s = modes
                return self._agq_value(beta, float(theta[0]), u, s, phi, nAGQ)
        try:
            st = self.pirls(theta, beta, phi, joint=joint)
        except (np.linalg.LinAlgError, FloatingPointError, FitError):  # FitError: PIRLS diverged here
            return np.inf
        if nAGQ > 1:
            return self.agq(st, np.asarray(theta), phi, nAGQ)
        return self.laplace(st)

    @property
    def _scalar_agq(self) -> bool:
        """Whether :meth:`scalar_modes` serves the quadrature: its Newton steps and the scale of
        the nodes take the observed information, which is the Laplace one for these families."""
        fam = self.fam
        return self.d.zi is None and self.d.disp is None and (fam.canonical or fam.laplace_observed)

    def scalar_modes(self, lam: float, beta, phi, maxit: int = 60):
        """The conditional modes û of a single scalar term with β fixed, group by group (each
        group's u is a scalar, so PIRLS is a vectorised Newton iteration with per-group step
        halving), and the nodes' scale s = (λ²Σwᵢzᵢ² + 1)^(−1/2) at û. None where a group's
        information is not positive or the iteration fails: the general PIRLS then takes over."""
        beta_raw = self.S @ np.asarray(beta, dtype=float)
        u = np.array(self._u[0], dtype=float)

        def at(u_):
            ll, grad, info = self.rows("scalar_sums", beta_raw, lam, u_, phi)
            return -2 * ll + u_ * u_, grad - u_, info + 1.0

        obj, grad, hess = at(u)
        if not (np.all(np.isfinite(obj)) and np.all(hess > 0)):
            u = np.zeros_like(u)
            obj, grad, hess = at(u)
        for _ in range(maxit):
            if not (np.all(np.isfinite(obj)) and np.all(hess > 0)):
                return None
            step = grad / hess
            if np.max(np.abs(step)) < 1e-10 * (1 + np.max(np.abs(u), initial=0)):
                self._u = [u]
                return u, 1.0 / np.sqrt(hess)
            size = np.ones_like(u)
            for _half in range(12):  # halve the step of each group whose deviance rose
                cand = u + size * step
                c_obj, c_grad, c_hess = at(cand)
                worse = ~(np.isfinite(c_obj) & (c_obj <= obj + 1e-10 * np.abs(obj)))
                if not np.any(worse):
                    break
                size = np.where(worse, size / 2, size)
            else:
                return None
            u, obj, grad, hess = cand, c_obj, c_grad, c_hess
        return None

    def _agq_value(self, beta, lam: float, u, s, phi, nAGQ: int) -> float:
        """Adaptive Gauss–Hermite −2ℓ at the modes u with the nodes' scales s."""
        nodes, weights = _gauss_hermite(nAGQ)
        ll = self.rows("agq_terms", self.S @ np.asarray(beta, dtype=float), lam, u, s, nodes, phi)
        uk = u[None, :] + s[None, :] * nodes[:, None]
        terms = np.log(weights)[:, None] + ll - uk**2 / 2 + nodes[:, None] ** 2 / 2
        mx = terms.max(axis=0)
        logsum = mx + np.log(np.exp(terms - mx).sum(axis=0))
        logL = np.log(s) - 0.5 * np.log(2 * np.pi) + logsum
        return float(-2 * logL.sum())


@lru_cache(maxsize=32)
def _gauss_hermite(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite nodes and weights for the weight e^(−t²/2), computed once per k."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(k)
    nodes.flags.writeable = weights.flags.writeable = False
    return nodes, weights


def _glm_start(design: Design, family: Family, prob: GLMMProblem):
    """β_s and φ from a GLM without random effects, as the seed says: IRLS on the rows in memory
    (:func:`~.glm.fit_glm`); on Dask data PIRLS with θ = 0."""
    p = prob.S.shape[0]
    if design.source is not None:
        if family.shape_dispersion:
            raise FitError(
                f"{family.name} models are fitted in memory only for now (their start needs the rows); "
                "compute() the Dask DataFrame or fit a Poisson model with an observation-level effect"
            )
        st = prob.pirls(np.zeros(len(prob.tmap)), np.zeros(p), joint=True)
        prob._u = [np.zeros(t.q) for t in design.terms]
        beta = st.beta
        dev = prob.rows("deviance", prob.S @ beta, prob.tmap.lams(np.zeros(len(prob.tmap))), st.u)
        phi = dev / design.nobs if family.has_dispersion else 1.0
        return beta, max(phi, 1e-8)
    X = (design.X - prob.shift) / prob.scale
    if family.thresholds:  # an ordinal model: β = 0 (its thresholds: d0 below)
        return np.zeros(X.shape[1]), 1.0
    beta, phi = None, 1.0
    start = family.start_family()
    try:
        block = getattr(prob.rows, "block", None)
        canonical = None
        if start is family and block is not None and block.compiled:  # its log-likelihood's pieces
            _, _, _, _, a, b = block.canonical_rows
            canonical = (family.kernel_link, a, b)
        with np.errstate(all="ignore"):  # a separated response runs μ to 0 or 1: the fit says so in its words
            glm = fit_glm(design.y, X, start, design.offset, design.weights, canonical=canonical)
        beta = glm.beta
        phi = family.dispersion_start(design.y, glm.mu, design.weights, glm.deviance / design.nobs)
    except (np.linalg.LinAlgError, FloatingPointError):
        beta = None
    if beta is None or not np.all(np.isfinite(beta)) or not np.isfinite(phi):
        return np.zeros(X.shape[1]), 1.0  # PIRLS is robust to a poor start
    return beta, max(phi, 1e-8)


def _working_moments(design: Design, family: Family, prob: GLMMProblem, beta: np.ndarray, phi: float):
    """θ from the one-way ANOVA moments (:func:`~.lmm.moment_start`) of the GLM start's working
    response z = η − offset + (y − μ)/μ' with weights w μ'²/V(μ) (penalised quasi-likelihood's
    first step): λ is the moments' σ̂_b itself (``residual=1``; a GLMM's λ is not relative to a
    residual SD), which a common factor of the weights leaves unchanged. None where it does not
    apply (rows not in memory, a structured or nonlinear λ) or is not finite. A start only, and
    biased low for binomial responses as PQL is (VerbAgg 1.04 against θ̂ 1.34; Poisson within a few
    hundredths): θ is scaled by the family's :attr:`Family.working_moments_scale` (binomial 1.25;
    from θ₀ instead of the raw moments, which θ₀ beat, crossed Bernoulli 6e4 took 11 gradients, from
    these 7), and the search takes it to the Laplace optimum."""
    tm = prob.tmap
    if design.source is not None or not tm.linear or any(t.structured for t in tm.terms):
        return None
    with np.errstate(all="ignore"):
        X = (design.X - prob.shift) / prob.scale
        eta = X @ beta + design.offset
        mu = family.linkinv(eta)
        d = family.mu_eta(eta, mu)
        w = design.weights * d * d / family.variance(mu, phi)
        z = eta - design.offset + (design.y - mu) / d
        if not (np.all(np.isfinite(z)) and np.all(np.isfinite(w)) and np.all(w >= 0)):
            return None
        try:
            cp = CrossProducts.from_rows(design.terms, design.X, z, w, prob.shift, prob.scale, beta_removed=beta)
            theta = moment_start(cp, tm, residual=1.0)
        except (np.linalg.LinAlgError, FloatingPointError):  # degenerate moments: θ₀ starts
            return None
    theta = theta * family.working_moments_scale
    return theta if np.all(np.isfinite(theta)) else None


def _accuracy_notes(design: Design, family: Family, rows) -> list[str]:
    """The seed's caution: Laplace loses accuracy with small groups or rare binomial events."""
    single = len(design.terms) == 1 and design.terms[0].p == 1
    sizes, totals, events, trials = rows("totals")  # per group: trials (Σw) and Σy
    return family.laplace_cautions(design.terms[0].group_name, sizes, totals, events, trials, single)


def fit_glmm(
    design: Design,
    family: Family,
    nAGQ: int = 1,
    fast: bool = False,
    optimizer: str | None = None,
    standardize_X: bool = True,
) -> Estimates:
    """Fit a GLMM by Laplace (nAGQ = 1), adaptive Gauss–Hermite (nAGQ > 1) or nAGQ = 0 (``fast``);
    :meth:`MixedModel.fit` has checked that the nAGQ and fast asked for apply to the model.

    Returns
    -------
    Estimates
    """
    prob = GLMMProblem(design, family, standardize_X)
    # exp overflows and log(0)s of rejected steps are handled (the step is halved); not the user's
    with fit_threads(THREADED_TAIL if prob.plan is None else prob.plan.qt), np.errstate(all="ignore"):
        return _optimize_glmm(design, family, prob, nAGQ, fast, optimizer)


#: stage 2's L-BFGS-B stops at relative gains below this (nlminb's rel.tol, glmmTMB's): the
#: Newton step on the convergence check's derivatives then completes the optimum. At the default
#: 1e-13 it spent 2-5 more gradients (of 14-33) gaining less than 1e-8 in the deviance, and a
#: coefficient running to its boundary (zero-inflation) gains ever less for ever more iterations
STAGE2_FTOL = 1e-10

#: stage 1's PIRLS stops at steps below this (relative): its θ is only stage 2's start, and the
#: Laplace deviance is off by about this much times its slope in u (far below stage 1's ftol_abs)
STAGE1_PIRLS_TOL = 1e-7

#: the PIRLS run that weighs the working moments' start against θ₀ stops at steps below this
#: (relative): the Laplace deviance is stationary in the modes, so it is off by about the square,
#: far below the gaps between two starts; at 1e-10 the run cost crossed_binary_6e4 ~8% of its fit
START_PIRLS_TOL = 1e-4

#: Newton steps tried when stage 2 stops short of the gradient check, before a restart
NEWTON_RESCUES = 3

#: stage 2's BOBYQA: first trust-region radius and stopping rule (then one Newton step)
STAGE2_STEP = 0.05
STAGE2_STOP = {"ftol_rel": 0.0, "ftol_abs": 1e-7, "xtol_rel": 1e-7, "xtol_abs": 0.0}


def _laplace_fun_grad(prob: GLMMProblem, split):
    """(θ, β, log φ, γ) → (Laplace −2ℓ, gradient); (∞, 0) where PIRLS fails (a step the optimizer
    rejects). ``split``: the parameter vector's parts. The two answers used last are kept with
    their points: the derivatives at the optimizer's result start with the gradient its last
    step computed, and the search starts with the gradient its units' probes computed."""
    channels = prob.gradient_channels()
    kept: list = []  # the last two points, each with (−2ℓ, gradient) there

    def fun_grad(par):
        par = np.asarray(par, dtype=float)
        for i, (point, (value, grad)) in enumerate(kept):
            if np.array_equal(point, par):
                kept.append(kept.pop(i))  # the most recently used is kept longest
                return value, grad.copy()
        theta, beta, phi, gamma = split(par)
        try:
            if len(gamma):
                prob.set_zero_inflation(gamma)
            value, grad = prob.laplace_gradient(theta, beta, phi, channels)
        except (np.linalg.LinAlgError, FloatingPointError, FitError):
            value, grad = np.inf, np.zeros(len(par))
        kept[:] = [*kept[-1:], (par.copy(), (value, grad.copy()))]
        return value, grad

    return fun_grad


def _mode_predictor(prob: GLMMProblem, x: np.ndarray, nt: int, p: int, phi):
    """A warm start for PIRLS runs near x = (θ, β, …): û(x + e) ≈ û(x) + (dû/d(θ, β)) e
    (:func:`~.gradient.mode_derivatives`; nothing in the other coordinates), an error O(|e|²).
    The Hessian's differences step 1e-4 from x: from û(x) a PIRLS run to 1e-10 takes three
    passes, from the prediction two. Returns a function setting the start at a point, or None
    (PIRLS does not converge at x)."""
    theta, beta = x[:nt], x[nt : nt + p]
    if prob.scalar is not None:  # one scalar term: its modes and their derivatives group by group
        if prob._scalar_laplace(theta, beta, gradient=False) is None:
            return None
        U0 = prob._u[0]
        lam = float(prob.tmap.lams(theta)[0][0, 0])
        D = prob.scalar.mode_derivatives(lam, prob.S @ beta, U0, prob.S)
        if D is None:
            return None
        D[:, 0] *= prob.tmap.jacobian[0][0, 0, 0]  # dλ/dθ
        cuts = []
    else:
        last = prob.last_run
        if (
            last is not None
            and np.array_equal(last[0], theta)
            and np.array_equal(last[1], beta)
            and np.array_equal(last[2], phi)
        ):
            st = last[3]  # the gradient at x has just run PIRLS there
        else:
            st = prob.pirls(theta, beta, phi)
        if not st.converged:
            return None
        D = mode_derivatives(prob, st, theta, beta, phi)
        U0 = np.concatenate(st.u)
        cuts = np.cumsum([u.size for u in st.u])[:-1]

    def start_at(point: np.ndarray) -> None:
        prob._u = np.split(U0 + D @ (point[: nt + p] - x[: nt + p]), cuts)

    return start_at


#: largest dense tail for which the joint stage uses the analytic gradient by default; beyond it
#: the selected inversion of the tail costs more evaluations than the gradient saves
GRADIENT_MAX_TAIL = 1000


def _optimize_glmm(design: Design, family: Family, prob: GLMMProblem, nAGQ: int, fast: bool, optimizer: str | None):
    """Stage 1 (θ with β from PIRLS), stage 2 (θ, β jointly) and the estimates at the optimum.

    Where the Laplace deviance has its analytic gradient (:attr:`GLMMProblem.has_gradient`: a
    canonical binomial or Poisson model, or an observed-information family with a whole-line
    link, zero-inflated or not; in memory, default optimizer) the Hessian for the standard errors
    is forward differences of that gradient (k + 1 gradients; a gradient costs 1.5-5 PIRLS runs, the
    deviance's differences need 1 + 2k + k(k−1) runs), and stage 2 runs L-BFGS-B on it when the
    dense tail has at most :data:`GRADIENT_MAX_TAIL` random effects (BOBYQA beyond it), from θ₀
    without stage 1 unless it stops at a saddle on θ's bound (:func:`_descent_from_bound`).
    Otherwise BOBYQA and finite differences of the deviance, after stage 1.
    The parameters are (θ, β, log φ, γ): φ where the family has one, γ the zero-inflation's."""
    gradient_ok = prob.has_gradient and nAGQ == 1 and not fast and optimizer in (None, "lbfgsb")
    # quadrature starts from the Laplace optimum, reached on its analytic gradient where there is
    # one (a few dozen PIRLS runs instead of stage 1's derivative-free search)
    laplace_first = prob.has_gradient and nAGQ > 1 and not fast and optimizer is None
    use_gradient = gradient_ok and (optimizer == "lbfgsb" or prob.plan.qt <= GRADIENT_MAX_TAIL)
    optimizer = optimizer or "bobyqa"
    tm = prob.tmap
    S = prob.S
    p = S.shape[0]
    beta0, phi0 = _glm_start(design, family, prob)
    disp = family.has_dispersion or family.thresholds
    Xd = None if design.disp is None else design.disp.X  # a dispersion model: log φᵢ = (X_d γ)ᵢ
    nt, nd = len(tm), (int(disp) if Xd is None else Xd.shape[1])
    if family.thresholds:  # an ordinal model: φ is the thresholds τ, through the ordered a
        nd = len(design.response_levels) - 1

    def phi_of(par_d):
        """φ of the dispersion parameters: exp(log φ), exp(X_d γ) row by row, or the thresholds."""
        if family.thresholds:
            return family.thresholds_of(par_d)
        return float(np.exp(par_d[0])) if Xd is None else np.exp(Xd @ par_d)

    # the dispersion's start: log φ₀, the γ of a constant log φ₀ (least squares on X_d), or the
    # thresholds of the marginal proportions
    if family.thresholds:
        d0 = family.threshold_start(design.y, design.weights, nd + 1)
    elif Xd is None:
        d0 = [np.log(phi0)]
    else:
        d0 = np.linalg.lstsq(Xd, np.full(len(Xd), np.log(phi0)), rcond=None)[0]
    # zero-inflation: γ starts at 0 (π = 1/2), glmmTMB's start; from the share of excess zeros
    # instead, the NB1 Salamanders fit ends in a poorer local optimum
    nz = 0 if design.zi is None else design.zi.X.shape[1]
    gamma0 = np.zeros(nz)

    # Stage 1: θ (and log φ, and the zero-inflation γ) with β from PIRLS — lme4's nAGQ = 0.
    def split1(par):
        return par[:nt], beta0, phi_of(par[nt : nt + nd]) if disp else 1.0, par[nt + nd :]

    # each stage-1 PIRLS starts from the last one's β as well as its modes: from β₀ every time,
    # the joint steps walk β from the GLM's estimate again at each θ (6 passes a run, not 3)
    warm = {"beta": beta0}

    def stage1(par):
        th, _, phi, gamma = split1(par)
        if nz:
            prob.set_zero_inflation(gamma)
        try:
            st1 = prob.pirls(th, warm["beta"], phi, joint=True, tol=1e-10 if fast else STAGE1_PIRLS_TOL)
        except (np.linalg.LinAlgError, FloatingPointError, FitError):  # FitError: PIRLS diverged here
            return np.inf
        if st1.converged:
            warm["beta"] = st1.beta
        return prob.laplace(st1)

    lower1 = np.concatenate([tm.lower, np.full(nd + nz, -np.inf)])
    ctl = current_control()
    theta1 = tm.start if ctl is None or ctl.start is None else np.asarray(ctl.start, dtype=float)
    x1 = np.concatenate([theta1, d0 if disp else [], gamma0])
    # a start for stage 2 need not be precise (θ to 1%, the deviance to 0.01); with fast=True
    # this is the fit itself
    tol1 = {} if fast else {"ftol_rel": 1e-8, "ftol_abs": 1e-2, "xtol_rel": 1e-2}
    # With the analytic gradient stage 2 starts at θ₀ itself, β from PIRLS there (glmmTMB starts
    # alike); the one way that goes wrong, a θ run onto its bound 0 where the gradient vanishes by
    # symmetry though the deviance falls away from it, is caught after stage 2 (below) and the fit
    # then redone the long way, as it is when PIRLS fails at θ₀ or the search cannot leave it.
    straight = use_gradient and not fast and not laplace_first
    # the straight search starts from the moments of the GLM's working response where they apply
    # (:func:`_working_moments`) unless θ₀ is better (the Laplace deviance, β from PIRLS at each:
    # a start worse than θ₀, however far, is never taken); stage 1 (the long way) keeps lme4's θ₀
    # (not for a model of one θ whose family's moments are biased low, Family.working_moments_scale:
    # binomial; a search in one θ from θ₀ takes few more steps than from closer, and the guard's
    # PIRLS run cost more than it saved, cbpp and a 1e4-row Bernoulli 1.08-1.11x)
    moments = None
    low_one = len(tm) == 1 and family.working_moments_scale != 1.0
    if straight and (ctl is None or ctl.start is None) and not (nz or Xd is not None or family.thresholds or low_one):
        moments = _working_moments(design, family, prob, beta0, phi0)
        if moments is not None and np.array_equal(moments, theta1):
            moments = None

    start: dict = {}

    def stage_one(skip: bool, theta_start: np.ndarray = theta1, tol: float = 1e-10):
        """Stage 1's optimum (or its start with θ = ``theta_start``, ``skip``), and θ, β (PIRLS to
        ``tol``) and γ there."""
        if skip:
            opt1 = OptResult(np.concatenate([theta_start, x1[nt:]]), np.nan, 0, True, "", "start")
        else:
            opt1 = minimize_bounded(stage1, x1, lower1, optimizer, polish=fast, tolerances=tol1)
        theta1, _, phi1, gamma1 = split1(opt1.x)
        if nz:
            prob.set_zero_inflation(gamma1)
        st1 = prob.pirls(theta1, warm["beta"], phi1, joint=True, tol=tol)
        # the search's units (a dispersion model's or a zero-inflation's coefficients: none; their
        # probed curvatures made those searches longer)
        start["units"] = None if nz or Xd is not None else _search_units(prob, st1, theta1, nd)
        start["deviance"] = prob.laplace(st1) if st1.converged else np.inf
        return opt1, theta1, st1.beta, gamma1

    if straight:
        try:
            opt, theta, beta, gamma = stage_one(True)
        except (np.linalg.LinAlgError, FloatingPointError, FitError):  # PIRLS fails at θ₀: the long way
            straight = False
    if straight and moments is not None:
        at_theta0, modes0 = dict(start), prob._u  # θ₀'s state, kept should θ₀ stay the start
        try:
            found = stage_one(True, moments, tol=START_PIRLS_TOL)
        except (np.linalg.LinAlgError, FloatingPointError, FitError):
            found = None
        if found is not None and start["deviance"] < at_theta0["deviance"]:
            opt, theta, beta, gamma = found
        else:
            start.update(at_theta0)
            prob._u = modes0
    if not straight:
        opt, theta, beta, gamma = stage_one(laplace_first)

    if fast:
        lower, fun, split = lower1, stage1, split1
        method = "nAGQ=0"
    else:
        # Stage 2: θ, β (and log φ, γ) jointly on the Laplace / AGQ likelihood.
        def split(par):
            return (
                par[:nt],
                par[nt : nt + p],
                phi_of(par[nt + p : nt + p + nd]) if disp else 1.0,
                par[nt + p + nd :],
            )

        def fun(par):
            th, b, ph, gamma = split(par)
            if nz:
                prob.set_zero_inflation(gamma)
            return prob.objective(th, b, ph, nAGQ=nAGQ)

        lower = np.concatenate([tm.lower, np.full(p + nd + nz, -np.inf)])
        # With the analytic gradient: L-BFGS-B on it. Otherwise BOBYQA: stage 1 leaves θ close
        # and β from PIRLS at it, so a narrow first trust region and a stop at gains below 1e-7,
        # which the Newton step from the convergence check's derivatives then completes
        # (optimizer="lbfgsb" without the gradient: forward differences, each a PIRLS run).
        fun_grad = _laplace_fun_grad(prob, split) if gradient_ok or laplace_first else None

        def stage_two(opt1, theta1, beta1, gamma1):
            x2 = np.concatenate([theta1, beta1, opt1.x[nt : nt + nd] if disp else [], gamma1])
            if laplace_first:

                def laplace(par):
                    th, b, ph, _ = split(par)
                    return prob.objective(th, b, ph)

                x2 = minimize_bounded(laplace, x2, lower, "lbfgsb", fun_grad=fun_grad).x
            return search(x2)

        def search(x2):
            if use_gradient:
                units = _probe_units(fun_grad, x2, start.get("units"))
                tol = {"ftol_rel": STAGE2_FTOL}
                return minimize_bounded(fun, x2, lower, "lbfgsb", fun_grad=fun_grad, tolerances=tol, scale=units)
            return minimize_bounded(
                fun, x2, lower, optimizer, polish=False, jac="2-point", step=STAGE2_STEP, tolerances=STAGE2_STOP
            )

        opt = stage_two(opt, theta, beta, gamma)
        if straight and not (np.isfinite(opt.fun) and opt.fun < 1e299):  # the search could not move
            opt, straight = stage_two(*stage_one(False)), False
        method = "Laplace" if nAGQ == 1 else "AGQ"

    # PIRLS runs near the point of the last derivatives start from the modes predicted there
    # (_mode_predictor): the gradient's differences, and the Newton steps from them
    predicted = {"start_at": None}

    def near(f):
        start_at = predicted["start_at"]
        if start_at is None:
            return f

        def f_predicted(par):
            start_at(par)
            return f(par)

        return f_predicted

    # one set of derivatives serves the convergence check, a possible restart and the SEs
    def derivatives(x, fx):
        if gradient_ok:  # forward differences of the gradient at 1e-4: k + 1 gradients, not 2k + 1;
            # the standard errors stay within 5e-5 (relative) of central differences' on the
            # benchmark GLMMs, a hundredth of the tolerance we hold against lme4
            predicted["start_at"] = None
            if not nz:
                predicted["start_at"] = _mode_predictor(prob, x, nt, p, split(x)[2])
            return gradient_derivatives(near(fun_grad), x, h=1e-4)
        # quadrature on one scalar term of a canonical model in memory: its modes group by group,
        # predicted alike (ScalarTerm's derivatives)
        predicted["start_at"] = _mode_predictor(prob, x, nt, p, 1.0) if nAGQ > 1 and prob.scalar is not None else None
        return fd_derivatives(near(fun), x, h=1e-3, f0=fx)

    g, H = derivatives(opt.x, opt.fun)
    down = _descent_from_bound(opt.x[:nt], tm.lower, g[:nt], H[:nt, :nt]) if straight else None
    if down is not None:
        # stopped at a saddle on the bound: the search again from a step inside along the way
        # down, and if that still ends on a saddle, the long way (stage 1's search, then stage 2)
        nudged = opt.x.copy()
        nudged[:nt] += BOUND_NUDGE * down
        tries = [lambda: search(nudged), lambda: stage_two(*stage_one(False))]
        for attempt in tries:
            again = attempt()
            if again.fun < opt.fun:
                opt = again
                g, H = derivatives(opt.x, opt.fun)
                if _descent_from_bound(opt.x[:nt], tm.lower, g[:nt], H[:nt, :nt]) is None:
                    break
    # BOBYQA can stop where the gradient check fails (many parameters, one of them a dispersion on
    # another scale), and L-BFGS-B at its relative gain (STAGE2_FTOL) before the check's precision;
    # Newton steps from the check's derivatives usually finish the job for a few derivative sets,
    # far cheaper than restarting the search
    for _ in range(NEWTON_RESCUES):
        if gradient_size(fun, opt.x, lower, H, g)[0] <= 2e-3:
            break
        stepped = newton_step(near(fun), opt, lower, g, H)
        if stepped is opt:
            break
        opt = stepped
        g, H = derivatives(opt.x, opt.fun)
    if not use_gradient:
        opt, restarted = restart_if_unconverged(fun, opt, lower, H, g)
        if restarted:
            g, H = derivatives(opt.x, opt.fun)
    msgs = check_convergence(fun, opt, lower, hessian=H, gradient=g)
    stepped = newton_step(near(fun), opt, lower, g, H)
    if stepped is opt and predicted["start_at"] is not None:
        predicted["start_at"](opt.x)  # PIRLS at the optimum from its modes (a rejected step's are elsewhere)
    opt = stepped
    par = opt.x
    theta, beta, phi, gamma = split(par)
    if nz:
        prob.set_zero_inflation(gamma)
    st = prob.pirls(theta, beta, phi, joint=fast, with_X=fast)
    if not st.converged:
        msgs.append("PIRLS did not converge at the optimum: the conditional modes and the likelihood are approximate")
        warnings.warn(msgs[-1], ConvergenceWarning, stacklevel=3)
    beta = st.beta if fast else beta
    lams = tm.lams(theta)
    if family.checks_separation and prob.rows("boundary_rows", S @ st.beta, lams, st.u):
        msgs.append(
            "fitted probabilities numerically 0 or 1 occurred: a predictor (nearly) separates the outcomes, so "
            "some fixed effects run off to infinity and their estimates and standard errors mean nothing. "
            "Look for a predictor (or group) with only successes or only failures on one side; drop or merge "
            "it, or use a penalised (Firth / Bayesian) model"
        )
        warnings.warn(msgs[-1], ConvergenceWarning, stacklevel=3)
    crit = opt.fun
    singular = tm.singular(theta, SINGULAR_TOL)
    if fast:
        V, V_zi = st.factor.vcov_beta_unscaled(), None
    else:
        V = _vcov_block(H, fun, par, nt, p)
        V_zi = _zi_vcov(H, fun, par, nz) if nz else None
    V_disp = None
    if Xd is not None or family.thresholds:  # the block of 2·H⁻¹ (glmmTMB's), NaN where H has none
        try:
            V_disp = 2.0 * np.linalg.inv(H)[nt + p : nt + p + nd, nt + p : nt + p + nd]
        except np.linalg.LinAlgError:
            V_disp = np.full((nd, nd), np.nan)
    b = [u.reshape(-1, lam.shape[0]) @ lam.T for u, lam in zip(st.u, lams)]
    dev_resid = 0.0 if family.exact or nz or Xd is not None else prob.rows("deviance", S @ st.beta, lams, st.u, phi)
    thresholds = thresholds_vcov = None
    if family.thresholds:  # τ and its covariance J V_a J' (a the optimiser's coordinates)
        a = par[nt + p : nt + p + nd]
        Ja = family.threshold_jacobian(a)
        thresholds = family.thresholds_of(a)
        thresholds_vcov = Ja @ (V_disp if V_disp is not None else np.full((nd, nd), np.nan)) @ Ja.T
        V_disp = None
    est = Estimates(
        theta=theta,
        beta=S @ beta,
        vcov_beta=S @ V @ S.T,
        # glmmTMB's sigma(): NA where the dispersion differs by row; an ordinal model has none
        sigma=(family.sigma_of(phi) if Xd is None else np.nan) if family.has_dispersion else 1.0,
        b=b,
        condvar_fn=st.factor.condvar_blocks,
        llf=-0.5 * crit,
        criterion=crit,
        method=method,
        nAGQ=nAGQ,
        opt=opt,
        lower=tm.lower,
        singular=singular,
        convergence=msgs,
        dispersion=phi,
        n_params=nt + p + nd + nz,
        zi_params=gamma if nz else None,
        zi_vcov=V_zi,
        disp_params=None if Xd is None else par[nt + p : nt + p + nd].copy(),
        disp_vcov=V_disp,
        thresholds=thresholds,
        thresholds_vcov=thresholds_vcov,
    )
    scale = phi if family.residual_scale else 1.0  # NB2's θ is inside its deviance
    est.deviance = dev_resid / scale + sum(float(u @ u) for u in st.u) + st.factor.logdet_Z
    est.notes = _accuracy_notes(design, family, prob.rows) if nAGQ == 1 else []
    for note in est.notes:
        warnings.warn(note, LaplaceAccuracyWarning, stacklevel=3)
    return est


def _search_units(prob: GLMMProblem, st: PirlsState, theta: np.ndarray, extra: int) -> np.ndarray | None:
    """Units for L-BFGS-B's search in (θ, β, then ``extra`` coordinates: log φ or an ordinal
    model's thresholds) from the joint PIRLS state ``st`` at θ where it starts, for a model whose
    random-effects terms are all scalar (None otherwise).

    They are the reciprocal square roots of the deviance's curvatures: 2 diag(R_X R_X') for β,
    and for each θ_t the working model's expected information 4 Σ_l ((a_l − 1)/a_l)² / θ_t²
    over the term's levels, with a_l = L_ll² (θ_t² Σ_{i∈l} wᵢ + 1 for the first term, less
    what the earlier terms explain for the later ones). The extra coordinates are left NaN,
    for :func:`_probe_units`. Without units the first step, a unit step down the gradient,
    moves β by a whole unit of its standardised scale: many standard errors in a large data
    set, and a deviance thousands above the start."""
    P = prob.plan
    nt = len(theta)
    if P is None or nt != P.k or np.any(P.p_term != 1):
        return None
    L = st.factor
    try:
        RX = L.RX
    except np.linalg.LinAlgError:  # an observed information indefinite in β there (NB1): no units
        return None
    a = L.diagonal() ** 2
    off = P.term_off  # each term's first random effect, and q
    h = np.array([np.sum(((a[off[t] : off[t + 1]] - 1.0) / a[off[t] : off[t + 1]]) ** 2) for t in range(nt)])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.concatenate([4.0 * h / np.asarray(theta, dtype=float) ** 2, 2.0 * np.sum(RX**2, axis=1)])
    if not np.all(np.isfinite(h) & (h > 0)):
        return None
    return np.concatenate([1.0 / np.sqrt(h), np.full(extra, np.nan)])


#: the step of the probes that measure the curvature of log φ or a threshold for the search's units
PROBE_STEP = 1e-3


def _probe_units(fun_grad, x: np.ndarray, units: np.ndarray | None) -> np.ndarray | None:
    """``units`` with the coordinates it leaves open (NaN) measured: one gradient a
    ``PROBE_STEP`` along each, its change over the step the curvature (a unit of 1 where that
    is not positive). ``fun_grad`` keeps its answer at x (the search's first point) throughout."""
    if units is None or not np.isnan(units).any():
        return units
    units = units.copy()
    for j in np.flatnonzero(np.isnan(units)):
        g0 = fun_grad(x)[1]
        step = np.zeros(len(x))
        step[j] = PROBE_STEP
        value, g1 = fun_grad(x + step)
        curv = (g1[j] - g0[j]) / PROBE_STEP
        units[j] = 1.0 / np.sqrt(curv) if np.isfinite(value) and value < 1e299 and curv > 0 else 1.0
    fun_grad(x)
    return units


#: a θ within this of its lower bound 0 is on it (for :func:`_descent_from_bound`)
AT_BOUND = 1e-4
#: a θ on its bound with a deviance gradient below this is held there by symmetry, not pushed
SYMMETRIC_GRADIENT = 1e-3
#: the step into the interior from a saddle on θ's bound where the search starts again
BOUND_NUDGE = 0.1


def _descent_from_bound(theta: np.ndarray, lower: np.ndarray, g: np.ndarray, H: np.ndarray) -> np.ndarray | None:
    """A unit direction in θ into the interior along which the deviance falls, from a search
    stopped at a saddle on θ's bound; None where there is none.

    A term's deviance depends on λ only through λλ', so it is even in the last diagonal θ of a
    term and, jointly with the entries below it, in every other column of λ: where such a
    column is 0 its gradient vanishes by symmetry even when the deviance falls away from 0, and
    a derivative-based search from far away can stop there. So: the θ at 0 (bounded ones on the
    bound, unbounded ones beside them) whose gradient is ~0, and the smallest eigenvalue of the
    deviance's Hessian over them; a negative one (with at least one bounded θ among them) gives
    the direction, signed and clipped to keep the bounded θ at or above 0. A bounded θ with a
    clearly positive gradient is a Karush-Kuhn-Tucker point held by the data, not by symmetry,
    and is left out."""
    theta, g = np.asarray(theta, dtype=float), np.asarray(g, dtype=float)
    zero = (np.abs(theta) <= AT_BOUND) & (np.abs(g) <= SYMMETRIC_GRADIENT)
    bounded = lower == 0
    if not np.any(zero & bounded):
        return None
    block = np.asarray(H, dtype=float)[np.ix_(zero, zero)]
    values, vectors = np.linalg.eigh((block + block.T) / 2)
    if values[0] >= 0:
        return None
    d = np.zeros(len(theta))
    d[zero] = vectors[:, 0]
    if d[bounded].sum() < 0:  # λ's column and its negative are the same model: the side inside
        d = -d
    d[bounded] = np.maximum(d[bounded], 0.0)
    size = np.linalg.norm(d)
    return d / size if size > 0 else None


def _vcov_block(H, fun, par, start: int, size: int, warn: bool = True) -> np.ndarray:
    """Covariance of the estimates par[start : start + size] (β, or the zero-inflation γ): their
    block of 2·H⁻¹, H the Hessian of −2ℓ over all parameters (as lme4 and glmmTMB)."""
    try:
        Vall = 2.0 * np.linalg.inv(H)
        V = Vall[start : start + size, start : start + size]
        if np.all(np.isfinite(V)) and np.all(np.linalg.eigvalsh((V + V.T) / 2) > 0):
            return (V + V.T) / 2
    except np.linalg.LinAlgError:
        pass
    if warn:
        warnings.warn(
            "the Hessian at the optimum is not positive definite; standard errors are taken conditional on θ",
            ConvergenceWarning,
            stacklevel=4,
        )
    return _vcov_conditional(fun, par, start, size)


def _zi_vcov(H, fun, par, nz) -> np.ndarray:
    """Covariance of the zero-inflation coefficients: their block of 2·H⁻¹ as it is. A
    coefficient at the boundary (π → 0, the likelihood flat) has a huge or, from the
    differences' noise, negative variance (a NaN standard error) there, as glmmTMB reports a
    huge one; the others keep theirs, which the flat direction does not disturb."""
    try:
        V = 2.0 * np.linalg.inv(H)[-nz:, -nz:]
    except np.linalg.LinAlgError:
        try:
            return _vcov_conditional(fun, par, len(par) - nz, nz)
        except np.linalg.LinAlgError:  # flat at the boundary in every direction: no standard errors
            return np.full((nz, nz), np.nan)
    return (V + V.T) / 2


def _vcov_conditional(fun, par, start, size) -> np.ndarray:
    def at(b):
        return fun(np.concatenate([par[:start], b, par[start + size :]]))

    H = fd_hessian(at, par[start : start + size], h=1e-3)
    return 2.0 * np.linalg.inv(H)
