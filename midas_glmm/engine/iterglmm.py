"""Laplace GLMMs by the iterative solver: PIRLS with conjugate-gradient solves, stochastic traces.

The model and the criterion are lme4's (nAGQ = 1): with η = offset + Xβ + ZΛu and the modes û
from PIRLS,

    D(θ, β) = −2 Σ log f(y | μ̂) + ‖û‖² + log|A|,   A = Λ'Z'W(û)ZΛ + I,

for the canonical binomial (logit) and Poisson (log) models, whose Fisher and observed
information agree. The solves and log|A| are those of :mod:`.iterative` (block elimination of the
term with the most random effects, PCG on the Schur complement, Hutchinson probes). Its gradient
in ψ = (θ, β) is, by the envelope theorem for û,

    ∂D/∂ψ = −2 ∂ℓ/∂ψ|_û + tr(A⁻¹ ∂A/∂ψ|_W) + Σᵢ W'ᵢ hᵢ dηᵢ/dψ,

with W' = dW/dη, hᵢ = diag(ZΛA⁻¹Λ'Z')ᵢ (each row's leverage: exact for the eliminated block, by
the probes for the rest) and dη/dψ = ∂η/∂ψ + ZΛ dû/dψ, dû/dψ = A⁻¹ ∂(score)/∂ψ. The last sum needs
one adjoint solve per probe, v = A⁻¹Λ'Z'(W'∘h), instead of one solve per parameter. θ̂ and β̂
are the root of this estimated gradient (the probes fixed for the fit), found as for the LMM; the
covariance of β̂ is from the finite-difference Jacobian of the gradient at the root (lme4's
Hessian), and the Monte Carlo error of every estimate from the per-probe gradients.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..design.reterms import ThetaMap
from ..errors import ConvergenceWarning, FitError
from ..families import Family
from .estimates import Estimates
from .iterative import (
    IterativeInfo,
    IterativeOptions,
    ThetaSystem,
    condvar_blocks,
    crossed_rows,
    fd_jacobian,
    rademacher,
    slq_logdet,
    solve_with_restart,
)
from .optimize import SINGULAR_TOL, OptResult

__all__ = ["fit_glmm_iterative"]

PIRLS_MAXIT = 60
PIRLS_TOL = 1e-10


@dataclass
class GLMMEvaluation:
    """The Laplace criterion's pieces at one (θ, β)."""

    psi: np.ndarray
    grad: np.ndarray
    probe_grads: np.ndarray
    u: np.ndarray
    loglik: float
    system: ThetaSystem
    Ks: np.ndarray | None
    Kz: np.ndarray | None


class IterativeGLMM:
    """The Laplace criterion of a canonical binomial or Poisson GLMM by the iterative solver."""

    def __init__(self, rows, design, family: Family, options: IterativeOptions):
        self.fam, self.opts, self.rows = family, options, rows
        self.n, self.k = rows.n, rows.k
        self.tmap = ThetaMap(design.terms)
        J = self.tmap.jacobian
        self.J = [rows.lam_array([J[i][k] for i in range(len(self.tmap.terms))]) for k in range(len(self.tmap))]
        nR = rows.q - rows.qe
        self.probes = rademacher(np.random.default_rng(options.seed), nR, options.probes) if nR else None
        self.u = np.zeros(rows.q)
        self.warm_probe = self.warm_adj = self.warm_u = None
        self.evaluations = 0
        self.iterations: list[int] = []

    # --- PIRLS
    def _at(self, L, u, beta):
        """Σ log f and the penalised deviance at the modes u."""
        ll = float(self.rows.call("at", L, u, beta))
        return ll, -2.0 * ll + float(u @ u)

    def pirls(self, theta, beta):
        """The modes û at (θ, β) by penalised IRLS with CG solves and step halving; returns
        (û, log-likelihood, the system at W(û), λ)."""
        r = self.rows
        L = r.lam_array(self.tmap.lams(theta))
        u = self.u.copy()
        ll, pen = self._at(L, u, beta)
        if not np.isfinite(pen):
            u[:] = 0.0
            ll, pen = self._at(L, u, beta)
        its = 0
        for _ in range(PIRLS_MAXIT):
            point = ("work", L, u, beta)
            sys = ThetaSystem(r, L, r.call("grams", point), point)
            rhs = r.apply_lam(L, r.call("pirls_rhs", L, u, beta), transpose=True)
            u_new, self.warm_u, it = sys.solve(rhs, self.warm_u, self.opts.tol)
            its += it
            u_new = u_new[:, 0]
            for _half in range(12):
                ll_n, pen_n = self._at(L, u_new, beta)
                if np.isfinite(pen_n) and pen_n <= pen + 1e-12 * abs(pen):
                    break
                u_new = 0.5 * (u + u_new)
            step = float(np.max(np.abs(u_new - u)))
            done = abs(pen - pen_n) <= PIRLS_TOL * (abs(pen_n) + 1.0) and step < 1e-7
            u, ll, pen = u_new, ll_n, pen_n
            if done:
                break
        else:
            raise FitError(
                f"PIRLS did not converge in {PIRLS_MAXIT} steps with the iterative solver; fit with solver='direct'"
            )
        self.u = u
        self.iterations.append(its)
        point = ("work", L, u, beta)
        grams = r.call("grams", point)
        return u, ll, ThetaSystem(r, L, grams, point), L, grams

    # --- the criterion's gradient
    def evaluate(self, psi: np.ndarray) -> GLMMEvaluation:
        nt, k = len(self.tmap), self.k
        theta, beta = psi[:nt], psi[nt:]
        u, ll, sys, L, grams = self.pirls(theta, beta)
        self.evaluations += 1
        r = self.rows
        Zd, Xd = r.call("score", L, u, beta)
        if sys.nR:
            m = self.probes.shape[1]
            Sr, _ = sys.S_solve(self.probes, self.warm_probe, self.opts.tol)
            self.warm_probe = Sr
            Ae = sys.A_eR(np.hstack([Sr, self.probes]))
            Ks = np.vstack([-sys.ee_solve(Ae[:, :m]), Sr])
            Kz = np.vstack([-sys.ee_solve(Ae[:, m:]), self.probes])
        else:
            m = 1
            Ks = Kz = np.zeros((r.q, 1))
        Zc, Xc = r.call("probe_leverage", L, u, beta, sys.Aee_inv, Ks, Kz)
        V, self.warm_adj, _ = sys.solve(r.apply_lam(L, Zc, transpose=True), self.warm_adj, self.opts.tol)
        ones = [1.0] * r.T
        H = r.call("crossprod", L, r.identity, ones, ones, np.hstack([Kz, Ks, V]), sys.which)  # Z'WZΛ[Kz Ks V]
        Hz, Hs, Gv = H[:, :m], H[:, m : 2 * m], H[:, 2 * m :]
        XWZv = r.call("x_gather", L, u, beta, V)
        probe = np.zeros((nt + k, m))
        exact = np.zeros(nt + k)
        t0 = r.terms[0]
        p0 = t0.p
        lam0 = L[0, :p0, :p0]
        for i, Jk in enumerate(self.J):
            Ju = r.apply_lam(Jk, u[:, None])[:, 0]
            exact[i] = -2.0 * float(Zd @ Ju)
            J0 = Jk[0, :p0, :p0]
            if np.any(J0):
                P = np.einsum("ba,lbc,cd->lad", lam0, grams[0], J0)
                exact[i] += 2.0 * float(np.einsum("lab,lba->", sys.Aee_inv, P))
            if sys.nR:
                probe[i] += np.sum(r.apply_lam(Jk, Ks) * Hz, axis=0) + np.sum(r.apply_lam(Jk, Kz) * Hs, axis=0)
            probe[i] += Zc.T @ Ju + r.apply_lam(Jk, V).T @ Zd - Gv.T @ Ju
        exact[nt:] = -2.0 * Xd
        probe[nt:] = Xc - XWZv
        grad = exact + probe.mean(axis=1)
        keep = sys.nR > 0
        return GLMMEvaluation(
            np.asarray(psi, float), grad, probe, u, ll, sys, Ks if keep else None, Kz if keep else None
        )


def _glm_start(crit: IterativeGLMM) -> np.ndarray:
    """(θ, β) to start from: β of the GLM without random effects (IRLS), and each term's
    intercept SD from the spread of its levels' mean working residuals beyond their sampling
    variance (other columns 0.5)."""
    k = crit.k
    beta = np.zeros(k)
    for _ in range(25):
        XtWX, XtWz, per = crit.rows.call("glm_sums", beta)
        new = np.linalg.lstsq(XtWX, XtWz, rcond=None)[0]
        done = np.max(np.abs(new - beta)) < 1e-8
        beta = new
        if done:
            break
    _, _, per = crit.rows.call("glm_sums", beta)
    lams = [None] * len(crit.tmap.terms)
    r = crit.rows
    for j, t in enumerate(r.terms):
        sw, sr = per[j]
        ok = sw > 0
        means = sr[ok] / sw[ok]
        v = float(np.mean(means**2) - np.mean(1.0 / sw[ok]))
        lam = 0.5 * np.eye(t.p)
        if "(Intercept)" in t.columns:
            a = t.columns.index("(Intercept)")
            lam[a, a] = math.sqrt(min(max(v, 0.01), 25.0))
        lams[r.order[j]] = lam
    return np.concatenate([crit.tmap.theta(lams), beta])


def fit_glmm_iterative(design, family: Family, options: IterativeOptions | None = None) -> Estimates:
    """Fit a canonical binomial or Poisson GLMM by Laplace with the iterative solver."""
    opts = options or IterativeOptions()
    crit = IterativeGLMM(crossed_rows(design, family), design, family, opts)
    tm, k = crit.tmap, crit.k
    lower = np.concatenate([tm.lower, np.full(k, -np.inf)])
    psi0 = _glm_start(crit)

    def value(e):  # the Laplace criterion at an evaluation
        return -2.0 * e.loglik + float(e.u @ e.u) + e.system.logdet_ee + _logdet(crit, e)[0]

    alt = np.concatenate([tm.start, psi0[len(tm) :]])
    ev, Jac, psi, converged, logc = solve_with_restart(crit.evaluate, psi0, lower, alt, value)
    msgs = []
    if not converged:
        msgs.append("the iterative solver's quasi-Newton iteration did not settle on (θ, β) in 40 steps")
        warnings.warn("model failed to converge: " + msgs[-1], ConvergenceWarning, stacklevel=3)
    nt = len(tm)
    held = (lower == 0) & (psi == 0)
    ev = crit.evaluate(psi)  # the state at the root, and a fresh Jacobian for the Hessian
    Jac = fd_jacobian(crit.evaluate, psi, logc, held, ev.grad)
    free = ~held
    Hf = Jac[np.ix_(free, free)]
    Hinv = np.zeros_like(Jac)
    Hinv[np.ix_(free, free)] = np.linalg.pinv(0.5 * (Hf + Hf.T))
    vcov = 2.0 * Hinv[nt:, nt:]
    theta = psi[:nt]
    # Monte Carlo error of the estimates, through the Jacobian (x = log θ for the SDs)
    dpsi = np.where(logc, psi, 1.0)
    m = ev.probe_grads.shape[1]
    Cg = np.atleast_2d(np.cov(ev.probe_grads) / m) * np.outer(dpsi, dpsi) if crit.probes is not None else 0.0
    Cx = Hinv @ Cg @ Hinv.T if crit.probes is not None else np.zeros_like(Jac)
    Cpsi = Cx * np.outer(dpsi, dpsi)
    base = tm.sdcor(theta, 1.0)
    D = np.zeros((len(base), nt))
    for i in range(nt):
        h = 1e-6 * max(1.0, abs(theta[i]))
        tp = theta.copy()
        tp[i] += h
        D[:, i] = (tm.sdcor(tp, 1.0) - base) / h
    sdcor_se = np.sqrt(np.maximum(np.diag(D @ Cpsi[:nt, :nt] @ D.T), 0.0))
    logdet_S, logdet_se = _logdet(crit, ev)
    crit_value = -2.0 * ev.loglik + float(ev.u @ ev.u) + ev.system.logdet_ee + logdet_S
    info = IterativeInfo(
        probes=0 if crit.probes is None else crit.probes.shape[1],
        theta_mc_se=np.sqrt(np.maximum(np.diag(Cpsi[:nt, :nt]), 0.0)),
        sdcor_mc_se=sdcor_se,
        llf_mc_se=0.5 * logdet_se,
        cg_iterations=list(crit.iterations),
        evaluations=crit.evaluations,
        eliminated=crit.rows.terms[0].group_name,
    )
    info.beta_mc_se = np.sqrt(np.maximum(np.diag(Cpsi[nt:, nt:]), 0.0))
    r = crit.rows
    b_packed = r.apply_lam(ev.system.L, ev.u[:, None])[:, 0]
    b = [None] * len(r.terms)
    for j, t in enumerate(r.terms):
        b[r.order[j]] = b_packed[r.qoff[j] : r.qoff[j + 1]].reshape(t.nlevels, t.p)
    opt = OptResult(x=psi, fun=crit_value, nfev=crit.evaluations, converged=not msgs, message="", optimizer="iterative")
    est = Estimates(
        theta=theta,
        beta=psi[nt:].copy(),
        vcov_beta=vcov,
        sigma=1.0,
        b=b,
        condvar_fn=lambda: condvar_blocks(crit, ev, 1.0),
        llf=-0.5 * crit_value,
        criterion=crit_value,
        method="Laplace",
        nAGQ=1,
        opt=opt,
        lower=tm.lower,
        singular=tm.singular(theta, SINGULAR_TOL),
        convergence=msgs,
        dispersion=1.0,
        n_params=nt + k,
    )
    est.solver = info
    return est


def _logdet(crit: IterativeGLMM, ev: GLMMEvaluation) -> tuple[float, float]:
    """log|S| at the root by stochastic Lanczos quadrature (as for the LMM)."""
    if crit.probes is None:
        return 0.0, 0.0
    return slq_logdet(ev.system, crit.probes, crit.opts.lanczos_steps)
