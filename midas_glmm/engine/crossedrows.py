"""The rows as the iterative solver reads them: blocks of rows and their passes, in memory or on Dask.

Every pass over the rows the iterative solver makes (:mod:`.iterative`, :mod:`.iterglmm`) takes
level-sized inputs (λ, vectors of random effects, β) and returns level-sized sums, so blocks of
rows answer separately and their answers add up. :class:`RowPart` is one block: the rows sorted
by the level of the eliminated term (the term with the most random effects), all of a level's
rows in the same block — what the fused Schur-complement pass needs — with their packed codes
and columns, and for a GLMM the response's pieces and the current working weights.

* :class:`CrossedRows` — the rows in memory, one block;
* :class:`DaskCrossedRows` — one block per partition of a Dask DataFrame shuffled by the
  eliminated term's grouping columns, built and kept on the workers (``persist``); each pass is a
  map over the blocks and a tree of additions on the workers, and only level-sized arrays travel.
"""

from __future__ import annotations

import os

import numpy as np

from ..families import Family, ResponseTerms
from ..linalg import lazy

__all__ = ["CrossedRows", "DaskCrossedRows", "RowLayout", "RowPart"]

rowkernels = lazy.load("rowkernels")  # compiled: loaded on first use
matfree = lazy.load("matfree")  # compiled: loaded on first use


class RowLayout:
    """The packing shared by every block: the terms (eliminated one first), each term's columns in
    Z (``zoff``) and its random effects in a q-vector (``qoff``)."""

    def __init__(self, terms):
        T = len(terms)
        qs = [t.q for t in terms]
        e = int(np.argmax(qs))
        self.order = [e] + [i for i in range(T) if i != e]
        self.terms = [terms[i] for i in self.order]
        ps = [t.p for t in self.terms]
        self.zoff = np.concatenate([[0], np.cumsum(ps)]).astype(np.int64)
        self.qoff = np.concatenate([[0], np.cumsum([t.q for t in self.terms])]).astype(np.int64)
        self.pmax = max(ps)
        self.q = int(self.qoff[-1])
        self.qe = int(self.qoff[1])
        self.identity = np.broadcast_to(np.eye(self.pmax), (T, self.pmax, self.pmax)).copy()

    @property
    def T(self) -> int:
        return len(self.terms)

    def lam_array(self, lams: list[np.ndarray]) -> np.ndarray:
        """The packed (T, pmax, pmax) λ from λ_t in the model's term order."""
        L = np.zeros((self.T, self.pmax, self.pmax))
        for j, i in enumerate(self.order):
            p = lams[i].shape[0]
            L[j, :p, :p] = lams[i]
        return L

    def apply_lam(self, L: np.ndarray, V: np.ndarray, transpose: bool = False) -> np.ndarray:
        """Λ V (or Λ'V) for a (q, m) array, term by term."""
        out = np.empty_like(V)
        for j, t in enumerate(self.terms):
            p, sl = t.p, slice(self.qoff[j], self.qoff[j + 1])
            lam = L[j, :p, :p].T if transpose else L[j, :p, :p]
            out[sl] = np.einsum("ab,lbm->lam", lam, V[sl].reshape(t.nlevels, p, -1)).reshape(t.q, -1)
        return out


class RowPart:
    """One block of rows, sorted by the eliminated term's level, and the passes over it.

    ``which`` selects the row weights of a pass: ``"prior"`` (an LMM's prior weights) or
    ``"work"`` (a GLMM's current PIRLS weights W)."""

    def __init__(self, layout: RowLayout, codes: list[np.ndarray], Zcols: list[np.ndarray], X, y, w, off):
        e_codes = codes[layout.order[0]]
        perm = np.argsort(e_codes, kind="stable")
        n, T = len(e_codes), layout.T
        self.n, self.k = n, X.shape[1]
        counts = np.bincount(e_codes, minlength=layout.terms[0].nlevels)
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.maxseg = int(max(counts.max(initial=0), 1))
        self.codes = np.empty((n, T), np.int32)
        self.Z = np.empty((n, int(layout.zoff[-1])))
        for j, i in enumerate(layout.order):
            self.codes[:, j] = codes[i][perm]
            self.Z[:, layout.zoff[j] : layout.zoff[j + 1]] = Zcols[i][perm]
        self.zoff, self.qoff, self.pmax = layout.zoff, layout.qoff, layout.pmax
        self.nlevels = [t.nlevels for t in layout.terms]
        self.X = np.ascontiguousarray(X[perm], dtype=float)
        self.y = np.ascontiguousarray(np.asarray(y, dtype=float)[perm])
        self.prior = np.ascontiguousarray(np.broadcast_to(np.asarray(w, dtype=float), (n,))[perm])
        self.off = np.ascontiguousarray(np.broadcast_to(np.asarray(off, dtype=float), (n,))[perm])
        self.perm = perm
        self.W = self.z = self.eta = self.Wp = None
        self.glmm = None
        self._point, self._ll = None, 0.0

    def _w(self, which) -> np.ndarray:
        """The row weights of a pass: ``"prior"``, or a GLMM's working weights at the point
        ``("work", λ, u, β)`` (computed here unless this block holds them already: a block may
        be a copy on another worker, so nothing relies on state left by an earlier pass)."""
        if isinstance(which, str):
            return self.prior
        self.at(*which[1:])
        return self.W

    def at(self, L, u, beta) -> float:
        """The working weights, response and η at (λ, u, β), kept until another point is asked."""
        key = (L.tobytes(), None if u is None else hash(u.tobytes()), beta.tobytes())
        if key != self._point:
            self._ll = self.working(L, u, beta)
            self._point = key
        return self._ll

    # --- passes shared by the LMM and the GLMM
    def count(self) -> int:
        return self.n

    def grams(self, which: str) -> list[np.ndarray]:
        w = self._w(which)
        return [
            matfree.level_grams(self.codes[:, j], self.Z[:, self.zoff[j] : self.zoff[j + 1]], w, nl)
            for j, nl in enumerate(self.nlevels)
        ]

    def _padded(self, V, part: str) -> np.ndarray:
        """A (q, m) array holding V in the eliminated term's rows (``"e"``), the others' (``"R"``)
        or all of them (``"all"``): only the part a pass reads travels to the block."""
        if part == "all":
            return V
        qe = int(self.qoff[1])
        full = np.zeros((int(self.qoff[-1]), V.shape[1]))
        full[:qe] = V if part == "e" else 0.0
        if part == "R":
            full[qe:] = V
        return full

    def _part(self, out, part: str) -> np.ndarray:
        qe = int(self.qoff[1])
        return out if part == "all" else (out[:qe] if part == "e" else out[qe:])

    def crossprod(self, lam_in, lam_out, cin, cout, V, which, part_in: str = "all", part_out: str = "all"):
        out = matfree.crossprod_pass(
            self.codes, self.Z, self.zoff, self.qoff, self._w(which), lam_in, lam_out,
            np.asarray(cin, float), np.asarray(cout, float), self._padded(V, part_in),
        )  # fmt: skip
        return self._part(out, part_out)

    def schur_apply(self, L, Aee_inv, VR, which) -> np.ndarray:
        """The Schur pass on V's R part (q_R, m); returns the R part."""
        out = matfree.schur_apply(
            self.starts, self.codes, self.Z, self.zoff, self.qoff, self._w(which), L, Aee_inv,
            self._padded(VR, "R"), self.maxseg,
        )  # fmt: skip
        return out[int(self.qoff[1]) :]

    def schur_diagonal(self, L, Aee_inv, which: str) -> np.ndarray:
        return matfree.schur_diagonal(
            self.codes, self.Z, self.zoff, self.qoff, self._w(which), L, Aee_inv, self.pmax, max(self.nlevels)
        )

    # --- the LMM's data pass
    def ols_sums(self):
        """X'WX, X'W(y − offset), Σ log w over positive weights."""
        w, yy = self.prior, self.y - self.off
        pos = w[w > 0]
        return self.X.T @ (self.X * w[:, None]), self.X.T @ (w * yy), float(np.sum(np.log(pos)))

    def lmm_blocks(self, b0):
        """Z'W[X y'] (unscaled, q × (k+1)) and [X y']'W[X y'] for y' = y − offset − X b0."""
        yy = self.y - self.off - self.X @ b0
        Xy = np.column_stack([self.X, yy])
        ZtXy = matfree.scatter_rows(self.codes, self.Z, self.zoff, self.qoff, self.prior, Xy)
        return ZtXy, Xy.T @ (Xy * self.prior[:, None])

    def residual_sums(self, b0):
        """Σ w r², Σ w and per term the weighted count and residual sum of each level (r the OLS
        residual): the moment start's sums."""
        w = self.prior
        r = self.y - self.off - self.X @ b0
        per = []
        for j, nl in enumerate(self.nlevels):
            c = self.codes[:, j]
            per.append(np.stack([np.bincount(c, weights=w, minlength=nl), np.bincount(c, weights=w * r, minlength=nl)]))
        return float(np.sum(w * r**2)), float(np.sum(w)), per

    # --- the GLMM's passes (canonical binomial and Poisson)
    def set_family(self, family: Family, trials=None) -> None:
        resp = ResponseTerms(family, self.y, self.prior, None if trials is None else trials[self.perm])
        const, a, b = family.kernel_rows(resp)
        n = self.n
        self.glmm = (
            family.kernel_link,
            *(np.ascontiguousarray(np.broadcast_to(v, (n,)), dtype=float) for v in (const, a, b)),
        )
        self.W, self.z, self.eta = np.empty(n), np.empty(n), np.empty(n)

    def working(self, L, u, beta) -> float:
        """η = offset + Xβ + ZΛu, Σ log f(y | μ), and the working weights and response there (kept)."""
        link, const, a, b = self.glmm
        self._point = None
        self.eta = self.off + self.X @ beta
        if u is not None:
            self.eta += matfree.gather_rows(self.codes, self.Z, self.zoff, self.qoff, L, u[:, None])[:, 0]
        return float(
            rowkernels.canonical_working(link, self.eta, self.y, self.prior, self.off, const, a, b, self.W, self.z)
        )

    def pirls_rhs(self, L, u, beta) -> np.ndarray:
        """Z'W(z − Xβ) at (λ, u, β) (unscaled): PIRLS' right-hand side before Λ'."""
        self.at(L, u, beta)
        zz = self.z - self.X @ beta
        return matfree.scatter_rows(self.codes, self.Z, self.zoff, self.qoff, self.W, zz[:, None])

    def score(self, L, u, beta):
        """(Z'd, X'd) at (λ, u, β) with d = ∂ℓ/∂η = W(z − η + offset)."""
        self.at(L, u, beta)
        link = self.glmm[0]
        d = self.W * (self.z - self.eta + self.off)
        if link == rowkernels.LOGIT:
            self.Wp = self.W * (1.0 - 2.0 / (1.0 + np.exp(-self.eta)))
        else:
            self.Wp = self.W.copy()
        Zd = matfree.scatter_rows(self.codes, self.Z, self.zoff, self.qoff, np.ones(self.n), d[:, None])[:, 0]
        return Zd, self.X.T @ d

    def probe_leverage(self, L, u, beta, Aee_inv, Ks, Kz):
        self.score(L, u, beta)  # W' = dW/dη at the point
        return matfree.probe_leverage(self.codes, self.Z, self.zoff, self.qoff, L, Aee_inv, Ks, Kz, self.Wp, self.X)

    def x_gather(self, L, u, beta, V) -> np.ndarray:
        self.at(L, u, beta)
        return matfree.x_gather(self.codes, self.Z, self.zoff, self.qoff, L, V, self.W, self.X)

    def glm_sums(self, beta):
        """At η = offset + Xβ (no random effects): X'WX, X'Wz and per term each level's Σ W and
        Σ W(z − Xβ) (the GLMM's start)."""
        self.working(None, None, beta)
        self._point = None
        res = self.z - self.X @ beta
        per = []
        for j, nl in enumerate(self.nlevels):
            c = self.codes[:, j]
            per.append(
                np.stack(
                    [np.bincount(c, weights=self.W, minlength=nl), np.bincount(c, weights=self.W * res, minlength=nl)]
                )
            )
        XtW = self.X.T * self.W
        return XtW @ self.X, XtW @ self.z, per


def add(a, b):
    """Sum two blocks' answers (arrays, floats, or tuples and lists of those)."""
    if isinstance(a, (tuple, list)):
        return type(a)(add(x, y) for x, y in zip(a, b))
    return a + b


def _workers() -> int:
    """The workers of the current dask.distributed client (the machine's cores without one)."""
    try:
        from distributed import default_client

        return max(1, len(default_client().nthreads()))
    except (ImportError, ValueError):
        return os.cpu_count() or 1


def tree_sum(parts: list, combine):
    """The sum of delayed answers by a tree of pairwise ``combine`` on the workers, computed."""
    import dask

    while len(parts) > 1:
        parts = [
            dask.delayed(combine)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    (out,) = dask.compute(parts[0])
    return out


class CrossedRows(RowLayout):
    """The rows in memory: one :class:`RowPart`."""

    def __init__(self, terms, X, y, weights=None, offset=None):
        super().__init__(terms)
        n = X.shape[0]
        self.part = RowPart(
            self,
            [t.codes for t in terms],
            [t.Zcols for t in terms],
            X,
            np.zeros(n) if y is None else y,
            np.ones(n) if weights is None else weights,
            np.zeros(n) if offset is None else offset,
        )
        self.n, self.k = n, X.shape[1]
        self.codes, self.Z, self.starts, self.maxseg = self.part.codes, self.part.Z, self.part.starts, self.part.maxseg
        self.w, self.perm = self.part.prior, self.part.perm

    def call(self, name: str, *args):
        """``name`` run on the rows (the sum over blocks: here one block)."""
        return getattr(self.part, name)(*args)

    def set_family(self, family: Family, trials=None) -> None:
        self.part.set_family(family, trials)


class DaskCrossedRows(RowLayout):
    """The rows of a Dask DataFrame, one :class:`RowPart` per partition kept on the workers; the
    frame is shuffled first so that every level of the eliminated term is in one partition."""

    def __init__(self, source, terms, family: Family | None = None):
        import dask

        super().__init__(terms)
        group = list(self.terms[0].group)
        # two blocks per worker: each pass is one task per block, and its answer is level-sized
        # whatever the block's rows, so fewer, larger blocks cost less per pass
        nparts = min(source.ddf.npartitions, 2 * _workers())
        ddf = source.ddf.shuffle(on=group, npartitions=nparts)

        def make(part):  # the partition's rows coded with the global levels (the source's terms' order)
            y, X, w, off, rt, trials = source.rows(part)
            rp = RowPart(self, [t.codes for t in rt], [np.asarray(t.Zcols, float) for t in rt], X, y, w, off)
            if family is not None and not family.is_lmm:
                rp.set_family(family, trials)
            return rp

        self.k = len(source.keep)
        self.parts = dask.persist(*[dask.delayed(make)(p) for p in ddf.to_delayed()])
        self.n = int(self.call("count"))

    def call(self, name: str, *args):
        """``name`` run on every block on the workers, the answers summed by a tree of additions."""
        import dask

        def wrap(a):  # each array sent once to the graph, not once per block
            if isinstance(a, np.ndarray):
                return dask.delayed(a)
            return tuple(wrap(x) for x in a) if isinstance(a, tuple) else a

        args = [wrap(a) for a in args]
        return tree_sum([dask.delayed(getattr)(b, name)(*args) for b in self.parts], add)

    def set_family(self, family: Family, trials=None) -> None:  # done when the blocks were built
        return None
