"""The Laplace deviance of a GLMM with one scalar random-effects term, and its gradient, group by group.

With one term of one column z (a random intercept, or ``(0 + x | g)``) the system
Λ'Z'WZΛ + I is diagonal: each group's mode is a scalar, its information
H_g = 1 + λ² Σ_{i∈g} wᵢzᵢ², and the whole of PIRLS (in u at fixed β), the Laplace deviance
−2ℓ ≈ −2 Σ log f(y | μ̂) + Σ û_g² + Σ log H_g and its gradient are sums over the rows by group
(``np.bincount``): no factor, no plan, no working-system blocks. This is the commonest GLMM (a
binary or count response with a random intercept), and on a small one the general machinery's
per-step set-up had cost many times the arithmetic (cbpp: 600 µs a gradient for 56 rows, 90 µs
here). Below :data:`~.glmmrows.NUMPY_ROWS` rows the few passes of the general PIRLS left in a
fit (the joint start, the state at the optimum) run in numpy too: such a fit loads no compiled
kernel, and its first run after installation compiles nothing.

The gradient is :func:`~.gradient.laplace_gradient`'s with A⁻¹ diagonal: with ℓ', w = −ℓ''
and w' per row at the modes, the leverage hᵢ = λ²zᵢ²/H_g, v = h w', q_g = λ Σ_g zv / H_g and
r = v − wλzq,

    ∂/∂β = X'(r − 2ℓ'),    ∂/∂λ = Σ_g [û_g Σ_g z(r − 2ℓ') + q_g Σ_g zℓ' + 2λ Σ_g wz² / H_g].

For canonical binomial (logit) and Poisson (log) models (:attr:`Family.kernel_link`), whose
Fisher information, which PIRLS and lme4's Laplace approximation take, is the observed one.
"""

from __future__ import annotations

import numpy as np

from ..linalg import codes
from .glmmrows import canonical_terms

__all__ = ["ScalarTerm", "SCALAR_TERM_ROWS"]

#: most rows for which a one-scalar-term GLMM takes this path (it was as fast or faster than the
#: general one from 1e4 to 1e6 rows; its row-sized temporaries are a dozen arrays at a time)
SCALAR_TERM_ROWS = 1_000_000


class ScalarTerm:
    """PIRLS for the modes, the Laplace deviance and its gradient in (λ, β) of a canonical
    binomial or Poisson GLMM with a single scalar random-effects term, rows in memory.

    Parameters
    ----------
    block : RowBlock
        The rows (response terms, X, offset, prior weights) and the one term (codes, column z).
    """

    def __init__(self, block):
        term = block.terms[0]
        self.link = block.fam.kernel_link
        self.codes = np.asarray(term.codes, dtype=np.intp)
        self.levels = term.nlevels
        z = np.asarray(term.Zcols[:, 0], dtype=float)
        self.z = None if np.all(z == 1.0) else z  # None: a random intercept (z = 1)
        self.z2 = None if self.z is None else z * z
        self.X = block.X
        # log f = const + a log μ + b log(1 − μ) (logit) or const + a log μ − bμ (log), row by row
        self.y, self.prior, self.off, const, self.a, self.b = block.canonical_rows
        self.const = float(np.sum(const))
        self.m = self.a + self.b  # binomial: the trials
        self._Xs = None  # X_s' of the joint PIRLS (:meth:`joint_modes`), formed on first use

    def _group(self, rows: np.ndarray) -> np.ndarray:
        """Σ_{i∈g} rows_i per group."""
        return np.bincount(self.codes, weights=rows, minlength=self.levels)

    def _zb(self, lam: float, u: np.ndarray) -> np.ndarray:
        """(ZΛu)ᵢ = λ zᵢ u_g."""
        b = (lam * u)[self.codes]
        return b if self.z is None else b * self.z

    def evaluate(self, base: np.ndarray, lam: float, u: np.ndarray):
        """At the trial modes u: (penalised deviance −2Σ log f + Σu², (Σ_g zℓ', Σ_g z²W, μ, W,
        ℓ')) with ℓ' = prior·(y − μ) and W = prior·μ' per row; (∞, None) where a row's
        log-likelihood is not finite (a step to reject)."""
        eta = base + self._zb(lam, u)
        ll, mu, d = canonical_terms(self.link, eta, self.a, self.b, self.m)
        ll += self.const
        if not np.isfinite(ll):
            return np.inf, None
        W = self.prior * d
        dl = self.prior * (self.y - mu)
        zdl, zW = (dl, W) if self.z is None else (dl * self.z, W * self.z2)
        return -2.0 * ll + float(u @ u), (self._group(zdl), self._group(zW), mu, W, dl)

    def modes(self, base: np.ndarray, lam: float, u0: np.ndarray, maxit: int = 60, tol: float = 1e-10):
        """PIRLS in u at fixed β (``base`` = offset + Xβ) and λ from ``u0``: (û, deviance, sums at
        û), or None where it does not converge (the general PIRLS then takes over). Each group's
        Newton step is Δu_g = (λ Σ_g zℓ' − u_g)/H_g."""

        def evaluate(x):
            return self.evaluate(base, lam, x[0])

        def newton(x, sums):
            zdl, zW = sums[0], sums[1]
            return [(lam * zdl - x[0]) / (1.0 + lam * lam * zW)]

        found = _newton_modes(evaluate, newton, u0, [], maxit, tol)
        return None if found is None else (found[0][0], *found[1:])

    def joint_modes(self, lam: float, beta_s: np.ndarray, u0: np.ndarray, S, shift, scale, maxit=60, tol=1e-10):
        """PIRLS in (β, u) jointly at λ from (``beta_s``, ``u0``), β on the standardised scale
        X_s = (X − shift)/scale = X S: (û, β̂_s), or None where it does not converge. Each Newton
        step solves the system [H, B; B', C] with H diagonal by its Schur complement:
        B = λ Z'WX_s by group, C = X_s'WX_s, (C − B'H⁻¹B) Δβ = X_s'ℓ' − B'H⁻¹g_u,
        Δu = H⁻¹(g_u − BΔβ), g_u = λZ'ℓ' − u."""
        Xs = self._standardised(shift, scale)

        def evaluate(x):
            return self.evaluate(self.off + self.X @ (S @ x[1]), lam, x[0])

        def newton(x, sums):
            zdl, zW, _, W, dl = sums
            H = 1.0 + lam * lam * zW
            g_u = lam * zdl - x[0]
            WXs = Xs * W  # W X_s', one row per column
            zWXs = WXs if self.z is None else WXs * self.z
            B = lam * np.column_stack([self._group(r) for r in zWXs])
            Bh = B / H[:, None]
            try:
                db = np.linalg.solve(WXs @ Xs.T - B.T @ Bh, Xs @ dl - Bh.T @ g_u)
            except np.linalg.LinAlgError:
                return None
            return [(g_u - B @ db) / H, db]

        found = _newton_modes(evaluate, newton, u0, [beta_s], maxit, tol)
        return None if found is None else tuple(found[0])

    def _standardised(self, shift, scale) -> np.ndarray:
        """X_s' = ((X − shift)/scale)', one row per column (formed once)."""
        if self._Xs is None:
            self._Xs = np.ascontiguousarray(((self.X - shift) / scale).T)
        return self._Xs

    def laplace(self, lam: float, beta_raw: np.ndarray, u0: np.ndarray, gradient: bool = True):
        """(−2ℓ, û, (∂/∂λ, ∂/∂β on X's own scale) or None) at (λ, β), PIRLS from ``u0``; None
        where PIRLS does not converge."""
        base = self.off + self.X @ beta_raw
        found = self.modes(base, lam, u0)
        if found is None:
            return None
        u, obj, (score, zW, mu, W, dl) = found
        H = 1.0 + lam * lam * zW
        value = obj + float(np.sum(np.log(H)))
        if not gradient:
            return value, u, None
        dW = W * (1.0 - 2.0 * mu) if self.link == codes.LOGIT else W  # w' = dw/dη
        z = self.z
        z2dW = dW if z is None else dW * self.z2
        h = lam * lam / H  # the leverage per unit z²
        zv = h * self._group(z2dW if z is None else z2dW * z)  # Σ_g z v, v = hz²w'
        q = lam * zv / H
        r = h[self.codes] * z2dW - W * self._zb(lam, q)
        Zr = zv - lam * q * zW  # Σ_g z r
        g_lam = float(u @ (Zr - 2.0 * score) + q @ score + 2.0 * lam * np.sum(zW / H))
        return value, u, (g_lam, self.X.T @ (r - 2.0 * dl))

    def mode_derivatives(self, lam: float, beta_raw: np.ndarray, u: np.ndarray, S: np.ndarray):
        """dû/d(λ, β_s) at the modes u (levels × (1 + p)), None where the rows' log-likelihood is
        not finite there: :func:`~.gradient.mode_derivatives` with Λ'Z'WZΛ + I diagonal, per group
        ((Σ_g zℓ' − λu_g Σ_g z²W), −λ Σ_g zW X S) / H_g."""
        _, sums = self.evaluate(self.off + self.X @ beta_raw, lam, u)
        if sums is None:
            return None
        zdl, zW, _, W, _ = sums
        zw = W if self.z is None else W * self.z
        B = np.column_stack([self._group(c) for c in (self.X * zw[:, None]).T]) @ S
        return np.column_stack([zdl - lam * u * zW, -lam * B]) / (1.0 + lam * lam * zW)[:, None]


def _largest(a: np.ndarray) -> float:
    """max |x| over the entries of ``a`` (0 when there are none)."""
    return float(np.abs(a).max(initial=0.0))


def _newton_modes(evaluate, newton, u0, rest, maxit, tol):
    """Newton steps on the modes u (and ``rest``, β for a joint PIRLS) with
    :meth:`GLMMProblem.pirls`' rules, so that both find the same modes: from ``u0`` (u = 0 where
    the penalised deviance is not finite there), each step halved up to 12 times until the
    deviance does not rise; done when the proposed or the taken step is below ``tol`` relative to
    1 + max|u|, or the deviance stalls (gain below 1e-14, step below 1e-7); once more from u = 0
    when a warm start does not converge. ``evaluate([u, *rest])`` gives (deviance, sums) or
    (∞, None); ``newton(x, sums)`` the step of every part, or None. Returns ([u, *rest], deviance,
    sums) or None."""
    for start in (u0, None):
        if start is None:
            if not np.any(u0):
                return None
            start = np.zeros_like(u0)
        x = [np.array(start, dtype=float), *(np.array(r, dtype=float) for r in rest)]
        obj, sums = evaluate(x)
        if sums is None:
            x[0] = np.zeros_like(x[0])
            obj, sums = evaluate(x)
        for _ in range(maxit):
            if sums is None:
                break
            dx = newton(x, sums)
            if dx is None:
                return None
            size = 1.0 + _largest(x[0])
            if max(_largest(d) for d in dx) < tol * size:
                return x, obj, sums
            step = 1.0
            for _half in range(12):
                cand = [xi + step * di for xi, di in zip(x, dx)]
                c_obj, c_sums = evaluate(cand)
                if c_sums is not None and c_obj <= obj + 1e-10 * abs(obj):
                    break
                step /= 2
            else:
                break
            delta = max(_largest(c - xi) for c, xi in zip(cand, x))
            change = obj - c_obj
            x, obj, sums = cand, c_obj, c_sums
            size = 1.0 + _largest(x[0])
            if delta < tol * size or (abs(change) < 1e-14 * (1 + abs(obj)) and delta < 1e-7 * size):
                return x, obj, sums
    return None
