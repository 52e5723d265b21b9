"""Orderings of the random effects that keep the Cholesky factor of Λ'Z'WZΛ + I sparse.

Which levels of two grouping factors share rows is fixed by the data, so the order of each
term's levels is chosen once, when the design is built; the factor's symbolic analysis
(:mod:`~midas_glmm.engine.sparsity`) then works in that order.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee

from . import lazy

__all__ = [
    "fill_reducing_levels",
    "group_pairs",
    "sorted_unique",
    "DENSE_TAIL_DENSITY",
    "MAX_ORDER_EDGES",
    "SMALL_Q_TERMS",
    "SMALL_Q_CROSSED",
]

kernels = lazy.load("kernels")  # compiled: loaded on first use

#: the factor's dense tail starts at the first term after which the factor is at least this dense
DENSE_TAIL_DENSITY = 0.2

#: at most this many random effects in a model of several terms: its factor is one dense block
#: (:func:`~midas_glmm.engine.sparsity.small_model`), so the order of the levels does not matter
#: and is not sought (nor compiled)
SMALL_Q_TERMS = 100

#: an LMM whose terms are crossed is factored as one dense block up to this many random effects
#: (above SMALL_Q_TERMS, where nested models and GLMMs lose): its sparse factor would have a dense
#: tail anyway, and the dense one costs no more per θ (alternated in one process, dense / sparse:
#: intercepts 150 1.01, 250 0.90; intercepts and slopes 150 0.68, 200 0.80) and compiles none of
#: the block kernels on a first fit (engine.lmm.LMMCriterion); nor is an order of its levels sought
SMALL_Q_CROSSED = 250

#: the ordering of a term's levels is skipped when the graph it orders would have more edges
#: (such a term is coupled densely: it goes to the dense tail, where order does not matter)
MAX_ORDER_EDGES = 20_000_000

#: up to this many pairs of levels within the earlier terms' components, their cliques are
#: formed by numpy (sorting the pairs) rather than by the compiled kernel: nested terms form
#: none, and a first fit then compiles nothing here; crossed terms form more, where the kernel is
#: faster (VerbAgg's 87,000: 5.5 ms against 3.8; 2 ms against 1.5 at 20,000)
NUMPY_CLIQUE_PAIRS = 20_000


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array, sorted (a sort; numpy's hash-based unique is slow
    on millions of mostly distinct keys)."""
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a


def group_pairs(counts: np.ndarray, diagonal: bool = False, ordered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(first, second): the pairs of entries within each group of consecutive entries of sizes
    ``counts``, as indices into the entries. By default every pair first < second once;
    ``diagonal`` adds first == second; ``ordered`` gives every ordered pair (diagonal included)."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    n = int(counts.sum())
    group = np.repeat(np.arange(len(counts)), counts)
    if ordered:
        reps = counts[group]  # each entry with every entry of its group
        first = np.repeat(np.arange(n), reps)
        within = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
        return first, starts[group[first]] + within
    reps = np.arange(n) - starts[group] + (1 if diagonal else 0)  # each entry with those before it
    second = np.repeat(np.arange(n), reps)
    within = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
    return starts[group[second]] + within, second


def _envelope(rows: np.ndarray, cols: np.ndarray, pos: np.ndarray) -> int:
    """Σ over nodes of (position − position of its first neighbour): the envelope that a
    Cholesky factor in that order fills at most."""
    a, b = pos[rows], pos[cols]
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    span = np.zeros(len(pos), np.int64)
    np.maximum.at(span, hi, hi - lo)
    return int(span.sum())


def fill_reducing_levels(
    codes: list[np.ndarray], nlevels: list[int], shortcuts: bool = True
) -> list[np.ndarray | None]:
    """A fill-reducing order of the levels of each random-effects term after the first (None:
    keep the order); ``codes[t]`` holds the level of each row in term t, of ``nlevels[t]``.

    Eliminating the earlier terms couples two levels of term t when a path joins them through
    levels of earlier terms only: each connected group of earlier levels makes its neighbours in
    term t a clique. On that graph, reverse Cuthill–McKee (scipy) gives an order whose factor
    stays inside a narrow envelope; it is used when its envelope is smaller than the given
    order's. Nested factors and crossed factors with unstructured coupling gain nothing (no fill,
    or a dense tail), and keep their order; crossed factors whose coupling has structure that the
    level labels hide (a band of items seen by overlapping windows of subjects, neighbouring
    areas) go from a dense to a banded factor. Level labels only move: the results report levels
    in their original order.

    Three exact shortcuts (``shortcuts=False``: none, for tests): a term in which every earlier
    term is nested has no clique to order; the first term's levels are each their own component;
    a term one of whose cliques alone passes the dense threshold is dense."""
    k = len(codes)
    orders: list[np.ndarray | None] = [None] * k
    if k < 2:
        return orders
    nl = np.array(nlevels, dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(nl)])
    N = int(base[-1])
    keys = {}  # (j, i), i < j: the pairs of levels that share rows, as code_j · n_i + code_i
    for j in range(1, k):
        for i in range(j):
            keys[j, i] = sorted_unique(codes[j].astype(np.int64) * nl[i] + codes[i])
    # an earlier term nested in term t (each of its levels meets one level of t) couples no two
    # levels of t; when all are, nor do their components (a row's levels share its level of t)
    nested = [
        all(np.bincount(keys[t, i] % nl[i], minlength=nl[i]).max(initial=0) <= 1 for i in range(t)) for t in range(k)
    ]
    C = None
    for t in range(1, k):
        if nested[t] and shortcuts:
            continue
        if t == 1 and shortcuts:  # the first term's levels share no rows: each its own component
            key = keys[1, 0]
            M = sp.csr_matrix((np.ones(len(key)), (key % nl[0], key // nl[0])), shape=(int(nl[0]), int(nl[1])))
        else:
            if C is None:
                r = np.concatenate([base[j] + key // nl[i] for (j, i), key in keys.items()])
                c = np.concatenate([base[i] + key % nl[i] for (j, i), key in keys.items()])
                C = sp.csr_matrix((np.ones(2 * len(r)), (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(N, N))
            E, T = slice(0, int(base[t])), slice(int(base[t]), int(base[t + 1]))
            ncomp, label = connected_components(C[E, E], directed=False)
            CET = C[E, T].tocoo()
            M = sp.csr_matrix((np.ones(CET.nnz), (label[CET.row], CET.col)), shape=(ncomp, nl[t]))
            M.sum_duplicates()
        M.sort_indices()
        pairs = nl[t] * (nl[t] - 1) / 2
        # stop counting once the term is dense enough for the dense tail, where order does not matter
        limit = int(min(DENSE_TAIL_DENSITY * pairs, MAX_ORDER_EDGES))
        sizes = np.diff(M.indptr)
        largest = int(sizes.max(initial=0))
        if largest * (largest - 1) // 2 > limit and shortcuts:  # the union holds at least its largest clique
            continue
        if int(np.sum(sizes * (sizes - 1) // 2)) <= NUMPY_CLIQUE_PAIRS:  # few: numpy (nested: none)
            first, second = group_pairs(sizes)
            key = sorted_unique(M.indices[second].astype(np.int64) * nl[t] + M.indices[first])
            br, bc, sparse_enough = key // nl[t], key % nl[t], len(key) <= limit
        else:
            Mt = M.T.tocsr()
            Mt.sort_indices()
            br, bc, sparse_enough = kernels.clique_union(
                M.indptr.astype(np.int64),
                M.indices.astype(np.int64),
                Mt.indptr.astype(np.int64),
                Mt.indices.astype(np.int64),
                int(nl[t]),
                limit,
            )
        if not sparse_enough or not len(br):
            continue  # dense (a dense tail), or no coupling within the term: nothing to order
        B = sp.csr_matrix(
            (np.ones(2 * len(br)), (np.concatenate([br, bc]), np.concatenate([bc, br]))), shape=(nl[t],) * 2
        )
        perm = np.asarray(reverse_cuthill_mckee(B.tocsr(), symmetric_mode=True), dtype=np.int64)
        newpos = np.empty(nl[t], np.int64)
        newpos[perm] = np.arange(nl[t])
        if _envelope(br, bc, newpos) < _envelope(br, bc, np.arange(nl[t])):
            orders[t] = perm
    return orders
