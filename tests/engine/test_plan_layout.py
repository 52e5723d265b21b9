"""The factor plan's layout where the terms after the first are the dense tail, laid out without
the symbolic analysis (FactorPlan._tail_after_first_term), against the symbolic analysis itself: the same
layout on designs of any coupling, and the kernel not called where the shortcut applies."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from midas_glmm import MixedModel
from midas_glmm.engine import sparsity
from midas_glmm.engine.lmm import lmm_criterion

LAYOUT = ("colptr", "rowidx", "blkoff", "tailoff", "brow", "bcol", "boff", "diagpos", "keys")


def _crossed(rng, n, n_s, n_i, share, formula):
    """Rows of subjects s and items i, subject k meeting a window of a ``share`` of the items
    from item k n_i / n_s on (a band: a small share couples the terms sparsely either way);
    every subject and every item in a row of the band."""
    width = max(1, int(round(share * n_i)))
    s = np.concatenate([np.arange(n_s), np.arange(n_i) * n_s // n_i, rng.integers(0, n_s, n)])
    i = (s * n_i // n_s + rng.integers(0, width, len(s))) % n_i
    i[n_s : n_s + n_i] = np.arange(n_i)
    n = len(s)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n_s)[s] + rng.normal(size=n_i)[i] + 0.5 * x * rng.normal(size=n_s)[s] + rng.normal(size=n)
    df = pd.DataFrame({"s": s.astype(str), "i": i.astype(str), "g": (i % 3).astype(str), "x": x, "y": y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedModel.from_formula(formula, df)


def _plans(model, monkeypatch):
    """(the plan as built, the plan by the symbolic analysis)."""
    crit, _ = lmm_criterion(model.design, True, dense=False)
    with monkeypatch.context() as m:
        m.setattr(sparsity.FactorPlan, "_tail_after_first_term", lambda self, rows, cols: False)
        symbolic, _ = lmm_criterion(model.design, True, dense=False)
    return crit, symbolic


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    n_s=st.integers(3, 60),
    n_i=st.integers(2, 60),
    share=st.sampled_from([0.02, 0.05, 0.1, 0.2, 0.4, 1.0]),
    formula=st.sampled_from(
        ["y ~ x + (x|s) + (1|i)", "y ~ x + (1|s) + (x|i)", "y ~ x + (x|s) + (x|i)", "y ~ x + (x|s) + (1|i) + (1|g)"]
    ),
    seed=st.integers(0, 2**31 - 1),
)
def test_tail_after_first_term_layout_equals_the_symbolic_analysis(n_s, n_i, share, formula, seed):
    """Any coupling of the two terms: where the shortcut lays the plan out, its split and every
    array of the layout are the symbolic analysis's, and so is the criterion."""
    rng = np.random.default_rng(seed)
    model = _crossed(rng, 6 * (n_s + n_i), n_s, n_i, share, formula)
    with pytest.MonkeyPatch.context() as mp:
        crit, symbolic = _plans(model, mp)
    P, Q = crit.plan, symbolic.plan
    assert P.split == Q.split and P.nA == Q.nA and P.stages is None
    for name in LAYOUT:
        assert np.array_equal(getattr(P, name), getattr(Q, name)), name
    theta = crit.tmap.start * 0.8
    assert crit(theta) == symbolic(theta)


def test_densely_crossed_slopes_call_no_symbolic_kernel(monkeypatch):
    """Subjects meeting most items: the plan compiles no symbolic analysis (its kernel refused
    here); subjects meeting few of many items still take it (the fill decides the tail there)."""
    calls = []

    def refuse(*args):
        calls.append(1)
        raise AssertionError("symbolic analysis called")

    monkeypatch.setattr(sparsity.kernels, "symbolic", refuse)  # the module's (lazy) handle
    rng = np.random.default_rng(3)
    dense = _crossed(rng, 1500, 40, 20, 0.9, "y ~ x + (x|s) + (1|i)")
    crit, _ = lmm_criterion(dense.design, True, dense=False)
    assert crit.plan.split == 1 and crit.plan.qt == 20 and not calls
    # 60 subjects each meeting 3 of its own 4 items and one item of the next subject's: a chain,
    # coupled sparsely whichever term comes first
    n, k = 1800, np.repeat(np.arange(60), 30)
    item = 4 * k + rng.integers(0, 3, n)
    item[::10] = (4 * (k[::10] + 1) + 3) % 240
    x = rng.normal(size=n)
    df = pd.DataFrame({"s": k.astype(str), "i": item.astype(str), "x": x, "y": x + rng.normal(size=n)})
    sparse = MixedModel.from_formula("y ~ x + (x|s) + (1|i)", df)
    with pytest.raises(AssertionError, match="symbolic analysis called"):
        lmm_criterion(sparse.design, True, dense=False)
    assert calls


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(1, 400),
    nj=st.integers(1, 400),
    ni=st.integers(1, 400),  # beyond 65,536 cells and 4 n: summed by unique keys
    weighted=st.sampled_from([None, "positive", "with zeros"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_cell_counts_equal_the_sparse_product(n, nj, ni, weighted, seed):
    """Z_j'WZ_i of two random intercepts summed cell by cell (blocks._cell_counts, dense sums or
    unique keys) equals the sparse product it replaces to the bit, entry by entry (weighted rows,
    zero weights included), with no cell of sum 0 stored and its columns sorted."""
    import scipy.sparse as sp

    from midas_glmm.design.blocks import _cell_counts

    rng = np.random.default_rng(seed)
    cj, ci = rng.integers(0, nj, n), rng.integers(0, ni, n)
    w = None if weighted is None else rng.uniform(0.1, 3.0, n)
    if weighted == "with zeros":
        w[rng.uniform(size=n) < 0.3] = 0.0
    Zj = sp.csr_matrix((np.ones(n) if w is None else w, (np.arange(n), cj)), shape=(n, nj))
    Zi = sp.csr_matrix((np.ones(n), (np.arange(n), ci)), shape=(n, ni))
    product = Zj.T @ Zi
    got = _cell_counts(cj, ci, nj, ni, w)
    assert got.shape == (nj, ni) and np.array_equal(got.toarray(), product.toarray())
    assert got.nnz == np.count_nonzero(product.toarray()) and got.has_sorted_indices


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_stored_entries_are_tocoos(fmt):
    """sparsity.stored_entries gives a matrix's stored entries as tocoo gives them, in the same
    order: for a CSR matrix read off its arrays, unsorted columns and duplicates included."""
    import scipy.sparse as sp

    from midas_glmm.engine.sparsity import stored_entries

    rng = np.random.default_rng(5)
    indptr = np.array([0, 3, 3, 7, 9])
    indices = rng.integers(0, 6, 9)  # unsorted, with repeats
    M = sp.csr_matrix((rng.normal(size=9), indices, indptr), shape=(4, 6))
    M = M.asformat(fmt) if fmt != "csr" else M
    C = M.tocoo()
    row, col, data = stored_entries(M)
    assert np.array_equal(row, C.row) and np.array_equal(col, C.col) and np.array_equal(data, C.data)
