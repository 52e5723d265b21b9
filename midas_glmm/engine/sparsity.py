"""The symbolic analysis: the structure of the factor of Λ'Z'WZΛ + I, done once per model.

The random effects are grouped into *nodes*, one per level of each term (a node of size p
for a term with p columns), in lme4's term order. Which nodes are coupled is fixed by the data
(which levels share rows), not by θ or the weights, so the pattern of the Cholesky factor,
fill-in included, is computed once (:func:`kernels.symbolic`) and every θ only refills numbers.

The factor has two parts, chosen here from that pattern:

* a **block-sparse part** — the first terms' nodes, each column a list of small dense
  ``p_i × p_j`` blocks. A random intercept is a column with a 1 × 1 diagonal; nested factors
  couple each level with one level of the outer term and create no fill-in, so they stay here;
* a **dense tail** — the last terms, once the fill-in among them is dense (crossed factors):
  one full matrix factored by LAPACK.

A model whose terms are all random intercepts, coupled sparsely (nested factors, an
observation-level term), has its pattern found by numpy and its sparse part eliminated term by
term in numpy (:mod:`~midas_glmm.linalg.stages`, :attr:`FactorPlan.stages`): no kernel to compile.

:class:`FactorPlan` holds both layouts and the maps that put the cross-product blocks into them:
:meth:`FactorPlan.load` from a :class:`~midas_glmm.design.blocks.CrossProducts` (the LMM's one data
pass, Dask partitions), :class:`RowMap` straight from the rows (each PIRLS step of an in-memory
GLMM: one compiled pass, no sparse object built).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from ..design.blocks import CrossProducts
from ..design.reterms import ReTerm
from ..linalg import codes, lazy
from ..linalg.orderings import DENSE_TAIL_DENSITY, SMALL_Q_TERMS, sorted_unique
from ..linalg.stages import StageElimination, staged_pattern

__all__ = [
    "FactorPlan",
    "PlanBlocks",
    "RowMap",
    "DENSE_TAIL_DENSITY",
    "SMALL_Q",
    "SMALL_Q_TERMS",
    "small_model",
]

kernels = lazy.load("kernels")  # compiled: loaded on first use
rowkernels = lazy.load("rowkernels")  # compiled: loaded on first use

#: largest dense tail (bytes) the plan will allocate; beyond it the factor stays sparse
MAX_TAIL_BYTES = 4 * 2**30
#: FactorPlan._tail_after_first_term: the largest tail it checks (a boolean matrix of its node pairs), and
#: how many of the first term's nodes (largest first) it unites the cliques of before leaving the
#: plan to the symbolic analysis
CLIQUE_TAIL = 4000
CLIQUE_NODES = 256


#: entries of one dense panel of the sparse columns' tail rows (32 MB), and its fewest rows
PANEL_ENTRIES = 1 << 22
PANEL_MIN_ROWS = 64
#: at most this many random effects in a one-term model: the factor is one dense block (LAPACK
#: only, none of the compiled kernels to load or compile; as fast per θ as the level-by-level
#: factor up to about this size, slower above). An LMM's passes over the rows are then numpy's;
#: a GLMM's stay compiled. Several terms: :data:`~midas_glmm.linalg.orderings.SMALL_Q_TERMS`.
SMALL_Q = 40


#: a model of random intercepts only is factored term by term in numpy (no compiled kernel to
#: compile on a first fit: 9-20 s) while its eliminations form at most this many products a_jk −=
#: L_ji L_ki in all ...
STAGE_PAIRS = 200_000
#: ... at most this many per level eliminated by scattered sums (nested factors form 1-3, an
#: observation-level term beside crossed ones 4; crossed factors 20-1,600, where numpy's scattered
#: updates cost 1.5-4x the compiled kernels' per factor: VerbAgg's fit 1.55x; a last stage whose
#: block of tail rows is dense enough takes one BLAS product instead and is not counted:
#: :func:`~midas_glmm.linalg.stages.dense_last_stage`) ...
STAGE_LEVEL_PAIRS = 8
#: ... and the terms left to the dense tail have at most this many levels in all. LMMs and GLMMs
#: alike: a GLMM factors and solves hundreds of times a fit, and below about 1,000 random effects
#: numpy's cost per call makes its fit 4-5% slower than the compiled kernels' (grouseticks' 584,
#: pupils in 300 classes and schools; 1,800 0.89-0.98x, 12,000 0.75-0.87x), for a first fit that
#: compiles none of them (grouseticks 17.4 → 4.6 s with the import) and a new process that loads
#: none (24 cache files)
STAGE_TAIL = 200
#: ... or this many where the last stage's block of tail rows is dense (its update of the tail one
#: BLAS product; the compiled plan's tail would be as dense): crossed factors of 250-800 levels
#: after the first, 0.46-0.79x the compiled kernels' fit (RESULTS_AB_DENSESTAGE.md)
STAGE_TAIL_DENSE = 2000


def small_model(terms: list[ReTerm]) -> bool:
    """Whether the random effects are few enough for one dense factor: q ≤ :data:`SMALL_Q` for
    one term, q ≤ :data:`SMALL_Q_TERMS` for several. A sparse factor of several terms needs the
    general block kernels (8–10 s to compile on a first fit); up to about 100 random effects,
    crossed or nested, one LAPACK Cholesky of the dense block (with Λ applied level by level)
    costs no more per θ, and above it costs more (crossed Bernoulli of 200: 1.1x, nested of 117:
    1.4x)."""
    q = sum(t.q for t in terms)
    return q <= (SMALL_Q if len(terms) == 1 else SMALL_Q_TERMS)


@dataclass
class PlanBlocks:
    """Cross-product blocks laid out for the factor: ``A`` (sparse part, then tail blocks) for
    Z'WZ, ``XZ`` = Z'W[X y] (q × m, rows in node order) and ``XX`` = [X y]'W[X y]."""

    A: np.ndarray
    XZ: np.ndarray
    XX: np.ndarray
    n: int


def _lookup(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Positions of ``query`` in the sorted ``keys`` (every query is there by construction);
    the queries are searched in sorted order, which keeps the binary searches in cache."""
    order = np.argsort(query, kind="stable")
    pos = np.empty(len(query), np.int64)
    pos[order] = np.searchsorted(keys, query[order])
    if len(query) and (pos.max() >= len(keys) or np.any(keys[pos] != query)):
        raise np.linalg.LinAlgError("a coupling outside the analysed pattern")
    return pos


def stored_entries(M) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, value) of a sparse matrix's stored entries in its order, as ``M.tocoo()``
    gives them; a CSR matrix's read off its own arrays (tocoo's checks cost ~0.1 ms a call, two
    per pair of terms of a model's build)."""
    if getattr(M, "format", None) == "csr":
        return np.repeat(np.arange(M.shape[0], dtype=np.int64), np.diff(M.indptr)), M.indices, M.data
    C = M.tocoo()
    return C.row, C.col, C.data


class FactorPlan:
    """Node structure, fill pattern and the sparse/dense split of the random-effects factor.

    Parameters
    ----------
    terms : list of ReTerm
        The model's terms, in lme4's order.
    cp : CrossProducts
        Blocks of any weighted data pass over the model's rows (only their pattern is read).
    dense : bool
        Put every random effect in the dense tail (``Ns = 0``): for small q, see :data:`SMALL_Q`.
    closed_pairs : bool
        A one-term plan of two columns per level factors and solves its 2 × 2 blocks in closed
        form by numpy rather than by the level kernels: for an LMM, which factors a handful of
        times after its search on the :class:`~midas_glmm.engine.factor.LevelSystem` and so
        compiles nothing; a GLMM factors and solves hundreds of times, where the kernels are
        faster below some hundreds of levels and for solves of several columns.
    """

    def __init__(self, terms: list[ReTerm], cp: CrossProducts, dense: bool = False, closed_pairs: bool = False):
        self.terms = terms
        self.k = len(terms)
        lev = np.array([t.nlevels for t in terms], dtype=np.int64)
        self.p_term = np.array([t.p for t in terms], dtype=np.int64)
        self.node_base = np.concatenate([[0], np.cumsum(lev)]).astype(np.int64)  # first node of each term
        self.N = int(self.node_base[-1])
        self.nterm = np.repeat(np.arange(self.k), lev).astype(np.int64)
        self.nsize = self.p_term[self.nterm]
        self.nodeoff = np.concatenate([[0], np.cumsum(self.nsize)]).astype(np.int64)
        self.q = int(self.nodeoff[-1])
        self.term_off = self.nodeoff[self.node_base]  # first random effect of each term
        rows, cols = self._coupled_nodes(cp)
        #: the term-by-term elimination in numpy (:mod:`~midas_glmm.linalg.stages`), or None
        self.stages = None
        if dense:  # no sparse part: no symbolic analysis
            self.split = 0
            self._layout(np.zeros(1, np.int64), np.zeros(0, np.int64), rows, cols)
        elif self.k == 1:  # one term: its levels share no rows, the factor is block diagonal
            self.split = 1
            self._layout(np.arange(self.N + 1, dtype=np.int64), np.arange(self.N, dtype=np.int64), rows, cols)
        elif not self._staged(rows, cols) and not self._tail_after_first_term(rows, cols):
            order = np.lexsort((rows, cols))
            adjptr = np.searchsorted(cols[order], np.arange(self.N + 1)).astype(np.int64)
            colptr, rowidx = kernels.symbolic(adjptr, rows[order].astype(np.int64), self.N)
            self.split = self._choose_split(colptr)
            self._layout(colptr, rowidx, rows, cols)
        #: two columns per level in closed form by numpy (``closed_pairs``), else the kernels
        self.closed_pairs = closed_pairs and self.blockdiag and self.p_term[0] == 2
        self._lam_entries = None
        #: (A, its blocks as a dense q × q array) of the all-dense factor's last data blocks
        self.dense_data = None
        #: (lams, Λ as a dense q × q array) of the all-dense factor's last θ, and (A, G = Z'WZ in
        #: full) of its last data blocks
        self.dense_lam = self.dense_G = None

    # ------------------------------------------------------------ structure
    def _coupled_nodes(self, cp: CrossProducts) -> tuple[np.ndarray, np.ndarray]:
        """(row node, column node) pairs, row > column, where the data couple two levels."""
        rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for (j, i), A in cp.ZjtZi.items():
            row, col, _ = stored_entries(A)
            rows.append(self.node_base[j] + row // self.p_term[j])
            cols.append(self.node_base[i] + col // self.p_term[i])
        r, c = np.concatenate(rows), np.concatenate(cols)
        key = sorted_unique(c * self.N + r)
        return key % self.N, key // self.N

    def _staged(self, rows: np.ndarray, cols: np.ndarray) -> bool:
        """Lay the plan out for the term-by-term elimination in numpy, if every term is a random
        intercept, the stages' products number at most :data:`STAGE_PAIRS` and, by scattered
        sums, :data:`STAGE_LEVEL_PAIRS` per level, and the terms after them at most
        :data:`STAGE_TAIL` levels (:data:`STAGE_TAIL_DENSE` after a dense last stage); False
        (nothing set) otherwise."""
        if not np.all(self.p_term == 1):
            return False
        found = staged_pattern(rows, cols, self.node_base, STAGE_PAIRS, STAGE_LEVEL_PAIRS)
        if found is None or self.q - int(self.node_base[found[0]]) > (STAGE_TAIL_DENSE if found[3] else STAGE_TAIL):
            return False
        self.split, colptr, rowidx, dense = found
        self._layout(colptr, rowidx, rows, cols)  # its panels (on first use) serve fit_many's kernels
        self.stages = StageElimination(self, dense)
        return True

    def _tail_after_first_term(self, rows: np.ndarray, cols: np.ndarray) -> bool:
        """Lay out a plan whose terms after the first form the dense tail without the symbolic
        analysis (its kernel compiles ~2 s on a first fit), where that is quickly seen to hold:
        the later terms' nodes fit :data:`MAX_TAIL_BYTES` as a tail, and at least
        :data:`DENSE_TAIL_DENSITY` of their pairs are coupled already in the data's pattern —
        directly, or by sharing a node of the first term (each such node's later neighbours are
        a clique; :data:`CLIQUE_NODES` of the largest cliques tried). Then
        :meth:`_choose_split` takes them as the tail whatever the further fill, and the sparse
        part, the first term, has no fill (its nodes couple to none of each other: a column's
        pattern is the node and its coupled later nodes). Crossed terms with slopes,
        ``(x|subject) + (1|item)``, or InstEval's students × lecturers × departments; False
        (nothing set) otherwise."""
        if self.k < 2:
            return False
        N0 = int(self.node_base[1])
        Nt = self.N - N0
        qt = self.q - int(self.term_off[1])
        if Nt < 2 or Nt > CLIQUE_TAIL or 8 * qt * qt > MAX_TAIL_BYTES:
            return False
        first = cols < N0  # pairs (later node, first-term node), by column then row; the others within the tail
        need = DENSE_TAIL_DENSITY * Nt * (Nt - 1) / 2
        degree = np.bincount(cols[first], minlength=N0)
        tried = np.argsort(-degree, kind="stable")[:CLIQUE_NODES]
        if (degree[tried] * (degree[tried] - 1) // 2).sum() + (~first).sum() < need:  # not even if no pair came twice
            return False
        coupled = np.zeros((Nt, Nt), dtype=bool)
        coupled[rows[~first] - N0, cols[~first] - N0] = True
        found = int(np.count_nonzero(coupled))
        start = np.concatenate([[0], np.cumsum(degree)])
        later = rows[first] - N0
        for j in tried:
            if found >= need or degree[j] < 2:
                break
            nb = later[start[j] : start[j + 1]]  # sorted: its pairs (a > b) are the lower triangle
            block = coupled[np.ix_(nb, nb)]
            lower = np.tril(~block, -1)
            found += int(np.count_nonzero(lower))
            coupled[np.ix_(nb, nb)] = block | lower
        if found < need:
            return False
        colptr = np.concatenate([[0], np.cumsum(degree + 1)]).astype(np.int64)
        rowidx = np.empty(int(colptr[-1]), dtype=np.int64)
        rowidx[colptr[:-1]] = np.arange(N0)  # each column's pivot first
        below = np.ones(len(rowidx), dtype=bool)
        below[colptr[:-1]] = False
        rowidx[below] = rows[first]
        self.split = 1
        self._layout(colptr, rowidx, rows, cols)
        return True

    def _choose_split(self, colptr: np.ndarray) -> int:
        """First term of the dense tail (``k``: none): the first term t ≥ 1 after which at least
        :data:`DENSE_TAIL_DENSITY` of the pairs of remaining nodes are coupled in the factor, if
        the tail fits in memory. Nested factors couple no two nodes of a later term: no tail."""
        off_diagonal = np.diff(colptr) - 1
        for t in range(1, self.k):
            a = self.node_base[t]
            nodes = self.N - a
            pairs = nodes * (nodes - 1) / 2
            density = off_diagonal[a:].sum() / pairs if pairs else 0.0
            qt = self.q - self.term_off[t]
            if density >= DENSE_TAIL_DENSITY and 8 * qt * qt <= MAX_TAIL_BYTES:
                return t
        return self.k

    def _layout(self, colptr, rowidx, rows, cols) -> None:
        """Block offsets of the sparse part, and the data blocks of the tail."""
        self.Ns = int(self.node_base[self.split])  # nodes of the sparse part
        self.qs = int(self.nodeoff[self.Ns])  # random effects in the sparse part
        self.qt = self.q - self.qs
        self.colptr = colptr[: self.Ns + 1].copy()
        self.rowidx = rowidx[: self.colptr[-1]].copy()
        col_of = np.repeat(np.arange(self.Ns), np.diff(self.colptr))
        sizes = self.nsize[self.rowidx] * self.nsize[col_of]
        self.blkoff = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.keys = col_of * self.N + self.rowidx  # increasing: columns in order, rows sorted
        self.nsparse = int(self.blkoff[-1])
        d = self.blkoff[self.colptr[:-1]]
        ps = self.nsize[: self.Ns]
        self.diagpos = np.repeat(d, ps) + (np.arange(ps.sum()) - np.repeat(np.cumsum(ps) - ps, ps)) * (
            np.repeat(ps, ps) + 1
        )
        self.tailoff = np.where(np.arange(self.N) >= self.Ns, self.nodeoff[:-1] - self.qs, -1).astype(np.int64)
        # the tail's data blocks: its diagonal blocks and the coupled pairs within it
        tail = cols >= self.Ns
        tnodes = np.arange(self.Ns, self.N)
        tkeys = sorted_unique(np.concatenate([tnodes * self.N + tnodes, cols[tail] * self.N + rows[tail]]))
        self.tkeys = tkeys
        self.brow = (tkeys % self.N).astype(np.int64)
        self.bcol = (tkeys // self.N).astype(np.int64)
        bsizes = self.nsize[self.brow] * self.nsize[self.bcol]
        self.boff = np.concatenate([[0], np.cumsum(bsizes)]).astype(np.int64)
        self.nA = self.nsparse + int(self.boff[-1])
        #: one scalar term (a random intercept), no tail: the factor is diagonal, and it, its
        #: solves and its inverse are numpy's (no compiled kernel)
        one_term = self.k == 1 and self.Ns == self.N and len(self.rowidx) == self.N
        self.diagonal = one_term and self.p_term[0] == 1
        #: one vector term: the factor is a p × p block per level, by the small ``level_*``
        #: kernels (a fraction of the general kernels' compilation on a first fit), or in closed
        #: form by numpy for two columns in an LMM's plan (``closed_pairs``)
        self.blockdiag = one_term and self.p_term[0] > 1

    @cached_property
    def panels(self) -> list[tuple[int, np.ndarray, np.ndarray]] | None:
        """:meth:`_panel_plan`, made on first use: the compiled factor and fit_many's batch
        kernels read it; the staged, one-term and all-dense plans' factors do not (0.4 ms of a
        crossed staged LMM's 13)."""
        return self._panel_plan()

    def _panel_plan(self) -> list[tuple[int, np.ndarray, np.ndarray]] | None:
        """When the sparse columns fill their tail rows densely (crossed factors: most levels of
        the first meet most levels of the tail's), their update of the tail, T −= Σ l l' over
        the sparse part's columns (one per random effect), is one BLAS rank-k update per panel
        of columns rather than scattered updates: a list of (rows in the panel, place in the
        panel, place in L). A panel's row is one random effect of the sparse part, its columns
        the tail's random effects, for nodes of any size. None when the scattered updates cost
        less (sparse coupling)."""
        if not self.qt or self.Ns == 0:
            return None
        col_of = np.repeat(np.arange(self.Ns), np.diff(self.colptr))
        tail = self.rowidx >= self.Ns
        tail[self.colptr[:-1]] = False  # the diagonal
        e = np.flatnonzero(tail)
        pj, pi = self.nsize[col_of[e]], self.nsize[self.rowidx[e]]
        size = pi * pj
        blk = np.repeat(np.arange(len(e)), size)  # each entry (r, c) of each p_i × p_j tail block
        within = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
        src = self.blkoff[e][blk] + within  # blocks are row-major
        prow = self.nodeoff[col_of[e]][blk] + within % pj[blk]  # the sparse random effect
        pcol = self.tailoff[self.rowidx[e]][blk] + within // pj[blk]  # the tail's random effect
        counts = np.bincount(prow, minlength=self.qs).astype(float)
        # scattered: ~1.5 ns per pair of scalar entries (indirect writes), ~4x that per entry pair
        # through the block updates of larger nodes; dense: ~0.1 ns per flop of the rank-k update
        per_pair = 1.5 if np.all(self.nsize == 1) else 6.0
        if per_pair * float(np.sum(counts * (counts + 1) / 2)) < 0.15 * self.qs * self.qt * self.qt:
            return None
        rows = max(PANEL_MIN_ROWS, min(self.qs, PANEL_ENTRIES // self.qt))
        panels = []
        for j0 in range(0, self.qs, rows):
            sel = (prow >= j0) & (prow < j0 + rows)
            n = min(rows, self.qs - j0)
            panels.append((n, ((prow[sel] - j0) * self.qt + pcol[sel]).astype(np.int64), src[sel].astype(np.int64)))
        return panels

    def describe(self) -> str:
        """One line: nodes, the split and the stored sizes."""
        return (
            f"{self.N} nodes ({self.q} random effects): block-sparse part {self.Ns} nodes, "
            f"{len(self.rowidx)} blocks; dense tail {self.qt} x {self.qt}"
        )

    # ------------------------------------------------------------ positions
    def positions(self, row_node: np.ndarray, col_node: np.ndarray) -> np.ndarray:
        """Start of block (row node, column node), row ≥ column, in the layout of ``A``."""
        row_node = np.asarray(row_node, np.int64)
        col_node = np.asarray(col_node, np.int64)
        out = np.empty(len(row_node), np.int64)
        sparse = col_node < self.Ns
        out[sparse] = self.blkoff[_lookup(self.keys, col_node[sparse] * self.N + row_node[sparse])]
        key = col_node[~sparse] * self.N + row_node[~sparse]
        out[~sparse] = self.nsparse + self.boff[_lookup(self.tkeys, key)]
        return out

    def diagonal_positions(self, node: np.ndarray) -> np.ndarray:
        """:meth:`positions` of each node's own block: in the sparse part its column's first
        entry, read off ``colptr`` (no search of the keys: a row's own term, per row)."""
        node = np.asarray(node, np.int64)
        out = np.empty(len(node), np.int64)
        sparse = node < self.Ns
        out[sparse] = self.blkoff[self.colptr[node[sparse]]]
        out[~sparse] = self.positions(node[~sparse], node[~sparse])
        return out

    def lam_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every entry of the block-diagonal Λ (q × q), term by term, level by
        level, each λ_t row-major."""
        if self._lam_entries is None:
            r, c = [], []
            for t in range(self.k):
                p = int(self.p_term[t])
                starts = self.nodeoff[self.node_base[t] : self.node_base[t + 1]]
                r.append((starts[:, None] + np.repeat(np.arange(p), p)).ravel())
                c.append((starts[:, None] + np.tile(np.arange(p), p)).ravel())
            self._lam_entries = (np.concatenate(r), np.concatenate(c))
        return self._lam_entries

    def tail_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) in the dense tail of every entry of the tail's data blocks, in their
        stored order (block by block, each row-major)."""
        if getattr(self, "_tail_entries", None) is None:
            pi, pj = self.nsize[self.brow], self.nsize[self.bcol]
            sizes = pi * pj
            blk = np.repeat(np.arange(len(self.brow)), sizes)
            within = np.arange(int(sizes.sum())) - np.repeat(self.boff[:-1], sizes)
            rows = self.tailoff[self.brow][blk] + within // pj[blk]
            cols = self.tailoff[self.bcol][blk] + within % pj[blk]
            self._tail_entries = (rows, cols)
        return self._tail_entries

    def tail_data(self, A: np.ndarray) -> np.ndarray:
        """The tail's data blocks of ``A`` (this plan's layout) as a dense q_t × q_t array: each
        stored entry where :meth:`tail_entries` puts it (the lower blocks, each diagonal block
        whole), zeros elsewhere."""
        T0 = np.zeros((self.qt, self.qt))
        if self.qt:
            r, c = self.tail_entries()
            T0[r, c] = A[self.nsparse :]
        return T0

    def load(self, cp: CrossProducts) -> PlanBlocks:
        """Put the cross-product blocks into the factor's layout (O(non-zeros))."""
        A = np.zeros(self.nA)
        for t, blocks in enumerate(cp.ZtZ):
            p = self.p_term[t]
            nodes = self.node_base[t] + np.arange(len(blocks))
            start = self.diagonal_positions(nodes)
            A[start[:, None] + np.arange(p * p)] = blocks.reshape(len(blocks), p * p)
        for (j, i), M in cp.ZjtZi.items():
            row, col, data = stored_entries(M)
            pj, pi = self.p_term[j], self.p_term[i]
            start = self.positions(self.node_base[j] + row // pj, self.node_base[i] + col // pi)
            A[start + (row % pj) * pi + col % pi] = data
        XZ = np.concatenate([xz.T for xz in cp.XytZ], axis=0)
        return PlanBlocks(A, np.ascontiguousarray(XZ), cp.XytXy, cp.n)


class RowMap:
    """Where each row's contributions to Z'WZ and Z'W[X y] go, for repeated weighted passes.

    Built once per model from the rows: ``dest[i, k]``, the place in ``A`` of row i's k-th
    product of random-effects columns ``z_za[k] z_zb[k]``, and ``zidx[i, c]``, the random effect
    that row i's column c multiplies. Each pass is then one compiled loop over the rows
    (:func:`rowkernels.working_system`): no sparse structure is built per pass."""

    def __init__(self, plan: FactorPlan, terms: list[ReTerm]):
        self.plan = plan
        n = len(terms[0].codes)
        self.Zall = np.ascontiguousarray(np.concatenate([t.Zcols for t in terms], axis=1), dtype=float)
        col_base = np.concatenate([[0], np.cumsum([t.p for t in terms])]).astype(int)
        dests, za, zb, mult = [], [], [], []
        for j, tj in enumerate(terms):
            node_j = plan.node_base[j] + tj.codes
            for i in range(j + 1):
                ti = terms[i]
                if i == j:
                    start = plan.diagonal_positions(node_j)
                else:
                    start = plan.positions(node_j, plan.node_base[i] + ti.codes)
                for a in range(tj.p):
                    for b in range(ti.p):
                        dests.append(start + a * ti.p + b)
                        za.append(col_base[j] + a)
                        zb.append(col_base[i] + b)
                        mult.append(1.0 if i == j else 2.0)  # a pair of terms stands for both orders
        self.mult = np.array(mult)
        self.col_base = col_base
        self.term_of_col = np.repeat(np.arange(len(terms)), [t.p for t in terms])
        self.dest = np.ascontiguousarray(np.stack(dests, axis=1))
        self.za, self.zb = np.array(za, dtype=np.int64), np.array(zb, dtype=np.int64)
        self.ncol = int(col_base[-1])
        # pair[a, b]: the product k of columns (a, b), −1 for none (the compiled pass skips zeros by it)
        self.pair = np.full((self.ncol, self.ncol), -1, np.int64)
        self.pair[self.za, self.zb] = np.arange(len(self.za))
        self.zidx = np.ascontiguousarray(
            np.stack([plan.term_off[j] + t.codes * t.p + a for j, t in enumerate(terms) for a in range(t.p)], axis=1),
            dtype=np.int64,
        ).reshape(n, -1)
        # the passes in numpy (bincounts, one per product of columns and one per column of
        # [X_s c] and of Z) rather than compiled: set for models of not many rows
        # (glmmrows.NUMPY_ROWS), whose first fit then compiles no row pass
        self.numpy_rows = False
        self.unit_z = bool(np.all(self.Zall == 1.0))  # every column a random intercept's
        # the compiled pass's layout: every product of every row (at most four, or rows whose
        # columns are mostly nonzero: slopes of a covariate) or only those of a row's nonzero
        # columns (indicators of a factor's levels), by the work each would do
        npair = len(self.za)
        nonzero = np.count_nonzero(self.Zall, axis=1) if npair > 4 else None
        self.every_pair = npair <= 4 or bool(np.mean(nonzero.astype(float) ** 2) >= npair / 2)
        self._xs = None  # the last (X, shift and rscale's bytes, X_s') of the numpy passes
        self._cols = None  # contiguous columns of dest, zidx, Z and the products z_za z_zb (numpy passes)
        self._sparse_maps = None  # (S_A, Z') of the numpy passes' working system (_sparse)

    def _columns(self):
        """(dest's columns, zidx's columns, Z's columns or None, the products z_za z_zb per pair
        or None), each contiguous: what the numpy passes index by (None: every column is 1)."""
        if self._cols is None:
            dest = [np.ascontiguousarray(self.dest[:, k]) for k in range(self.dest.shape[1])]
            zidx = [np.ascontiguousarray(self.zidx[:, c]) for c in range(self.zidx.shape[1])]
            if self.unit_z:
                self._cols = (dest, zidx, None, None)
            else:
                Z = [np.ascontiguousarray(self.Zall[:, c]) for c in range(self.Zall.shape[1])]
                prods = [Z[a] * Z[b] for a, b in zip(self.za, self.zb)]
                self._cols = (dest, zidx, Z, prods)
        return self._cols

    def zt_product(self, V: np.ndarray) -> np.ndarray:
        """Z'V for V with one row per data row (n × m): q × m."""
        if self.numpy_rows and self.ncol > 1:
            return self._sparse()[1] @ np.ascontiguousarray(V, dtype=float)
        if self.numpy_rows:  # one column of Z: a bincount per column of V
            return np.column_stack([self._zt_one_column(V[:, h]) for h in range(V.shape[1])])
        out = np.zeros((self.plan.q, V.shape[1]))
        rowkernels.zt_product(self.Zall, self.zidx, np.ascontiguousarray(V, dtype=float), out)
        return out

    def leverages(self, lams, S_data: np.ndarray) -> np.ndarray:
        """h_i = ζ_i'Sζ_i per row, ζ_i = Λ'z_i the row's random-effects columns scaled by each
        term's λ (``lams``) and S at the data blocks' positions (``dest``)."""
        cb = self.col_base
        if self.numpy_rows and self.unit_z and self.ncol == len(lams):
            # scalar random intercepts: ζ_i is λ per term, the same in every row
            lam = np.array([float(lam[0, 0]) for lam in lams])
            return S_data[self.dest] @ (self.mult * lam[self.term_of_col[self.za]] * lam[self.term_of_col[self.zb]])
        zeta = np.empty_like(self.Zall)
        for t, lam in enumerate(lams):
            zeta[:, cb[t] : cb[t + 1]] = self.Zall[:, cb[t] : cb[t + 1]] @ lam
        if self.numpy_rows:
            g = S_data[self.dest]  # n × products: every product's S entry per row, at once
            g *= self.mult
            g *= zeta[:, self.za]
            g *= zeta[:, self.zb]
            return g.sum(axis=1)
        h = np.empty(zeta.shape[0])
        rowkernels.leverages(zeta, self.dest, self.za, self.zb, self.mult, S_data, h)
        return h

    def blocks(
        self, w: np.ndarray, X: np.ndarray, c: np.ndarray, shift=None, scale=None, checked: bool = False
    ) -> PlanBlocks:
        """The blocks of ``[Z X_s c]' diag(w) [Z X_s c]`` in the plan's layout, X_s = (X −
        shift)/scale (X may have no columns), in one compiled pass over the rows (or numpy's,
        :attr:`numpy_rows`). ``checked``: w and c are known to be finite (else a
        FloatingPointError where one is not)."""
        X = np.require(X, dtype=float, requirements=["C"])
        w, c = np.ascontiguousarray(w, dtype=float), np.ascontiguousarray(c, dtype=float)
        p = X.shape[1]
        shift = np.zeros(p) if shift is None else np.asarray(shift, dtype=float)
        rscale = np.ones(p) if scale is None else 1.0 / np.asarray(scale, dtype=float)
        if self.numpy_rows:
            return self._numpy_blocks(w, X, c, shift, rscale, checked)
        A, XZ, XX = np.zeros(self.plan.nA), np.zeros((self.plan.q, p + 1)), np.zeros((p + 1, p + 1))
        done = rowkernels.working_system(
            codes.GIVEN, c, w, c, c, c, c, c, c, c, c, X, shift, rscale, True,
            self.Zall, self.dest, self.za, self.zb, self.zidx, self.pair, A, XZ, XX,
            *rowkernels.working_buffers(p + 1, self.ncol), every_pair=self.every_pair,
        )  # fmt: skip
        if not np.isfinite(done):  # the pass stops at the first row with a non-finite weight or value
            raise FloatingPointError("a working weight or response is not finite")
        return PlanBlocks(A, XZ, XX, len(c))

    def _numpy_blocks(self, w, X, c, shift, rscale, checked: bool) -> PlanBlocks:
        """:meth:`blocks` by numpy (:attr:`numpy_rows`): with several columns of Z, Z'WZ = S_A w
        and Z'W[X_s c] = Z'(W[X_s c]) as two sparse products (:meth:`_sparse`; a bincount per
        product of columns and per column of each cost 1.3-2x at 400-2,000 rows: 66 against 33 µs
        for grouseticks' three terms), with one a bincount each (cheaper there); [X_s c]'W[X_s c]
        as one product (X_s' formed once per X and scaling). Each entry sums its rows in their
        order either way."""
        if not checked and not (np.all(np.isfinite(w)) and np.all(np.isfinite(c))):
            raise FloatingPointError("a working weight or response is not finite")
        p = X.shape[1]
        cols = np.empty((p + 1, len(c)))  # [X_s c]', one row per column
        cols[:p] = self._scaled_columns(X, shift, rscale)
        cols[p] = c
        wcols = cols * w
        if self.ncol > 1:  # several columns of Z: two sparse products
            SA, Zt = self._sparse()
            return PlanBlocks(SA @ w, Zt @ wcols.T, wcols @ cols.T, len(c))
        dest, _, _, prods = self._columns()  # one column: a bincount each (a sparse product costs more)
        A = np.bincount(dest[0], weights=w if prods is None else w * prods[0], minlength=self.plan.nA)
        XZ = np.column_stack([self._zt_one_column(wcols[h]) for h in range(p + 1)])
        return PlanBlocks(A, XZ, wcols @ cols.T, len(c))

    def _zt_one_column(self, v: np.ndarray) -> np.ndarray:
        """Z'v for one row-sized v when Z has one column (numpy passes): one bincount."""
        _, zidx, Z, _ = self._columns()
        return np.bincount(zidx[0], weights=v if Z is None else Z[0] * v, minlength=self.plan.q)

    def _sparse(self):
        """(S_A, Z') as sparse matrices, column i holding data row i's entries: S_A (entries of A ×
        rows) its products z_za z_zb at their places ``dest`` (A = S_A w), Z' (q × rows) its
        columns at ``zidx``. In compressed columns they are the map's own arrays (no sort; a
        compressed-row build cost 200-400 µs a model), and a product sums each entry's rows in
        their order, as the bincounts do."""
        if self._sparse_maps is None:
            n, k = self.dest.shape
            SA = sp.csc_matrix(
                (
                    (self.Zall[:, self.za] * self.Zall[:, self.zb]).ravel(),
                    self.dest.ravel(),
                    np.arange(0, n * k + 1, k),
                ),
                shape=(self.plan.nA, n),
            )
            Zt = sp.csc_matrix((self.Zall.ravel(), self.zidx.ravel(), np.arange(0, n * self.ncol + 1, self.ncol)),
                               shape=(self.plan.q, n))  # fmt: skip
            self._sparse_maps = (SA, Zt)
        return self._sparse_maps

    def _scaled_columns(self, X, shift, rscale) -> np.ndarray:
        """X_s' = ((X − shift)·rscale)', kept for the next pass with the same X and scaling."""
        if X.shape[1] == 0:
            return np.empty((0, X.shape[0]))
        kept = self._xs
        key = shift.tobytes() + rscale.tobytes()  # a few bytes: cheaper to compare than two arrays
        if kept is not None and kept[0] is X and kept[1] == key:
            return kept[2]
        Xs = np.ascontiguousarray(((X - shift) * rscale).T)
        self._xs = (X, key, Xs)
        return Xs

    def eta(self, base: np.ndarray, b_flat: np.ndarray) -> np.ndarray:
        """η = base + ZΛu for the flat vector b = Λu of all random effects (node order)."""
        if self.numpy_rows:
            _, zidx, Z, _ = self._columns()
            out = np.array(base, dtype=float)
            for c in range(len(zidx)):
                out += b_flat[zidx[c]] if Z is None else Z[c] * b_flat[zidx[c]]
            return out
        out = np.empty(len(base))
        rowkernels.linear_predictor(np.ascontiguousarray(base, dtype=float), self.Zall, self.zidx, b_flat, out)
        return out
