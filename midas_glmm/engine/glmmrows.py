"""The per-row work of a GLMM, as passes over blocks of rows.

PIRLS, the Laplace and the AGQ objective need the rows only through a few sums, each computed
for level-sized inputs (θ, β, the modes u) and returning level-sized outputs:

* :meth:`RowBlock.evaluate` — Σ log f(y | μ) and the cross-product blocks of the weighted
  working system at (β, u), the one pass a PIRLS step needs;
* :meth:`RowBlock.deviance` — Σ unit deviances (lme4's deviance);
* :meth:`RowBlock.agq_terms` — per-group Σ log f at the quadrature nodes;
* :meth:`RowBlock.totals` — per-group trials and responses (the Laplace cautions).

:class:`LocalRows` holds the rows in memory (one block); :class:`DaskRows` holds one block per
partition on the Dask workers and sums the blocks' answers by a tree of additions, so only
level-sized objects travel.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..design.blocks import CrossProducts
from ..design.reterms import ReTerm
from ..families import Family, ResponseTerms, ZeroInflatedRows
from ..linalg import codes, lazy
from .crossedrows import tree_sum
from .sparsity import FactorPlan, PlanBlocks, RowMap

__all__ = ["RowBlock", "LocalRows", "DaskRows", "flat_effects"]

rowkernels = lazy.load("rowkernels")  # compiled: loaded on first use

#: fewest rows whose canonical passes take the vectorised link kernels (rowkernels.logit_terms,
#: exp_terms): below, numpy's exp and log cost less than loading a kernel in a new process (~5 ms)
LINK_KERNEL_ROWS = 20_000

#: most rows of a model whose passes run in numpy (RowMap.numpy_rows), a first fit then compiling
#: no row pass: one scalar column (a canonical model's PIRLS runs group by group, scalarterm,
#: and passes the rows only a few times a fit), or a family whose weights and working response
#: are numpy's already (not a canonical binomial or Poisson) with at most four products of
#: random-effects columns (one term of one or two columns, or two scalar terms). There the
#: bincounts cost about what the compiled pass does; a canonical model's one compiled loop does
#: what numpy does in 1.2-1.7x the time at 400-2,000 rows of two or three terms, and wider terms
#: (ar1 of ten columns: 55 products, most of them zero) several times
NUMPY_ROWS = 20_000

#: most products of random-effects columns (three scalar terms) of a canonical binomial or Poisson
#: model of scalar terms whose passes other than the working system's (η, the Laplace gradient's
#: row sums) run in numpy below NUMPY_ROWS, the working system keeping its compiled pass: a first
#: fit then compiles one pass, not four (crossed Bernoulli, 2,000 rows: 7.3 → 5.2 s), for 2-4%
#: on a fit in a loop (η costs numpy what it costs compiled; the gradient's sums more). A term
#: with slopes keeps every compiled pass: its gradient's sums in numpy cost 10-13% a fit
#: (binomial (x|g), 2,000 rows)
CANONICAL_NUMPY_PRODUCTS = 6

#: most rows of such a canonical model of scalar terms whose working system's pass runs in numpy
#: too (RowMap.blocks as two sparse products): its first fit then compiles nothing (grouseticks,
#: 403 rows: 5.5 → ~2 s with the import; every new process loads no kernel). Measured in one
#: process against the compiled pass: level at 403 rows (grouseticks 0.94-1.02x a fit, an
#: observation-level Poisson 1.02-1.06x), 1.08-1.11x at 2,000 (the rows' exp, log1p and
#: temporaries outgrow the call overheads the compiled pass pays)
CANONICAL_NUMPY_SYSTEM_ROWS = 1_000

#: step of the central differences row by row in the Laplace gradient (η, log φ, the zero-inflation's ζ)
GRAD_STEP = 1e-4


#: most rows × quadrature nodes evaluated in one stacked pass by :meth:`RowBlock.agq_terms`
AGQ_STACK_ROWS = 2_000_000


#: μ is held inside (0, 1) as :meth:`Family.linkinv` holds it (rowkernels' bounds)
_MU_MIN, _MU_MAX = 1e-15, 1 - 1e-15


def link_terms(link: int, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The transcendental functions of a canonical pass at η: t = e^(−|η|) and lt = log(1 + t)
    (logit), or t = lt = e^η (log; ∞ where it overflows, a step to reject). By the vectorised
    :func:`rowkernels.logit_terms` and :func:`rowkernels.exp_terms` from :data:`LINK_KERNEL_ROWS`
    rows, numpy's below."""
    if len(eta) < LINK_KERNEL_ROWS:  # numpy's libm: no kernel to load for a few microseconds
        if link == codes.LOGIT:
            t = np.abs(eta)
            np.exp(np.negative(t, out=t), out=t)
            return t, np.log1p(t)
        with np.errstate(over="ignore"):
            t = np.exp(eta)
        return t, t
    t, lt = np.empty(len(eta)), np.empty(len(eta))
    if link == codes.LOGIT:
        rowkernels.logit_terms(np.ascontiguousarray(eta), t, lt)
        return t, lt
    rowkernels.exp_terms(np.ascontiguousarray(eta), t, lt)
    return t, t


def canonical_terms(link: int, eta: np.ndarray, a: np.ndarray, b: np.ndarray, m: np.ndarray | None = None, terms=None):
    """(Σ log f − const, μ, dμ/dη) of a canonical model at η in numpy, after
    :func:`link_terms` (or from its ``terms`` = (t, lt) computed beforehand): binomial (logit)
    a log μ + b log(1 − μ) = aη − m log(1 + e^η) with m = a + b
    (given or formed here), μ = 1/(1 + e^−η); Poisson (log) a log μ − bμ, μ = e^η. μ is held inside
    the family's range as :meth:`Family.linkinv` and the compiled pass
    (:func:`rowkernels.working_system`) hold it. The sum is not finite where a row's is not (a step
    to reject)."""
    t, lt = link_terms(link, eta) if terms is None else terms
    if link == codes.LOGIT:
        if t.min(initial=1.0) < 2 * _MU_MIN:  # some μ within 1e-15 of 0 or 1: held inside (0, 1)
            mu = np.clip(np.where(eta >= 0, 1.0, t) / (1.0 + t), _MU_MIN, _MU_MAX)
            tail = (mu == _MU_MIN) | (mu == _MU_MAX)
            logmu = np.where(tail, np.log(mu), np.minimum(eta, 0.0) - lt)
            log1mu = np.where(tail, np.log1p(-mu), -np.maximum(eta, 0.0) - lt)
            return float(a @ logmu + b @ log1mu), mu, mu * (1.0 - mu)
        mu = np.where(eta >= 0, 1.0, t) / (1.0 + t)
        softplus = np.maximum(eta, 0.0) + lt  # log(1 + e^η) = −log(1 − μ)
        return float(a @ eta - (a + b if m is None else m) @ softplus), mu, mu * (1.0 - mu)
    mu, logmu = t, eta
    if t.min(initial=1.0) < 1e-300:  # μ at its floor
        low = mu < 1e-300
        mu = np.where(low, 1e-300, mu)
        logmu = np.where(low, np.log(1e-300), eta)
    return float(a @ logmu - b @ mu), mu, mu


def flat_effects(lams, us) -> np.ndarray:
    """b = Λu of every term, flat in node order (level by level, each level's p values): each
    level's vector u_l times its term's λ (any p × p matrices in ``lams``)."""
    if len(us) == 1:  # one term: its product alone, without a concatenation (a copy)
        return (us[0].reshape(-1, lams[0].shape[0]) @ lams[0].T).ravel()
    return np.concatenate([(u.reshape(-1, lam.shape[0]) @ lam.T).ravel() for u, lam in zip(us, lams)])


class RowBlock:
    """A block of rows of a GLMM: response, fixed and random design, weights, offset."""

    def __init__(self, family: Family, y, X, weights, offset, terms: list[ReTerm], trials=None, zi=None, disp_X=None):
        self.fam = family
        self.y, self.X, self.w, self.off, self.terms = y, X, weights, offset, terms
        # a dispersion model's X_d (log φᵢ = (X_d γ)ᵢ): φ is then one value per row
        self.disp_X = disp_X
        self.resp = ResponseTerms(family, y, weights, trials)
        self.trials = trials
        # zero-inflation: the mixture's rows, and the conditional family's log f without weights
        self.zi = None if zi is None else ZeroInflatedRows(zi.X, y)
        self._resp1 = None if zi is None else ResponseTerms(family, y, np.ones_like(y))
        self.rowmap: RowMap | None = None
        self._link: int | None = None
        self._system_in_numpy = False  # the working system's pass in numpy (attach_plan)
        self._agq_rows = None  # (nodes, the response repeated per node, group-by-node codes)
        # the last compiled pass's (β, Λu, η, t): the Laplace gradient at PIRLS' modes reads η and
        # t = e^(−|η|) or e^η there instead of computing them again. Kept only for the rows in
        # memory (LocalRows), which the gradient serves: not on Dask workers (16 bytes a row)
        self.keep_last_pass = False
        self._last_pass = None
        self._pass_args = None  # what each compiled pass takes besides the point (_pass_arguments)
        # the rows with a positive prior weight, when some have none (None: every row)
        self._weighted = None if np.all(np.asarray(weights) > 0) else np.asarray(weights) > 0

    @property
    def compiled(self) -> bool:
        """Whether a PIRLS step is one compiled pass (a canonical binomial or Poisson model)."""
        return self._link is not None

    def attach_plan(self, plan: FactorPlan) -> None:
        """Write each pass's blocks straight into ``plan``'s layout (in memory: no sparse
        objects per PIRLS step). Without a plan, passes return :class:`CrossProducts`."""
        self.rowmap = RowMap(plan, self.terms)
        # read row by row by the passes; writeable, as the rows below (a read-only array is another
        # numba type, another compilation)
        self._Xc = np.require(self.X, dtype=float, requirements=["C", "W"])
        fam, resp = self.fam, self.resp
        if fam.kernel_link is not None and self.zi is None:  # one compiled pass per step
            self._link = fam.kernel_link
            # writeable contiguous copies where they are not: a read-only array is another type
            # to numba, and each mix of them another compilation of the pass (~1 s)
            self._rows = tuple(
                np.require(np.broadcast_to(v, self.y.shape), dtype=float, requirements=["C", "W"])
                for v in (self.y, self.w, self.off, *fam.kernel_rows(resp))
            )
        # not many rows, and a pass numpy does in about the compiled pass's time: the passes take
        # numpy's bincounts, with no compiled pass to load or compile (see NUMPY_ROWS)
        one_scalar = len(self.terms) == 1 and self.terms[0].p == 1
        products = self.rowmap.dest.shape[1]
        if self._link is None:
            small = products <= 4
        else:  # a canonical model: scalar terms only (see CANONICAL_NUMPY_PRODUCTS)
            small = all(t.p == 1 for t in self.terms) and products <= CANONICAL_NUMPY_PRODUCTS
        self.rowmap.numpy_rows = len(self.y) <= NUMPY_ROWS and (one_scalar or small)
        # a canonical model of several terms keeps the compiled working system (see NUMPY_ROWS)
        # unless it has few rows (CANONICAL_NUMPY_SYSTEM_ROWS)
        few = len(self.y) <= CANONICAL_NUMPY_SYSTEM_ROWS
        self._system_in_numpy = self.rowmap.numpy_rows and (one_scalar or self._link is None or few)

    @property
    def canonical_rows(self) -> tuple[np.ndarray, ...]:
        """(y, prior weights, offset, const, a, b) row by row, contiguous, of a canonical binomial or
        Poisson model (:attr:`compiled`): log f = const + a log μ + b log(1 − μ) (logit) or
        const + a log μ − bμ (log)."""
        return self._rows

    def pattern(self) -> CrossProducts:
        """Unit-weight blocks of the random-effects columns, each column taken as 1: the coupling
        pattern of the levels by the rows they share. (By the columns' values, two levels met only
        in rows where a column is 0, as a dummy's slope, would be left out, and the passes, which
        place every row's products, zeros too, would find no place for them.)"""
        ones = [replace(t, Zcols=np.broadcast_to(1.0, t.Zcols.shape)) for t in self.terms]
        return CrossProducts.from_rows(ones, self.X[:, :0], np.zeros(len(self.y)))

    def system(self, W, z, beta_raw, joint, shift, scale):
        """Blocks of the weighted working system: in (β, u) with columns [X_s z], or in u alone
        with the column z − Xβ. With a plan, one compiled pass writes them in its layout
        (:meth:`RowMap.blocks`); without one, :class:`CrossProducts`."""
        if self.rowmap is None:
            if joint:
                return CrossProducts.from_rows(self.terms, self.X, z, W, shift, scale)
            return CrossProducts.from_rows(self.terms, self.X[:, :0], z - self.X @ beta_raw, W)
        if joint:
            return self.rowmap.blocks(W, self._Xc, z, shift, scale, checked=True)
        return self.rowmap.blocks(W, self._Xc[:, :0], z - self._Xc @ beta_raw, checked=True)

    def eta(self, beta_raw: np.ndarray, lams, us) -> np.ndarray:
        """η = offset + Xβ + ZΛu, row by row, without forming Z."""
        out = self.off + self.X @ beta_raw
        if self.rowmap is not None:
            return self.rowmap.eta(out, flat_effects(lams, us))
        for t, lam, u in zip(self.terms, lams, us):
            b = u.reshape(-1, t.p) @ lam.T
            out = out + np.einsum("ij,ij->i", t.Zcols, b[t.codes])
        return out

    def working(self, mu, eta, phi: float, info: str):
        """Weights and working response z = η − offset + (y − μ)·w_fisher/(w·μ').

        ``info``: "newton" uses the observed information where it is positive everywhere (Fisher
        scoring otherwise); "laplace" the information of the Laplace log-determinant (observed for
        Gamma as glmmTMB, expected for binomial and Poisson as lme4). A row with a zero prior
        weight has zero weight in the system (as if dropped, glmmTMB's reading) and its working
        response is η − offset."""
        fam = self.fam
        if fam.exact:  # score and information from the log-likelihood itself (NB1, beta, ordinal)
            return self._exact_working(eta, *fam.derivatives(self.y, mu, eta, self.w, phi), info)
        fisher = fam.weights(self.y, mu, eta, self.w, phi)
        W = fisher
        observed = (info == "newton" and not fam.canonical) or (info == "laplace" and fam.laplace_observed)
        if observed:
            obs = fam.weights(self.y, mu, eta, self.w, phi, observed=True)
            # Newton steps need it positive in every row; the Laplace log-determinant takes it as
            # it is (glmmTMB's exact Hessian: a row may add negatively, the sum stays positive definite)
            if info == "laplace" or self._positive(obs):
                W = obs
        z = eta - self.off + (self.y - mu) / fam.mu_eta(eta, mu) * _ratio(fisher, W)
        return W, z

    def _exact_working(self, eta, score, obs, expected, info: str):
        """Weights and working response of an ``exact`` family from its (prior-weighted) score and
        informations. The Laplace log-determinant takes the observed information as it is
        (glmmTMB's exact Hessian: a row may contribute negatively, the sum stays positive
        definite); ``info="newton"`` takes it where it is positive everywhere, the expected one
        otherwise (PIRLS asks for it only when the observed system is not positive definite)."""
        if info == "laplace" and self.fam.laplace_observed:
            W = obs
        else:
            W = obs if info == "newton" and self._positive(obs) else expected
        return W, eta - self.off + _ratio(score, W)

    def _positive(self, info: np.ndarray) -> bool:
        """Whether the information is positive in every row with a positive prior weight."""
        return bool(np.all(info > 0)) if self._weighted is None else bool(np.all(info[self._weighted] > 0))

    def set_zero_inflation(self, gamma) -> None:
        """Use the zero-inflation coefficients γ in the passes that follow."""
        self.zi.set(gamma)

    def zero_inflated(self, mu, eta, phi: float, info: str):
        """(Σ wᵢ log f_zi(yᵢ), weights, working response) of a zero-inflated model at γ
        (:mod:`~midas_glmm.families.mixture`). Newton steps and the Laplace log-determinant take the
        observed information as it is (glmmTMB's exact Hessian; a zero row's may be negative,
        the system stays positive definite near the modes); ``info="safe"`` (PIRLS, where that
        system is not positive definite) takes it where it is positive and the conditional
        family's expected one times r elsewhere."""
        ll_rows, r = self.zi.loglik_rows(self._resp1.rows(mu, phi))
        ll = float(np.sum(self.w * ll_rows))
        if not np.isfinite(ll):
            return ll, None, None
        score, obs, expected = self.zi.derivatives(r, *self.fam.eta_derivatives(self.y, mu, eta, phi))
        W = np.where(obs > 0, obs, expected) if info == "safe" else obs
        W = self.w * W
        step = np.divide(self.w * score, W, out=np.zeros_like(W), where=W != 0)  # r = 0: a sure zero
        return ll, W, eta - self.off + step

    def evaluate(self, beta_raw, lams, us, phi, joint, shift, scale, info="newton"):
        """(Σ log f(y | μ), blocks of the working system) at (β, u).

        ``joint``: the system in (β, u) (columns X_s and z); else in u alone (column z − Xβ)."""
        if self._link is not None:
            return self._canonical(beta_raw, lams, us, joint, shift, scale)
        eta = self.eta(beta_raw, lams, us)
        mu = self.fam.linkinv(eta)
        if self.zi is not None:
            ll, W, z = self.zero_inflated(mu, eta, phi, info)
        elif self.fam.exact:  # the log-likelihood and its derivatives in one call
            rows, score, obs, expected = self.fam.loglik_and_derivatives(self.resp, mu, eta, self.w, phi)
            ll = float(np.sum(rows))
            if np.isfinite(ll):
                W, z = self._exact_working(eta, score, obs, expected, info)
        else:
            ll = self.resp.total(mu, phi)
            if np.isfinite(ll):
                W, z = self.working(mu, eta, phi, info)
        if not np.isfinite(ll):
            return ll, None
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(z))):
            return -np.inf, None  # outside the link's domain or overflowing: a step to reject
        return ll, self.system(W, z, beta_raw, joint, shift, scale)

    def _canonical(self, beta_raw, lams, us, joint, shift, scale):
        """:meth:`evaluate` for a canonical binomial or Poisson model: η, then e^(−|η|) and
        log(1 + e^(−|η|)) (logit) or e^η (log) by a vectorised kernel, then one compiled
        pass (:func:`rowkernels.working_system`) to the blocks of the working system."""
        rm = self.rowmap
        b = flat_effects(lams, us)
        if self._system_in_numpy:
            return self._canonical_numpy(beta_raw, b, joint, shift, scale)
        xb, eta, t, lt = self._linear_predictor_and_t(beta_raw, b)  # xb kept: the pass in u alone takes z − Xβ
        if self.keep_last_pass:
            self._last_pass = (np.array(beta_raw, dtype=float), b, eta, t)
        m = self.X.shape[1] + 1 if joint else 1
        A, XZ, XX = np.zeros(rm.plan.nA), np.zeros((rm.plan.q, m)), np.zeros((m, m))
        kernel, shift_c, rscale, work = self._pass_arguments(m, shift, scale)
        ll = kernel(
            eta, t, lt, xb, *self._rows, self._Xc, shift_c, rscale, joint,
            rm.Zall, rm.dest, rm.za, rm.zb, rm.zidx, rm.pair, A, XZ, XX, *work,
        )  # fmt: skip
        if not np.isfinite(ll):
            return ll, None
        return ll, PlanBlocks(A, XZ, XX, len(eta))

    def _pass_arguments(self, m: int, shift, scale):
        """(the compiled pass, X's shift and 1/scale as contiguous floats, the pass's scratch for
        m columns), kept from the last pass while ``shift`` and ``scale`` are the same objects
        (a PIRLS run's passes all take the problem's): a few microseconds a pass otherwise."""
        kept = self._pass_args
        if kept is None or kept[0] is not shift or kept[1] is not scale:
            rm = self.rowmap
            kernel = rowkernels.working_system_kernel(self._link, rm.Zall.shape[1], rm.every_pair)
            shift_c, rscale = np.asarray(shift, dtype=float), 1.0 / np.asarray(scale, dtype=float)
            self._pass_args = kept = (shift, scale, kernel, shift_c, rscale, {})
        work = kept[5].get(m)
        if work is None:  # fully overwritten by each pass: the same arrays serve them all
            work = kept[5][m] = rowkernels.working_buffers(m, self.rowmap.ncol)
        return kept[2], kept[3], kept[4], work

    def _canonical_numpy(self, beta_raw, b, joint, shift, scale):
        """:meth:`_canonical` in numpy (:attr:`RowMap.numpy_rows`: not many rows)."""
        y, prior, off, const, ya, yb = self._rows
        xb, eta, t, lt = self._linear_predictor_and_t(beta_raw, b)
        if self.keep_last_pass:
            self._last_pass = (np.array(beta_raw, dtype=float), b, eta, t)
        ll, mu, d = canonical_terms(self._link, eta, ya, yb, terms=(t, lt))
        ll += float(np.sum(const))
        W, z = prior * d, eta - off + (y - mu) / d
        if not (np.isfinite(ll) and np.all(np.isfinite(W)) and np.all(np.isfinite(z))):
            return -np.inf, None  # outside the link's domain or overflowing: a step to reject
        if joint:
            return ll, self.rowmap.blocks(W, self._Xc, z, shift, scale, checked=True)
        return ll, self.rowmap.blocks(W, self._Xc[:, :0], z - xb, checked=True)  # z − Xβ, Xβ formed above

    def _linear_predictor_and_t(self, beta_raw, b) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(Xβ, η = offset + Xβ + Zb, t, lt) with :func:`link_terms`' t and lt."""
        xb = self.X @ beta_raw
        eta = self.rowmap.eta(self.off + xb, b)  # a new contiguous array
        return (xb, eta, *link_terms(self._link, eta))

    def _eta_and_t(self, beta_raw, lams, us) -> tuple[np.ndarray, np.ndarray]:
        """η and t (:meth:`_linear_predictor_and_t`) at (β, u): the last pass's when it was at
        exactly these values (PIRLS ends with a pass at its modes), else computed."""
        b = flat_effects(lams, us)
        last = self._last_pass
        if last is not None and np.array_equal(last[0], beta_raw) and np.array_equal(last[1], b):
            return last[2], last[3]
        return self._linear_predictor_and_t(beta_raw, b)[1:3]

    def laplace_rows(self, eta, phi: float, dzeta: float = 0.0, rows: bool = True, mu=None):
        """(log f, its score and its observed information in η) per row, prior-weighted, at
        dispersion φ and with the zero-inflation's linear predictor shifted by ``dzeta``: the
        quantities whose derivatives make the Laplace gradient of a non-canonical family.
        ``rows=False``: log f may be left out (None) where it costs a pass of its own; ``mu``:
        g⁻¹(η), when the caller has it."""
        mu = self.fam.linkinv(eta) if mu is None else mu
        if self.zi is None and self.fam.exact:
            if not rows:  # the derivatives alone: no log Γ terms of log f (NB1, beta)
                score, obs, _ = self.fam.derivatives(self.y, mu, eta, self.w, phi)
                return None, score, obs
            ll, score, obs, _ = self.fam.loglik_and_derivatives(self.resp, mu, eta, self.w, phi)
            return ll, score, obs
        score, obs, _ = self.fam.eta_derivatives(self.y, mu, eta, phi, expected=False)
        if self.zi is None:
            return self.resp.rows(mu, phi) if rows else None, self.w * score, self.w * obs
        ll, r = self.zi.loglik_rows(self._resp1.rows(mu, phi), dzeta)
        score, obs, _ = self.zi.derivatives(r, score, obs, obs)
        return self.w * ll, self.w * score, self.w * obs

    def _information_rows(self, eta, phi: float) -> np.ndarray:
        """The observed information of :meth:`laplace_rows` alone (w′'s central differences need
        nothing else): the family's observed weight, or its derivatives without log f for an
        ``exact`` family; the whole of :meth:`laplace_rows` with zero-inflation."""
        if self.zi is not None or self.fam.exact:
            return self.laplace_rows(eta, phi, rows=False)[2]
        mu = self.fam.linkinv(eta)
        return self.w * self.fam.weights(self.y, mu, eta, 1.0, phi, observed=True)

    def laplace_gradient_sums(self, beta_raw, lams, us, factor, S_data, phi=1.0, channels=()):
        """Row sums for the gradient of the Laplace deviance at the modes (in memory): Z'ℓ',
        Z'r, X'(r − 2ℓ'), q = A⁻¹Λ'Z'v, and one number per extra channel, where ℓ' and
        w = −ℓ'' are the log-likelihood's derivatives in η, v_i = w'_i h_i with the leverage
        h_i = ζ_i'A⁻¹ζ_i (ζ_i = Λ'z_i, A⁻¹ read at the data blocks from ``S_data``) and
        r = v − W ZΛq (gradient.laplace_gradient).

        ``channels``: parameters that act on each row's log f other than through η —
        ``"log_phi"`` (the dispersion) and ``"zeta"`` (the zero-inflation's linear predictor,
        returned as X_zi'g). Their gradient is Σᵢ [−2 ∂ℓᵢ + hᵢ ∂wᵢ + (ZΛq)ᵢ ∂ℓ'ᵢ], the
        derivatives by central differences row by row (no PIRLS run), or the family's own in log φ
        where it has them (:meth:`Family.log_phi_rows`); w' by central differences in η for a
        non-canonical family."""
        if self._link is not None:  # canonical binomial / Poisson (no other channels): compiled passes
            return self._canonical_gradient_sums(*self._eta_and_t(beta_raw, lams, us), lams, factor, S_data)
        eta = self.eta(beta_raw, lams, us)
        mu = self.fam.linkinv(eta)
        _, dl, w = self.laplace_rows(eta, phi, rows=False, mu=mu)
        dw = (self._information_rows(eta + GRAD_STEP, phi) - self._information_rows(eta - GRAD_STEP, phi)) / (
            2 * GRAD_STEP
        )
        Zl, Zr, Xr, qv, h, Zq = self._gradient_from_rows(dl, w, dw, lams, factor, S_data)
        extra = []
        for channel in channels:
            if channel == "thresholds":  # per coordinate a_k of the thresholds
                extra.append(self._threshold_gradient(eta, phi, h, Zq))
                continue
            dll, ddl, dww = self._channel_rows(channel, eta, mu, phi, dl, w)
            g = -2.0 * dll + h * dww + Zq * ddl
            if channel == "log_phi":  # ∂/∂ log φ, or through log φᵢ = (X_d γ)ᵢ for a dispersion model
                extra.append(np.atleast_1d(g.sum()) if self.disp_X is None else self.disp_X.T @ g)
            else:
                extra.append(self.zi.X.T @ g)
        return Zl, Zr, Xr, qv, extra

    def mode_slope_sums(self, beta_raw, lams, us, dbs, S, phi=1.0) -> np.ndarray:
        """Z'[ℓ', W Z∂b₁, …, W Z∂b_m, W X S] at (β, u) (q × (1 + m + p)): the row sums of the
        modes' derivatives in θ and β (:func:`~.pirls._mode_predictor`), with ℓ' and W = −ℓ'' the
        log-likelihood's derivatives in η (:meth:`laplace_rows`: the information of the Laplace
        factor), ∂b_j = (∂Λ/∂θ_j)u (``dbs``, flat in node order) and S the standardisation."""
        if self._link is not None:  # η and t of the PIRLS run's last pass, at these modes
            eta, t = self._eta_and_t(beta_raw, lams, us)
            dl, w, _ = self._canonical_derivatives(self._canonical_mu(eta, t))
        else:
            eta = self.eta(beta_raw, lams, us)
            _, dl, w = self.laplace_rows(eta, phi, rows=False)
        rm = self.rowmap
        m = len(dbs)
        V = np.empty((len(eta), 1 + m + self.X.shape[1]))
        V[:, 0] = dl
        zero = np.zeros(len(eta))
        for j, db in enumerate(dbs):
            np.multiply(w, rm.eta(zero, db), out=V[:, 1 + j])
        np.multiply(self.X, w[:, None], out=V[:, 1 + m :])
        sums = rm.zt_product(V)
        sums[:, 1 + m :] = sums[:, 1 + m :] @ S  # Z'WX S: S applied on the levels' side
        return sums

    def _channel_rows(self, channel, eta, mu, phi, dl, w):
        """(∂ log f, ∂ℓ', ∂w) per row in a channel's parameter ("log_phi" or "zeta"): the family's
        own in log φ where it has them (:meth:`Family.log_phi_rows`, given the rows' ℓ' and w),
        else central differences of :meth:`laplace_rows`."""
        if channel == "log_phi":
            if self.zi is None:
                exact = self.fam.log_phi_rows(self.y, mu, eta, self.w, phi, derivs=(dl, w))
                if exact is not None:
                    return exact
            e = np.exp(GRAD_STEP)
            plus, minus = self.laplace_rows(eta, phi * e), self.laplace_rows(eta, phi / e)
        else:
            plus, minus = self.laplace_rows(eta, phi, GRAD_STEP), self.laplace_rows(eta, phi, -GRAD_STEP)
        return tuple((p_ - m_) / (2 * GRAD_STEP) for p_, m_ in zip(plus, minus))

    def _gradient_from_rows(self, dl, w, dw, lams, factor, S_data):
        """The Laplace gradient's row sums from ℓ', w = −ℓ'' and w' per row, by the map's passes
        (numpy's or the compiled ones): (Z'ℓ', Z'r, X'(r − 2ℓ'), q, the leverages h, ZΛq)."""
        rm = self.rowmap
        h = rm.leverages(lams, S_data)
        v = h * dw
        Zlv = rm.zt_product(np.column_stack([dl, v]))
        qv = factor.solve(factor.lam_t(Zlv[:, 1]))
        Zq = rm.eta(np.zeros(len(dl)), factor.lam(qv))
        r = v - w * Zq
        Zr = rm.zt_product(r[:, None])
        return Zlv[:, 0], Zr[:, 0], self.X.T @ (r - 2.0 * dl), qv, h, Zq

    def _canonical_mu(self, eta, t) -> np.ndarray:
        """μ of a canonical model from :func:`link_terms`' t as the PIRLS pass takes it: (1 or t)/(1 + t)
        by the sign of η (logit), t (log), held inside the family's range."""
        if self._link == codes.LOGIT:
            mu = np.where(eta >= 0, 1.0, t)
            mu /= 1.0 + t
            return np.clip(mu, _MU_MIN, _MU_MAX, out=mu)
        return np.maximum(t, 1e-300)

    def _canonical_derivatives(self, mu) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ℓ', w = −ℓ'', w') in η per row of a canonical model at μ, prior-weighted (the a, b of
        :attr:`canonical_rows`), as the compiled pass forms them."""
        a, b = self._rows[4:]
        if self._link == codes.LOGIT:
            w = (a + b) * mu * (1.0 - mu)
            return a - (a + b) * mu, w, w * (1.0 - 2.0 * mu)
        w = b * mu
        return a - w, w, w

    def _canonical_gradient_sums(self, eta, t, lams, factor, S_data):
        """:meth:`laplace_gradient_sums` of a canonical binomial or Poisson model (no extra
        channels) in two compiled passes over the rows, with the level-sized solve between them;
        μ from t (:meth:`_linear_predictor_and_t`) as the PIRLS pass takes it: (1 or t)/(1 + t) by the
        sign of η (logit), t (log), held inside the family's range."""
        rm = self.rowmap
        _, _, _, _, a, b = self._rows
        Lblk = np.zeros((rm.Zall.shape[1],) * 2)
        cb = rm.col_base
        for k, lam in enumerate(lams):
            Lblk[cb[k] : cb[k + 1], cb[k] : cb[k + 1]] = lam
        n = len(eta)
        mu = self._canonical_mu(eta, t)
        if rm.numpy_rows:  # ℓ', w = −ℓ'' and w' of the canonical model, as the compiled pass forms them
            return (*self._gradient_from_rows(*self._canonical_derivatives(mu), lams, factor, S_data)[:4], [])
        dl, w, v = np.empty(n), np.empty(n), np.empty(n)
        Zlv = np.zeros((rm.plan.q, 2))
        Zr, Xr = np.zeros(rm.plan.q), np.zeros(self._Xc.shape[1])
        S = np.ascontiguousarray(S_data, dtype=float)
        rows = (rm.Zall, rm.zidx, Lblk, rm.dest, rm.za, rm.zb, rm.mult, S, dl, w, v, Zlv)
        # one dispatcher, two passes: the first's Λq (not known yet) and the second's ζ scratch
        # (not used) stand in as S, an array of their type
        zeta = np.empty(len(Lblk))
        rowkernels.canonical_gradient_rows(True, self._link, mu, a, b, *rows, S, self._Xc, Zr, Xr, zeta)
        qv = factor.solve(factor.lam_t(Zlv[:, 1]))
        bq = np.ascontiguousarray(factor.lam(qv), dtype=float)
        rowkernels.canonical_gradient_rows(False, self._link, mu, a, b, *rows, bq, self._Xc, Zr, Xr, S)
        return Zlv[:, 0], Zr, Xr, qv, []

    def _threshold_gradient(self, eta, tau, h, Zq) -> np.ndarray:
        """The Laplace gradient's channel for an ordinal model's thresholds: per coordinate a_k
        (τ = thresholds_of(a)), Σᵢ [−2∂ℓᵢ + hᵢ∂wᵢ + (ZΛq)ᵢ∂ℓ'ᵢ] (the family's, analytic)."""
        return self.fam.threshold_gradient(self.y, eta, tau, self.w, h, Zq)

    def deviance(self, beta_raw, lams, us, phi: float = 1.0) -> float:
        """Σ wᵢ d(yᵢ, μᵢ) at (β, u) (NB2 at its size θ = ``phi``)."""
        mu = self.fam.linkinv(self.eta(beta_raw, lams, us))
        return self.fam.deviance(self.y, mu, self.w, phi)

    def boundary_rows(self, beta_raw, lams, us) -> int:
        """Rows whose fitted probability is numerically 0 or 1 (within 10 machine epsilons, R's
        rule for glm's separation warning)."""
        mu = self.fam.linkinv(self.eta(beta_raw, lams, us))
        eps = 10 * np.finfo(float).eps
        return int(np.count_nonzero((mu < eps) | (mu > 1 - eps)))

    def agq_terms(self, beta_raw, lam: float, u, s, nodes, phi) -> np.ndarray:
        """Σ log f(y | μ) per group at the adaptive nodes u + s·t_k (one scalar term)."""
        t = self.terms[0]
        z = t.Zcols[:, 0]
        base = self.off + self.X @ beta_raw
        out = np.empty((len(nodes), t.nlevels))
        if self._link is not None:  # canonical binomial / Poisson: one compiled pass
            const, ya, yb = self._rows[3:]
            zc = np.ascontiguousarray(z, dtype=float)
            codes = np.ascontiguousarray(t.codes, dtype=np.int64)
            args = (np.asarray(u, float), np.asarray(s, float), np.asarray(nodes, float))
            scratch = [np.empty(len(base)) for _ in range(3)]
            rowkernels.agq_loglik(self._link, base, zc, codes, float(lam), *args, const, ya, yb, out, *scratch)
            return out
        K, G = len(nodes), t.nlevels
        if K * len(self.y) > AGQ_STACK_ROWS:  # node by node: the stacked rows would not be small
            for k, tk in enumerate(nodes):
                mu = self.fam.linkinv(base + lam * z * (u + s * tk)[t.codes])
                out[k] = np.bincount(t.codes, weights=self.resp.rows(mu, phi), minlength=G)
            return out
        # every node in one pass: the rows repeated once per node (their constant part kept)
        if self._agq_rows is None or self._agq_rows[0] != K:
            trials = None if self.trials is None else np.tile(self.trials, K)
            stacked = ResponseTerms(self.fam, np.tile(self.y, K), np.tile(self.w, K), trials)
            self._agq_rows = (K, stacked, (t.codes[None, :] + G * np.arange(K)[:, None]).ravel())
        _, stacked, codes = self._agq_rows
        uk = u[None, :] + s[None, :] * np.asarray(nodes, dtype=float)[:, None]  # K × G
        eta = base[None, :] + lam * z[None, :] * uk[:, t.codes]
        rows = stacked.rows(self.fam.linkinv(eta.ravel()), phi)
        return np.bincount(codes, weights=rows, minlength=K * G).reshape(K, G)

    def scalar_sums(self, beta_raw, lam: float, u, phi):
        """Per group of the single scalar term at (β, u): (Σ log f, Σ λzᵢ∂ℓᵢ/∂η, Σ λ²zᵢ²(−∂²ℓᵢ/∂η²)),
        the pieces of each group's Newton step for its mode (prior-weighted; observed information)."""
        t = self.terms[0]
        z = t.Zcols[:, 0]
        eta = self.off + self.X @ beta_raw + lam * z * np.asarray(u, dtype=float)[t.codes]
        rows, score, obs = self.laplace_rows(eta, phi)
        G = t.nlevels
        return (
            np.bincount(t.codes, weights=rows, minlength=G),
            np.bincount(t.codes, weights=lam * z * score, minlength=G),
            np.bincount(t.codes, weights=lam * lam * z * z * obs, minlength=G),
        )

    def totals(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Per group of the first term: trials (Σw) and responses (Σy); overall Σ y·w and Σ w."""
        t = self.terms[0]
        return (
            np.bincount(t.codes, weights=self.w, minlength=t.nlevels),
            np.bincount(t.codes, weights=self.y, minlength=t.nlevels),
            float(np.sum(self.y * self.w)),
            float(np.sum(self.w)),
        )


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b, 0 where b is 0 (a row without weight, whose a is 0 too)."""
    return np.divide(a, b, out=np.zeros(np.shape(b)), where=b != 0)


def _combine(a, b):
    """Sum two blocks' answers (scalars, arrays, CrossProducts, or tuples of those)."""
    if isinstance(a, tuple):
        return tuple(_combine(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return None
    return a + b


class LocalRows:
    """All rows in memory, as one block."""

    def __init__(self, block: RowBlock):
        self.block = block
        block.keep_last_pass = True  # the in-memory gradient reads it

    def __call__(self, method: str, *args):
        return getattr(self.block, method)(*args)


class DaskRows:
    """One block per partition, kept on the Dask workers; answers summed on the workers."""

    def __init__(self, source, family: Family):
        import dask

        def make(part):
            y, X, w, off, terms, trials = source.rows(part)
            return RowBlock(family, y, X, w, off, terms, trials)

        blocks = [dask.delayed(make)(p) for p in source.ddf.to_delayed()]
        self.blocks = dask.persist(*blocks)

    def __call__(self, method: str, *args):
        import dask

        return tree_sum([dask.delayed(getattr)(b, method)(*args) for b in self.blocks], _combine)
