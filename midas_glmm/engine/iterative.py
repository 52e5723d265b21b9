"""The iterative solver: crossed designs whose exact factor would not fit, in O(rows) per step.

The exact engine factors A = Λ'Z'WZΛ + I; for crossed factors its dense tail grows with the
square of the smaller factor's levels (56 GB for MovieLens-32M). Here A is only ever applied to
vectors, by passes over the rows (:mod:`~midas_glmm.linalg.matfree`), and the quantities the
profiled criterion needs are found as follows.

* **Block elimination.** The term with the most random effects, e, has a block-diagonal A_ee
  (one p × p block per level): it is solved exactly, leaving the Schur complement
  S = A_RR − A_Re A_ee⁻¹ A_eR on the other terms. So log|A| = log|A_ee| + log|S| and
  A⁻¹ = diag(A_ee⁻¹, 0) + K S⁻¹ K' with K = [−A_ee⁻¹A_eR; I].
* **Solves** with S by preconditioned conjugate gradients, all right-hand sides together
  (one pass over the rows per iteration and product); the preconditioner is S's block diagonal
  plus a coarse correction on each column's all-ones vector (the direction CG finds slowest: a
  shift of all levels of one term against the intercept). Solutions are warm-started from the
  previous θ.
* **The gradient of log|S|** in θ, tr(A⁻¹ ∂A/∂θₖ), is exact for the A_ee part and a Hutchinson
  estimate with m fixed Rademacher probes for the K S⁻¹ K' part: zⱼ'S⁻¹K'∂A K zⱼ. The probes are
  drawn once per fit, so the estimated gradient is a smooth function of θ and θ̂ is the root of it
  (a quasi-Newton iteration: finite-difference Jacobian once, Broyden updates). The other terms
  of the gradient (the penalised residual sum of squares, REML's log|R_X|²) are exact.
* **The approximation's error** is the Monte Carlo error of θ̂ implied by the probes: the
  covariance of the per-probe gradients, mapped by the inverse Jacobian (a sandwich). It is
  reported in the summary beside the estimates; β̂, its covariance σ²R_X⁻¹ and σ̂ follow from
  θ̂ exactly (to the solver tolerance).
* **log|S| itself** (for the log-likelihood, AIC) comes from stochastic Lanczos quadrature on
  the Jacobi-scaled S with the same probes, its Monte Carlo error reported too.

Cost per evaluation: (iterations of CG) × 2 passes over the rows with k + 1 + m columns. Memory:
the rows' codes and columns plus a few (levels × m) arrays — nothing of size levels².
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import checks
from ..design.reterms import ITERATIVE_TAIL, ThetaMap, dense_tail, tail_bound
from ..errors import ConvergenceWarning, FitError
from .crossedrows import CrossedRows, DaskCrossedRows
from .estimates import Estimates
from .optimize import SINGULAR_TOL, OptResult

__all__ = ["IterativeOptions", "fit_lmm_iterative", "CrossedRows"]

#: PCG's relative residual tolerance (every column)
CG_TOL = 1e-8
CG_MAXITER = 500
#: Hutchinson probes (Rademacher), and Lanczos steps for log|S|
PROBES = 32
LANCZOS_STEPS = 40


@dataclass
class IterativeOptions:
    """Settings of the iterative solver (``fit(solver="iterative", ...)``)."""

    probes: int = PROBES
    seed: int = 20271
    tol: float = CG_TOL
    lanczos_steps: int = LANCZOS_STEPS


@dataclass
class IterativeInfo:
    """How an iterative fit went, for the summary and the results."""

    probes: int
    theta_mc_se: np.ndarray  # Monte Carlo SE of θ̂ from the probes
    sdcor_mc_se: np.ndarray  # … of the SDs and correlations, the summary's scale
    llf_mc_se: float  # Monte Carlo SE of the log-likelihood (from log|S| by SLQ)
    cg_iterations: list[int] = field(default_factory=list)
    evaluations: int = 0
    eliminated: str = ""
    beta_mc_se: np.ndarray | None = None  # a GLMM's fixed effects (an LMM's follow θ̂ exactly)


class ThetaSystem:
    """A = Λ'Z'WZΛ + I at one θ: the eliminated block, the Schur complement's products and solves."""

    def __init__(self, rows, L: np.ndarray, grams: list[np.ndarray], which: str = "prior"):
        self.rows, self.L, self.grams, self.which = rows, L, grams, which
        r = rows
        _t0, p0 = r.terms[0], r.terms[0].p
        lam0 = L[0, :p0, :p0]
        Aee = np.einsum("ba,lbc,cd->lad", lam0, grams[0], lam0) + np.eye(p0)
        self.Aee_chol = np.linalg.cholesky(Aee)
        self.logdet_ee = 2.0 * float(np.sum(np.log(np.diagonal(self.Aee_chol, axis1=1, axis2=2))))
        self.Aee_inv = np.linalg.inv(Aee)
        self.nR = r.q - r.qe
        self.cin_R = [0.0] + [1.0] * (r.T - 1)
        self.cout_e = [1.0] + [0.0] * (r.T - 1)
        self.all1 = [1.0] * r.T
        self.cout_R = [0.0] + [1.0] * (r.T - 1)
        self.matvecs = 0
        if self.nR:
            self._preconditioner()

    # --- the eliminated block
    def ee_solve(self, V: np.ndarray) -> np.ndarray:
        t0 = self.rows.terms[0]
        return np.einsum("lab,lbm->lam", self.Aee_inv, V.reshape(t0.nlevels, t0.p, -1)).reshape(t0.q, -1)

    def A_eR(self, VR: np.ndarray) -> np.ndarray:
        """A_eR V = Λ_e'Z_e'WZ_RΛ_R V (one pass)."""
        r = self.rows
        return r.call("crossprod", self.L, self.L, self.cin_R, self.cout_e, VR, self.which, "R", "e")

    def A_Re(self, Ve: np.ndarray) -> np.ndarray:
        r = self.rows
        cin = [1.0] + [0.0] * (r.T - 1)
        return r.call("crossprod", self.L, self.L, cin, self.cout_R, Ve, self.which, "e", "R")

    def S_matvec(self, VR: np.ndarray) -> np.ndarray:
        """S V = V + Λ_R'Z_R'W(Z_RΛ_R V − Z_eΛ_e A_ee⁻¹ A_eR V): two passes."""
        r = self.rows
        self.matvecs += 1
        return VR + r.call("schur_apply", self.L, self.Aee_inv, VR, self.which)

    def _preconditioner(self):
        """S's block diagonal (A_RR's, less Σᵢ wᵢ²(ζζ')ᵢ ζ_e'A_ee⁻¹ζ_e: exact where each pair of
        levels shares at most one row) with a coarse correction on the all-ones columns."""
        r = self.rows
        corr = r.call("schur_diagonal", self.L, self.Aee_inv, self.which)
        self.pre_blocks = []
        for j, t in enumerate(r.terms[1:], start=1):
            p = t.p
            lam = self.L[j, :p, :p]
            blk = np.einsum("ba,lbc,cd->lad", lam, self.grams[j], lam) + np.eye(p) - corr[j, : t.nlevels, :p, :p]
            self.pre_blocks.append(blk)
        self.pre_inv = [np.linalg.inv(b) for b in self.pre_blocks]
        # coarse space: one all-ones vector per column of each R term
        cols = []
        for j, t in enumerate(r.terms[1:], start=1):
            for a in range(t.p):
                v = np.zeros(self.nR)
                lo = r.qoff[j] - r.qe
                v[lo + a : lo + t.q : t.p] = 1.0
                cols.append(v)
        self.coarse = np.column_stack(cols)
        E = self.coarse.T @ self.S_matvec(self.coarse)
        self.coarse_inv = np.linalg.inv(E)

    def precondition(self, R: np.ndarray) -> np.ndarray:
        r = self.rows
        out = np.empty_like(R)
        for j, t in enumerate(r.terms[1:], start=1):
            lo, hi = r.qoff[j] - r.qe, r.qoff[j + 1] - r.qe
            out[lo:hi] = np.einsum("lab,lbm->lam", self.pre_inv[j - 1], R[lo:hi].reshape(t.nlevels, t.p, -1)).reshape(
                t.q, -1
            )
        return out + self.coarse @ (self.coarse_inv @ (self.coarse.T @ R))

    def precondition_blocks(self) -> list[np.ndarray]:
        """The preconditioner's diagonal blocks per level of each R term, (ℓ, p, p) each."""
        r = self.rows
        W = self.coarse @ self.coarse_inv  # (nR, nc): the coarse part's rows
        out = []
        for j, t in enumerate(r.terms[1:], start=1):
            lo, hi = r.qoff[j] - r.qe, r.qoff[j + 1] - r.qe
            V, Wt = self.coarse[lo:hi].reshape(t.nlevels, t.p, -1), W[lo:hi].reshape(t.nlevels, t.p, -1)
            out.append(self.pre_inv[j - 1] + np.einsum("lam,lbm->lab", Wt, V))
        return out

    def S_solve(self, B: np.ndarray, X0: np.ndarray | None, tol: float) -> tuple[np.ndarray, int]:
        """S X = B by preconditioned CG, every column together."""
        X = np.zeros_like(B) if X0 is None else X0.copy()
        bnorm = np.linalg.norm(B, axis=0)
        bnorm[bnorm == 0] = 1.0
        R = B - self.S_matvec(X) if X0 is not None else B.copy()
        Zp = self.precondition(R)
        P = Zp.copy()
        rz = np.sum(R * Zp, axis=0)
        for it in range(1, CG_MAXITER + 1):
            if np.all(np.linalg.norm(R, axis=0) <= tol * bnorm):
                return X, it - 1
            AP = self.S_matvec(P)
            pap = np.sum(P * AP, axis=0)
            alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap > 0)
            X += alpha * P
            R -= alpha * AP
            Zp = self.precondition(R)
            rz_new = np.sum(R * Zp, axis=0)
            beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)
            P = Zp + beta * P
            rz = rz_new
        raise FitError(
            f"the iterative solver's conjugate gradients did not converge in {CG_MAXITER} iterations "
            "(the random-effects system is too ill-conditioned); fit with solver='direct'"
        )

    def solve(self, B: np.ndarray, XR0: np.ndarray | None, tol: float):
        """A X = B (q × m) by block elimination; returns X, the R part (to warm-start the next θ)
        and the CG iterations."""
        r = self.rows
        ce = self.ee_solve(B[: r.qe])
        if not self.nR:
            return ce, None, 0
        rhs = B[r.qe :] - self.A_Re(ce)
        XR, its = self.S_solve(rhs, XR0, tol)
        Xe = self.ee_solve(B[: r.qe] - self.A_eR(XR))
        return np.vstack([Xe, XR]), XR, its


def slq_logdet(sys: ThetaSystem, probes, steps: int) -> tuple[float, float]:
    """log|S| by stochastic Lanczos quadrature on the block-Jacobi-scaled S (the fit's probes),
    and its Monte Carlo SE."""
    if not sys.nR:
        return 0.0, 0.0
    r = sys.rows
    # S = C M C' with C the Cholesky factors of the preconditioner's blocks
    chol = [np.linalg.cholesky(b) for b in sys.pre_blocks]
    logdet_D = sum(2.0 * float(np.sum(np.log(np.diagonal(c, axis1=1, axis2=2)))) for c in chol)
    cinv = [np.linalg.inv(c) for c in chol]

    def scale(V, transpose):
        out = np.empty_like(V)
        for j, t in enumerate(r.terms[1:], start=1):
            lo, hi = r.qoff[j] - r.qe, r.qoff[j + 1] - r.qe
            ci = cinv[j - 1].transpose(0, 2, 1) if transpose else cinv[j - 1]
            out[lo:hi] = np.einsum("lab,lbm->lam", ci, V[lo:hi].reshape(t.nlevels, t.p, -1)).reshape(t.q, -1)
        return out

    Zp = probes
    m = Zp.shape[1]
    nrm = np.linalg.norm(Zp, axis=0)
    V = Zp / nrm
    Vprev = np.zeros_like(V)
    alpha, beta = np.zeros((steps, m)), np.zeros((steps, m))
    b_prev = np.zeros(m)
    for i in range(steps):
        W = scale(sys.S_matvec(scale(V, True)), False) - b_prev * Vprev
        a = np.sum(V * W, axis=0)
        W -= a * V
        alpha[i] = a
        b = np.linalg.norm(W, axis=0)
        beta[i] = b
        if np.any(b <= 1e-12):
            steps = i + 1
            break
        Vprev, V, b_prev = V, W / b, b
    est = np.zeros(m)
    for j in range(m):
        Tm = np.diag(alpha[:steps, j]) + np.diag(beta[: steps - 1, j], 1) + np.diag(beta[: steps - 1, j], -1)
        lam, vec = np.linalg.eigh(Tm)
        est[j] = nrm[j] ** 2 * float(np.sum(vec[0] ** 2 * np.log(np.maximum(lam, 1e-300))))
    return logdet_D + float(est.mean()), float(est.std(ddof=1) / math.sqrt(m))


def rademacher(rng, n, m):
    return rng.integers(0, 2, size=(n, m)).astype(float) * 2.0 - 1.0


@dataclass
class Evaluation:
    """The criterion's pieces at one θ."""

    theta: np.ndarray
    grad: np.ndarray  # d criterion / dθ (Hutchinson for log|S|, exact otherwise)
    probe_grads: np.ndarray  # (len θ, m) per-probe estimates of the Hutchinson part
    beta: np.ndarray
    u: np.ndarray  # spherical modes, packed order
    r2: float
    RX: np.ndarray
    logdet_ee: float
    logdet_RX: float
    system: ThetaSystem
    Sr: np.ndarray | None  # S⁻¹ probes
    Kz: np.ndarray | None
    Ks: np.ndarray | None
    iterations: int


class IterativeLMM:
    """The profiled ML/REML criterion of an LMM by the iterative solver (see the module's text)."""

    def __init__(self, rows: CrossedRows, tmap: ThetaMap, REML: bool, options: IterativeOptions, ldW: float, b0):
        self.rows, self.tmap, self.REML, self.opts, self.ldW = rows, tmap, REML, options, ldW
        self.beta_removed = b0
        nR = rows.q - rows.qe
        rng = np.random.default_rng(options.seed)
        self.probes = rademacher(rng, nR, options.probes) if nR else None
        self.warm = None
        self.evaluations = 0
        self.iterations: list[int] = []
        # the data pass: Z'W[X y'], [X y']'W[X y'] (y' = y − offset − X b0) and Z_t'WZ_t per level
        self.ZtXy, self.XytXy = rows.call("lmm_blocks", b0)
        self.grams = rows.call("grams", "prior")
        # ∂λ/∂θ packed per θ element
        J = tmap.jacobian
        self.J = [rows.lam_array([J[i][k] for i in range(len(tmap.terms))]) for k in range(len(tmap))]

    def evaluate(self, theta: np.ndarray) -> Evaluation:
        r, k = self.rows, self.rows.k
        theta = np.asarray(theta, dtype=float)
        L = r.lam_array(self.tmap.lams(theta))
        sys = ThetaSystem(r, L, self.grams)
        B = r.apply_lam(L, self.ZtXy, transpose=True)  # Λ'Z'W[X y]
        m = 0 if self.probes is None else self.probes.shape[1]
        its = 0
        if sys.nR:
            ce = sys.ee_solve(B[: r.qe])
            rhs = np.hstack([B[r.qe :] - sys.A_Re(ce), self.probes])
            XR, its = sys.S_solve(rhs, self.warm, self.opts.tol)
            self.warm = XR
            URs = XR  # [U_R | S⁻¹z]
            Ae = sys.A_eR(np.hstack([URs, self.probes]))
            Ue = sys.ee_solve(B[: r.qe, :] - Ae[:, : k + 1])
            U = np.vstack([Ue, XR[:, : k + 1]])
            Sr = XR[:, k + 1 :]
            Ks = np.vstack([-sys.ee_solve(Ae[:, k + 1 : k + 1 + m]), Sr])
            Kz = np.vstack([-sys.ee_solve(Ae[:, k + 1 + m :]), self.probes])
        else:
            U, Sr, Ks, Kz = sys.ee_solve(B), None, None, None
        self.evaluations += 1
        self.iterations.append(its)
        XtX, Xty, yty = self.XytXy[:k, :k], self.XytXy[:k, k], self.XytXy[k, k]
        BX, By, UX, Uy = B[:, :k], B[:, k], U[:, :k], U[:, k]
        RX = XtX - BX.T @ UX
        RX = 0.5 * (RX + RX.T)
        beta = np.linalg.solve(RX, Xty - BX.T @ Uy) if k else np.zeros(0)
        u = Uy - UX @ beta
        r2 = float(yty - By @ u - Xty @ beta)
        cols = [u[:, None], UX] + ([Kz, Ks] if Ks is not None else [])
        ones = [1.0] * r.T
        H = r.call("crossprod", L, r.identity, ones, ones, np.hstack(cols), "prior")  # Z'WZΛ[u U_X Kz Ks]
        Zwr = self.ZtXy[:, k] - self.ZtXy[:, :k] @ beta - H[:, 0]
        GX = H[:, 1 : k + 1]
        Hz, Hs = (H[:, k + 1 : k + 1 + m], H[:, k + 1 + m :]) if Ks is not None else (None, None)
        nt = len(self.tmap)
        d_r2, d_RX, exact, probe = np.zeros(nt), np.zeros(nt), np.zeros(nt), np.zeros((nt, m))
        RXinv = np.linalg.inv(RX) if k else np.zeros((0, 0))
        t0 = r.terms[0]
        p0 = t0.p
        lam0 = L[0, :p0, :p0]
        for i, Jk in enumerate(self.J):
            d_r2[i] = -2.0 * float(np.sum(r.apply_lam(Jk, Zwr[:, None], transpose=True)[:, 0] * u))
            if self.REML and k:
                dB = r.apply_lam(Jk, self.ZtXy[:, :k], transpose=True)
                JU = r.apply_lam(Jk, UX)
                M = dB.T @ UX
                N = JU.T @ GX
                dRX = -(M + M.T - N - N.T)
                d_RX[i] = float(np.sum(RXinv * dRX))
            J0 = Jk[0, :p0, :p0]
            if np.any(J0):
                G = self.grams[0]
                P = np.einsum("ba,lbc,cd->lad", lam0, G, J0)
                exact[i] = 2.0 * float(np.einsum("lab,lba->", sys.Aee_inv, P))
            if Ks is not None:
                probe[i] = np.sum(r.apply_lam(Jk, Ks) * Hz, axis=0) + np.sum(r.apply_lam(Jk, Kz) * Hs, axis=0)
        nn = r.n - k if self.REML else r.n
        grad = exact + probe.mean(axis=1) if m else exact.copy()
        grad = grad + nn * d_r2 / r2 + (d_RX if self.REML else 0.0)
        logdet_RX = float(np.linalg.slogdet(RX)[1]) if k else 0.0
        return Evaluation(theta, grad, probe, beta, u, r2, RX, sys.logdet_ee, logdet_RX, sys, Sr, Kz, Ks, its)

    def logdet_S(self, ev: Evaluation) -> tuple[float, float]:
        """log|S| at ``ev`` and its Monte Carlo SE (:func:`slq_logdet` with the fit's probes)."""
        return slq_logdet(ev.system, self.probes, self.opts.lanczos_steps)

    def criterion(self, ev: Evaluation, logdet_S: float) -> float:
        r, k = self.rows, self.rows.k
        logA = ev.logdet_ee + logdet_S
        if self.REML:
            nmp = r.n - k
            return logA + ev.logdet_RX + nmp * (1 + math.log(2 * math.pi * ev.r2 / nmp)) - self.ldW
        return logA + r.n * (1 + math.log(2 * math.pi * ev.r2 / r.n)) - self.ldW


def _moment_theta(rows, tmap: ThetaMap, b0: np.ndarray) -> np.ndarray:
    """A start: each term's intercept variance from its level means of the OLS residuals (as if
    it were the only term), the residual variance what is left; other columns at 0.5."""
    ss, sw, per = rows.call("residual_sums", b0)
    tot = ss / sw
    lams = [None] * len(tmap.terms)
    between = []
    for cnt, s in per:
        ok = cnt > 0
        means = s[ok] / cnt[ok]
        v = float(np.sum(cnt[ok] * means**2) / np.sum(cnt[ok])) - tot * float(np.mean(1.0 / cnt[ok]))
        between.append(max(v, 0.0))
    s2 = max(tot - sum(between), 0.1 * tot)
    for j, t in enumerate(rows.terms):
        lam = 0.5 * np.eye(t.p)
        if "(Intercept)" in t.columns:
            a = t.columns.index("(Intercept)")
            lam[a, a] = math.sqrt(max(between[j] / s2, 0.01))
        lams[rows.order[j]] = lam
    return tmap.theta(lams)


#: an SD (a diagonal θ) below this is tried at 0: kept there when the criterion rises from 0
BOUNDARY_TRY = 1e-3


def solve_score(ev_fn, theta0: np.ndarray, lower: np.ndarray, maxit: int = 40, xtol: float = 1e-5):
    """θ̂: the root of the estimated gradient, by a quasi-Newton iteration in x (log θ for the
    SDs, θ for the rest): a forward-difference Jacobian at the start, Broyden updates after,
    steps held within a factor e of the SDs and shortened while the gradient's norm grows much.
    An SD that falls below :data:`BOUNDARY_TRY` or 5% of its start (and each time it halves
    again) is tried at 0 and held there when the criterion's derivative there is ≥ 0 (the
    optimum is on the boundary: a singular fit)."""
    logc = lower == 0
    n = len(theta0)
    held = np.zeros(n, bool)  # SDs held at 0

    def to_theta(x):
        th = x.copy()
        th[logc] = np.exp(x[logc])
        th[held] = 0.0
        return th

    def gx(x):
        th = to_theta(x)
        ev = ev_fn(th)
        g = ev.grad.copy()
        g[logc] *= th[logc]
        return ev, g

    x = np.asarray(theta0, dtype=float).copy()
    x[logc] = np.log(np.maximum(x[logc], 1e-6))
    start = to_theta(x)
    tried = np.full(n, np.inf)  # the SD at which the boundary was last tried
    ev, g = gx(x)

    def jacobian(x, g):
        Jac = np.eye(n)
        h = 1e-4
        for i in np.flatnonzero(~held):
            xi = x.copy()
            xi[i] += h
            Jac[:, i] = (gx(xi)[1] - g) / h
        return 0.5 * (Jac + Jac.T)

    Jac = jacobian(x, g)
    converged = False
    for _it in range(maxit):
        free = ~held
        s = np.zeros(n)
        try:
            s[free] = -np.linalg.solve(Jac[np.ix_(free, free)], g[free])
        except np.linalg.LinAlgError:
            s[free] = -g[free] / max(np.max(np.abs(np.diag(Jac))), 1e-8)
        big = np.max(np.abs(s)) if n else 0.0
        if big > 1.0:
            s /= big
        x_new = x + s
        ev_new, g_new = gx(x_new)
        for _ in range(6):  # a step that makes the gradient far larger is shortened
            if np.linalg.norm(g_new[free]) <= 4.0 * np.linalg.norm(g[free]) + 1e-8:
                break
            s *= 0.5
            x_new = x + s
            ev_new, g_new = gx(x_new)
        ss = float(s @ s)
        if ss > 0:
            Jac += np.outer((g_new - g) - Jac @ s, s) / ss
            Jac[held] = 0.0
            Jac[:, held] = 0.0
            Jac[held, held] = 1.0
        x, g, ev = x_new, g_new, ev_new
        # SDs near 0: the derivative at 0 decides whether the optimum is on the boundary
        th = to_theta(x)
        near = logc & ~held & (th < np.maximum(BOUNDARY_TRY, 0.05 * start)) & (th < 0.5 * tried)
        if near.any():
            tried[near] = th[near]
            held_try = held | near
            saved = held.copy()
            held[:] = held_try
            ev0 = ev_fn(to_theta(x))
            keep = near & (ev0.grad >= 0)
            held[:] = saved | keep
            if keep.any():
                ev, g = gx(x)
                Jac = jacobian(x, g)
                continue
        if np.max(np.abs(s)) < xtol:
            converged = True
            break
    return ev, Jac, to_theta(x), converged, logc & ~held


def solve_with_restart(ev_fn, x0, lower, alt_start, value_fn):
    """:func:`solve_score` from ``x0``; when it ends with an SD held at 0, again from
    ``alt_start`` (lme4's start), keeping the end with the lower criterion (``value_fn`` of an
    evaluation). The profiled criterion can have a local minimum on the boundary — a term whose
    levels hold one row each trades its variance with the residual's — which a start near it
    (the moments said the variance was small) can fall into; so the direct engine tries both
    starts too."""
    out = solve_score(ev_fn, x0, lower)
    if np.any((lower == 0) & (out[2] == 0)) and not np.allclose(alt_start, x0):
        alt = solve_score(ev_fn, np.asarray(alt_start, dtype=float), lower)
        if value_fn(alt[0]) < value_fn(out[0]) - 1e-8:
            return alt
    return out


def fd_jacobian(ev_fn, psi, logc, held, g0):
    """The estimated gradient's forward-difference Jacobian at ψ in x (log θ for the SDs); the
    rows and columns of SDs held at 0 are the identity's."""
    n = len(psi)
    x = psi.copy()
    x[logc] = np.log(psi[logc])
    g0x = g0.copy()
    g0x[logc] *= psi[logc]
    Jac = np.eye(n)
    h = 1e-4
    for i in np.flatnonzero(~held):
        xi = x.copy()
        xi[i] += h
        pi = xi.copy()
        pi[logc] = np.exp(xi[logc])
        pi[held] = 0.0
        g = ev_fn(pi).grad
        g[logc] *= pi[logc]
        Jac[:, i] = (g - g0x) / h
    Jac[held] = 0.0
    Jac[:, held] = 0.0
    Jac[held, held] = 1.0
    return 0.5 * (Jac + Jac.T)


def crossed_rows(design, family=None):
    """The design's rows for the iterative solver: in memory, or on the Dask workers."""
    if design.source is not None:
        return DaskCrossedRows(design.source, design.terms, family)
    rows = CrossedRows(
        design.terms,
        design.X,
        design.y,
        design.weights if design.has_prior_weights or family is not None else None,
        design.offset,
    )
    if family is not None and not family.is_lmm:
        rows.set_family(family, design.trials)
    return rows


def fit_lmm_iterative(design, REML: bool = True, options: IterativeOptions | None = None) -> Estimates:
    """Fit an LMM by the iterative solver (profiled REML/ML; see the module's text)."""
    opts = options or IterativeOptions()
    tmap = ThetaMap(design.terms)
    if not tmap.linear:
        raise FitError(
            "the iterative solver takes lme4's unstructured and diagonal terms; this model has a "
            "structured covariance (ar1, cs, toep, ...): fit it with solver='direct'"
        )
    rows = crossed_rows(design)
    XtWX, Xty, ldW = rows.call("ols_sums")
    b0 = np.linalg.lstsq(XtWX, Xty, rcond=None)[0] if XtWX.shape[0] else np.zeros(0)
    ldW = ldW if design.has_prior_weights else 0.0
    crit = IterativeLMM(rows, tmap, REML, opts, ldW, b0)
    theta0 = _moment_theta(rows, tmap, b0)
    ev, Jac, theta, converged, logc = solve_with_restart(
        crit.evaluate,
        theta0,
        tmap.lower,
        tmap.start,
        lambda e: crit.criterion(e, slq_logdet(e.system, crit.probes, opts.lanczos_steps)[0]),
    )
    held = (tmap.lower == 0) & (theta == 0)
    ev = crit.evaluate(theta)  # the state at the root, and a fresh Jacobian for the error's sandwich
    Jac = fd_jacobian(crit.evaluate, theta, logc, held, ev.grad)
    msgs = []
    if not converged:
        msgs.append("the iterative solver's quasi-Newton iteration did not settle on θ in 40 steps")
        warnings.warn("model failed to converge: " + msgs[-1], ConvergenceWarning, stacklevel=3)
    return _estimates(design, crit, ev, Jac, theta, logc, REML, msgs, opts)


def _estimates(design, crit: IterativeLMM, ev: Evaluation, Jac, theta, logc, REML, msgs, opts) -> Estimates:
    r, tmap, k = crit.rows, crit.tmap, crit.rows.k
    logdet_S, logdet_se = crit.logdet_S(ev)
    criterion = crit.criterion(ev, logdet_S)
    nn = r.n - k if REML else r.n
    s2 = ev.r2 / nn
    # Monte Carlo error of θ̂: cov of the mean of the per-probe gradients, through the Jacobian
    m = 0 if crit.probes is None else crit.probes.shape[1]
    if m > 1:
        Cg = np.cov(ev.probe_grads) / m
        Cg = np.atleast_2d(Cg)
        dth = np.where(logc, theta, 1.0)  # x = log θ for the SDs
        Cg = Cg * np.outer(dth, dth)
        Jinv = np.linalg.pinv(Jac)  # held SDs have unit rows/columns and no probe variance
        Cx = Jinv @ Cg @ Jinv.T
        Ctheta = Cx * np.outer(dth, dth)
        theta_se = np.sqrt(np.maximum(np.diag(Ctheta), 0.0))
        # the natural scale (SDs, correlations) by the delta method, σ held
        sig = math.sqrt(s2)
        base = tmap.sdcor(theta, sig)
        D = np.zeros((len(base), len(theta)))
        for i in range(len(theta)):
            hstep = 1e-6 * max(1.0, abs(theta[i]))
            tp = theta.copy()
            tp[i] += hstep
            D[:, i] = (tmap.sdcor(tp, sig) - base) / hstep
        sdcor_se = np.sqrt(np.maximum(np.diag(D @ Ctheta @ D.T), 0.0))
    else:
        theta_se, sdcor_se = np.zeros(len(theta)), np.zeros(len(tmap.sdcor(theta, 1.0)))
    info = IterativeInfo(
        probes=m,
        theta_mc_se=theta_se,
        sdcor_mc_se=sdcor_se,
        llf_mc_se=0.5 * logdet_se,
        cg_iterations=list(crit.iterations),
        evaluations=crit.evaluations,
        eliminated=r.terms[0].group_name,
    )
    b_packed = r.apply_lam(ev.system.L, ev.u[:, None])[:, 0]
    b = [None] * len(r.terms)
    for j, t in enumerate(r.terms):
        b[r.order[j]] = b_packed[r.qoff[j] : r.qoff[j + 1]].reshape(t.nlevels, t.p)
    beta = ev.beta + crit.beta_removed
    V = s2 * np.linalg.inv(ev.RX) if k else np.zeros((0, 0))
    opt = OptResult(
        x=theta, fun=criterion, nfev=crit.evaluations, converged=not msgs, message="", optimizer="iterative"
    )
    est = Estimates(
        theta=theta,
        beta=beta,
        vcov_beta=V,
        sigma=math.sqrt(s2),
        b=b,
        condvar_fn=lambda: condvar_blocks(crit, ev, s2),
        llf=-0.5 * criterion,
        criterion=criterion,
        method="REML" if REML else "ML",
        nAGQ=1,
        opt=opt,
        lower=tmap.lower,
        singular=tmap.singular(theta, SINGULAR_TOL),
        convergence=msgs,
        dispersion=s2,
        n_params=len(beta) + len(tmap) + 1,
    )
    est.solver = info
    return est


def condvar_blocks(crit: IterativeLMM, ev: Evaluation, s2: float) -> list[np.ndarray]:
    """σ²λ (A⁻¹)_jj λ' per level, with diag(A⁻¹) = A_ee⁻¹ + diag(K S⁻¹ K') the latter by the
    probes (E[(K S⁻¹z) ∘ (K z)] per level block): approximate, as the summary says."""
    r, sys = crit.rows, ev.system
    q = r.q
    out_packed = []
    if ev.Ks is not None:  # S⁻¹'s blocks: the preconditioner M's exactly, S⁻¹ − M's by the probes
        Mz = sys.precondition(crit.probes)
        Mdiag = sys.precondition_blocks()
    for j, t in enumerate(r.terms):
        p = t.p
        blk = np.zeros((t.nlevels, p, p))
        if j == 0:
            blk += sys.Aee_inv
        if ev.Ks is not None:
            sl = slice(r.qoff[j], r.qoff[j + 1])
            Ks = ev.Ks[sl]
            if j > 0:
                lo = r.qoff[j] - r.qe
                Ks = Ks - Mz[lo : lo + t.q]
                blk += Mdiag[j - 1]
            Ks = Ks.reshape(t.nlevels, p, -1)
            Kz = ev.Kz[sl].reshape(t.nlevels, p, -1)
            est = np.einsum("lam,lbm->lab", Ks, Kz) / Ks.shape[2]
            blk += 0.5 * (est + est.transpose(0, 2, 1))
        lam = sys.L[j, :p, :p]
        out_packed.append(s2 * np.einsum("ab,lbc,dc->lad", lam, blk, lam))
    out = [None] * len(r.terms)
    for j in range(len(r.terms)):
        out[r.order[j]] = out_packed[j]
    del q
    return out


SOLVERS = ("auto", "direct", "iterative")
#: random effects in the exact factor's dense tail from which solver="auto" takes the iterative
#: path (:data:`~midas_glmm.design.reterms.ITERATIVE_TAIL`)
AUTO_TAIL = ITERATIVE_TAIL


def iterative_refusal(design, family, nAGQ: int, fast: bool) -> str | None:
    """Why the iterative solver cannot fit this model (None: it can)."""
    if not family.is_lmm:
        if family.kernel_link is None or getattr(family, "thresholds", False):
            return (
                "it fits Gaussian models and binomial (logit) and Poisson (log) GLMMs, "
                f"not the {family.name} family with the {family.link_name} link"
            )
        if nAGQ != 1 or fast:
            return "it fits GLMMs by the Laplace approximation (nAGQ = 1, fast=False)"
        if design.zi is not None:
            return "it has no zero-inflation formula (ziformula=)"
    if design.disp is not None:
        return "it has no dispersion formula (dispformula=)"
    if not all(t.structure.linear for t in design.terms):  # ThetaMap(...).linear without building one
        return "it takes lme4's unstructured and diagonal terms, not ar1/cs/toep structures"
    return None


def choose_solver(solver, design, family, nAGQ: int = 1, fast: bool = False) -> str:
    """``"direct"`` or ``"iterative"`` for ``fit(solver=)``: "auto" takes the iterative path
    when the exact factor's dense tail would reach :data:`AUTO_TAIL` and the model is one it
    fits (or when that block would take half of this machine's memory); "iterative" on a model
    it cannot fit is an error naming the reason."""
    s = str(solver).lower() if solver is not None else "auto"
    if s not in SOLVERS:
        raise FitError(f"unknown solver={solver!r}; use one of {', '.join(repr(x) for x in SOLVERS)}")
    if s == "direct":
        return s
    why = iterative_refusal(design, family, nAGQ, fast)
    if s == "iterative":
        if why:
            raise FitError(f"solver='iterative' cannot fit this model: {why}; use solver='direct'")
        return s
    if why is not None:
        return "direct"

    def large(tail: int) -> bool:
        return tail >= AUTO_TAIL or 8.0 * tail**2 > 0.5 * checks.memory_bytes()

    # the O(rows) estimate only when its row-free bound could reach the threshold
    return "iterative" if large(tail_bound(design.terms)) and large(dense_tail(design.terms)) else "direct"
