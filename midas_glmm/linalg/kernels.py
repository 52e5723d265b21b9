"""Compiled kernels of the block-sparse Cholesky factorisation (numba, cached on disk).

The random effects are grouped into *nodes*: one level of one term, a node of size ``p`` (the
term's number of columns). The sparse part of the factor is stored by node columns ("block
CSC"): column ``j`` lists its row nodes ``rowidx[colptr[j]:colptr[j+1]]`` in increasing order,
the first being ``j`` itself, and the ``p_i × p_j`` block of row node ``i`` is stored row-major
at ``val[blkoff[e]:]``. Row nodes ``≥ Ns`` belong to the dense tail, a full matrix ``T`` whose
row of node ``i`` starts at ``tailoff[i]``.

Every kernel works on arrays the caller owns; nothing here allocates per column.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "symbolic",
    "scale_blocks",
    "scatter_tail",
    "factor_sparse",
    "forward_solve",
    "backward_solve",
    "selected_inverse",
    "mirror_lower",
    "logdet_gradient_blocks",
    "symmetric_product",
    "clique_union",
    "level_blocks",
    "level_factor",
    "level_solve",
    "level_inverse",
    "level_products",
]


@njit(cache=True, nogil=True)
def _grown(a, used, cap):
    """A copy of a[:used] in a new array of length ``cap`` (the rest uninitialised)."""
    out = np.empty(cap, a.dtype)
    for e in range(used):
        out[e] = a[e]
    return out


# Constants passed to another kernel go as np.int64(...) / np.bool_(...): a bare 1 or True is typed
# Literal[int](1) / Literal[bool](True) and compiles a specialisation of the callee of its own
# (0.2-0.7 s each on a first fit), beside the one its other callers' int64 or bool compile.


@njit(cache=True, nogil=True)
def _heapsort(a, lo, hi):
    """Sort a[lo:hi] in place (heapsort: O(k log k), and far less to compile than numba's sort)."""
    k = hi - lo
    for start in range(k // 2 - 1, -1, -1):
        _sift(a, lo, start, k)
    for end in range(k - 1, 0, -1):
        a[lo], a[lo + end] = a[lo + end], a[lo]
        _sift(a, lo, np.int64(0), end)


@njit(cache=True, nogil=True)
def _sift(a, lo, root, size):
    """Move a[lo + root] down the max-heap a[lo : lo + size]."""
    while True:
        child = 2 * root + 1
        if child >= size:
            return
        if child + 1 < size and a[lo + child + 1] > a[lo + child]:
            child += 1
        if a[lo + root] >= a[lo + child]:
            return
        a[lo + root], a[lo + child] = a[lo + child], a[lo + root]
        root = child


@njit(cache=True, nogil=True)
def symbolic(adjptr, adjidx, N):
    """Node pattern of the Cholesky factor, with fill: column j holds j, its adjacent later nodes
    and the rows of its children in the elimination tree (Liu, 1990).

    ``adjidx[adjptr[j]:adjptr[j+1]]`` are the nodes i > j coupled with j in the data.
    Returns ``(colptr, rowidx)``."""
    head = np.full(N, -1, np.int64)
    nxt = np.full(N, -1, np.int64)
    mark = np.full(N, -1, np.int64)
    ws = np.empty(N, np.int64)
    colptr = np.zeros(N + 1, np.int64)
    cap = max(16, 2 * (len(adjidx) + N))
    rowidx = np.empty(cap, np.int64)
    nnz = np.int64(0)
    for j in range(N):
        cnt = np.int64(1)
        ws[0] = j
        mark[j] = j
        for e in range(adjptr[j], adjptr[j + 1]):
            i = adjidx[e]
            if mark[i] != j:
                mark[i] = j
                ws[cnt] = i
                cnt += 1
        c = head[j]
        while c != -1:
            for e in range(colptr[c] + 1, colptr[c + 1]):
                i = rowidx[e]
                if mark[i] != j:
                    mark[i] = j
                    ws[cnt] = i
                    cnt += 1
            c = nxt[c]
        _heapsort(ws, np.int64(1), cnt)
        if nnz + cnt > cap:
            cap = max(2 * cap, nnz + cnt)
            rowidx = _grown(rowidx, nnz, cap)
        for e in range(cnt):  # element by element: a slice assignment compiles numba's shape checks
            rowidx[nnz + e] = ws[e]
        nnz += cnt
        colptr[j + 1] = nnz
        if cnt > 1:
            parent = ws[1]
            nxt[j] = head[parent]
            head[parent] = j
    return colptr, rowidx[:nnz].copy()


@njit(cache=True, nogil=True)
def _largest(nsize) -> int:
    """The largest block size (p) of the nodes, at least 1."""
    m = 1
    for k in range(nsize.shape[0]):
        if nsize[k] > m:
            m = nsize[k]
    return m


@njit(cache=True, nogil=True)
def _lam_product(A, ao, pi, pj, lam, li, lj, out, oo, out_stride, T, symmetric=False):
    """out[a, b] = Σ_cd λ_i[c, a] A[c, d] λ_j[d, b]: the block λ_i' A λ_j (λ row-major), in two
    products of p³/2 each (λ lower triangular): T = Aλ_j with A's zeros skipped (a block of
    indicator columns, one row per column: ar1 over a time factor, is diagonal), then λ_i'T,
    its lower triangle only and mirrored when ``symmetric`` (a diagonal block: i = j).
    ``T`` is scratch of at least pi·pj."""
    for c in range(pi):
        for b in range(pj):
            T[c * pj + b] = 0.0
        for d in range(pj):
            acd = A[ao + c * pj + d]
            if acd == 0.0:
                continue
            for b in range(d + 1):  # λ_j[d, b] = 0 for b > d
                T[c * pj + b] += acd * lam[lj + d * pj + b]
    for a in range(pi):
        for b in range(a + 1 if symmetric else pj):
            s = 0.0
            for c in range(a, pi):  # λ_i[c, a] = 0 for c < a
                s += lam[li + c * pi + a] * T[c * pj + b]
            out[oo + a * out_stride + b] = s
            if symmetric:
                out[oo + b * out_stride + a] = s


@njit(cache=True, nogil=True, inline="always")
def _lam_pair(A, o, lam, li, lj, out, oo, out_stride, symmetric):
    """:func:`_lam_product` of a 2 × 2 block written out (a call per block had cost 5x its
    arithmetic): the same sums in the same order, the same bits."""
    ia, ib, ic = lam[li], lam[li + 2], lam[li + 3]  # λ_i = [[ia, 0], [ib, ic]], λ_j alike
    ja, jb, jc = lam[lj], lam[lj + 2], lam[lj + 3]
    a00, a01, a10, a11 = A[o], A[o + 1], A[o + 2], A[o + 3]
    t00, t10 = a00 * ja + a01 * jb, a10 * ja + a11 * jb  # T = A λ_j
    t01, t11 = a01 * jc, a11 * jc
    out[oo] = ia * t00 + ib * t10
    out[oo + out_stride] = ic * t10
    out[oo + out_stride + 1] = ic * t11
    out[oo + 1] = ic * t10 if symmetric else ia * t01 + ib * t11


@njit(cache=True, nogil=True)
def scale_blocks(A, out, colptr, rowidx, blkoff, nsize, nterm, lam, lamoff, Ns):
    """out = Λ'AΛ + I on the sparse part's blocks (A in the same layout)."""
    T = np.empty(_largest(nsize) ** 2)
    for j in range(Ns):
        pj = nsize[j]
        lj = lamoff[nterm[j]]
        for e in range(colptr[j], colptr[j + 1]):
            i = rowidx[e]
            pi = nsize[i]
            o = blkoff[e]
            if pi == 1 and pj == 1:
                out[o] = lam[lamoff[nterm[i]]] * A[o] * lam[lj]
            elif pi == 2 and pj == 2:
                _lam_pair(A, o, lam, lamoff[nterm[i]], lj, out, o, pj, i == j)
            else:
                _lam_product(A, o, pi, pj, lam, lamoff[nterm[i]], lj, out, o, pj, T, i == j)
        o = blkoff[colptr[j]]
        for a in range(pj):
            out[o + a * pj + a] += 1.0


@njit(cache=True, nogil=True)
def scatter_tail(A, brow, bcol, boff, nsize, nterm, lam, lamoff, tailoff, T):
    """T[block (I, J)] = λ_I' A_IJ λ_J for the tail's data blocks (I ≥ J), T full and zeroed."""
    qt = T.shape[1]
    flat = T.ravel()
    scratch = np.empty(_largest(nsize) ** 2)
    for e in range(len(brow)):
        i = brow[e]
        j = bcol[e]
        pi = nsize[i]
        pj = nsize[j]
        o = boff[e]
        oo = tailoff[i] * qt + tailoff[j]
        if pi == 1 and pj == 1:
            flat[oo] = lam[lamoff[nterm[i]]] * A[o] * lam[lamoff[nterm[j]]]
        elif pi == 2 and pj == 2:
            _lam_pair(A, o, lam, lamoff[nterm[i]], lamoff[nterm[j]], flat, oo, qt, np.bool_(False))
        else:
            _lam_product(A, o, pi, pj, lam, lamoff[nterm[i]], lamoff[nterm[j]], flat, oo, qt, scratch, np.bool_(False))


@njit(cache=True, nogil=True)
def _find(rowidx, lo, hi, target):
    """Position of ``target`` in the sorted ``rowidx[lo:hi]`` (it is there by the symbolic step)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if rowidx[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _update(L, Tf, qt, colptr, rowidx, blkoff, nsize, Ns, tailoff, a, b, o1, o2, pj):
    """Block (a, b), b ≤ a, of the Schur complement −= L_aj L_bj' (blocks at o1, o2 of column j)."""
    pa = nsize[a]
    pb = nsize[b]
    if b < Ns:
        t = blkoff[_find(rowidx, colptr[b], colptr[b + 1], a)]
        stride = pb
        M = L
    else:
        t = tailoff[a] * qt + tailoff[b]
        stride = qt
        M = Tf
    for r in range(pa):
        for c in range(pb):
            s = 0.0
            for k in range(pj):
                s += L[o1 + r * pj + k] * L[o2 + c * pj + k]
            M[t + r * stride + c] -= s


@njit(cache=True, nogil=True)
def _tail_updates(L, colptr, rowidx, blkoff, nsize, Ns, T, tile=64):
    """T −= Σ_j l_j l_j' over the scalar sparse columns j, l_j their rows in a scalar tail (node
    Ns + r is row r of T). Done by tiles of T's rows, so the scattered writes stay in cache."""
    qt = T.shape[0]
    Tf = T.ravel()
    for r0 in range(0, qt, tile):
        lo_node = Ns + r0
        hi_node = Ns + min(r0 + tile, qt)
        for j in range(Ns):
            if nsize[j] != 1:
                continue
            lo, hi = colptr[j] + 1, colptr[j + 1]
            ts = _find(rowidx, lo, hi, Ns)
            e1 = _find(rowidx, ts, hi, lo_node)
            while e1 < hi and rowidx[e1] < hi_node:
                a = (rowidx[e1] - Ns) * qt
                la = L[blkoff[e1]]
                for e2 in range(ts, e1 + 1):
                    Tf[a + rowidx[e2] - Ns] -= la * L[blkoff[e2]]
                e1 += 1


@njit(cache=True, nogil=True)
def _cholesky_block(L, o, p):
    """The p × p block at L[o:] (row-major) replaced by its lower Cholesky factor, zeros above;
    False (the block left part done) if it is not positive definite."""
    for c in range(p):
        s = L[o + c * p + c]
        for k in range(c):
            s -= L[o + c * p + k] ** 2
        if not s > 0.0:
            return False
        d = np.sqrt(s)
        L[o + c * p + c] = d
        for r in range(c + 1, p):
            s = L[o + r * p + c]
            for k in range(c):
                s -= L[o + r * p + k] * L[o + c * p + k]
            L[o + r * p + c] = s / d
        for r in range(c):
            L[o + r * p + c] = 0.0
    return True


@njit(cache=True, nogil=True)
def factor_sparse(L, colptr, rowidx, blkoff, nsize, Ns, tailoff, T, tail_by_caller):
    """Right-looking block Cholesky of the sparse part, in place; the updates of the tail rows go
    into T (with ``tail_by_caller`` every column's tail-by-tail updates are left to the caller,
    who does them by dense panels). Returns 0, or 1 + the node whose pivot
    block is not positive definite."""
    qt = T.shape[1]
    Tf = T.ravel()
    tail_scalar = True
    for i in range(Ns, len(nsize)):
        tail_scalar = tail_scalar and nsize[i] == 1
    for j in range(Ns):
        pj = nsize[j]
        od = blkoff[colptr[j]]
        if not _cholesky_block(L, od, pj):  # the diagonal block
            return j + 1
        # the blocks below: L_ij = A_ij L_jj^{-T}
        for e in range(colptr[j] + 1, colptr[j + 1]):
            pi = nsize[rowidx[e]]
            o = blkoff[e]
            if pi == 2 and pj == 2:  # the loops below written out (a 5th of their time): the same operations
                for r in range(2):
                    v = L[o + 2 * r] / L[od]
                    L[o + 2 * r] = v
                    L[o + 2 * r + 1] = (L[o + 2 * r + 1] - v * L[od + 2]) / L[od + 3]
                continue
            for r in range(pi):
                for c in range(pj):
                    s = L[o + r * pj + c]
                    for k in range(c):
                        s -= L[o + r * pj + k] * L[od + c * pj + k]
                    L[o + r * pj + c] = s / L[od + c * pj + c]
        # the Schur complement: A_ab -= L_aj L_bj' for row nodes b ≤ a of column j
        lo, hi = colptr[j] + 1, colptr[j + 1]
        ts = _find(rowidx, lo, hi, Ns)  # first row in the tail (rows are sorted)
        # the tail-by-tail updates: the caller's dense panels (any nodes), or for scalar rows into
        # a scalar tail _tail_updates, by tiles
        deferred = tail_by_caller or (pj == 1 and tail_scalar)
        # Column by column of the target: the rows a of column j below b are, in order, among the
        # rows of column b (b is an ancestor of j), so one forward walk finds every target.
        for e2 in range(lo, ts):
            b = rowidx[e2]
            ptr = colptr[b]
            o2 = blkoff[e2]
            for e1 in range(e2, hi):
                a = rowidx[e1]
                if a >= Ns:  # a tail row of sparse column b (tail-tail pairs come below)
                    _update(L, Tf, qt, colptr, rowidx, blkoff, nsize, Ns, tailoff, a, b, blkoff[e1], o2, pj)
                    continue
                while rowidx[ptr] < a:
                    ptr += 1
                t = blkoff[ptr]
                pa, pb = nsize[a], nsize[b]
                o1 = blkoff[e1]
                if pa == 1 and pb == 1 and pj == 1:
                    L[t] -= L[o1] * L[o2]
                    continue
                for r in range(pa):
                    for c in range(pb):
                        acc = 0.0
                        for k in range(pj):
                            acc += L[o1 + r * pj + k] * L[o2 + c * pj + k]
                        L[t + r * pb + c] -= acc
        if not deferred:
            for e2 in range(ts, hi):  # both rows in the tail
                for e1 in range(e2, hi):
                    a, b = rowidx[e1], rowidx[e2]
                    _update(L, Tf, qt, colptr, rowidx, blkoff, nsize, Ns, tailoff, a, b, blkoff[e1], blkoff[e2], pj)
    if tail_scalar and not tail_by_caller:
        _tail_updates(L, colptr, rowidx, blkoff, nsize, Ns, T)
    return 0


@njit(cache=True, nogil=True)
def _solve_block(L, o, p, R, r0, transpose):
    """R[r0 : r0 + p] ← D⁻¹ R[r0 : r0 + p] (or D'⁻¹) in place, D the lower p × p block at L[o:]."""
    m = R.shape[1]
    for i in range(p):
        c = p - 1 - i if transpose else i
        for k in range(c + 1, p) if transpose else range(c):
            lck = L[o + k * p + c] if transpose else L[o + c * p + k]
            for h in range(m):
                R[r0 + c, h] -= lck * R[r0 + k, h]
        d = L[o + c * p + c]
        for h in range(m):
            R[r0 + c, h] /= d


@njit(cache=True, nogil=True)
def forward_solve(L, colptr, rowidx, blkoff, nsize, nodeoff, Ns, R, tail_by_caller):
    """R ← L_sparse⁻¹ R over the sparse columns (R is q × m, rows in node order); the tail rows of
    R receive the updates (unless ``tail_by_caller``: then the caller applies them, by a dense
    product), their own solve is the caller's (dense)."""
    m = R.shape[1]
    for j in range(Ns):
        pj = nsize[j]
        oj = nodeoff[j]
        _solve_block(L, blkoff[colptr[j]], pj, R, oj, np.bool_(False))
        for e in range(colptr[j] + 1, colptr[j + 1]):
            i = rowidx[e]
            if tail_by_caller and i >= Ns:
                break  # rows are sorted: the rest are tail rows
            pi = nsize[i]
            oi = nodeoff[i]
            o = blkoff[e]
            if pi == 2 and pj == 2:  # the loops below written out: each entry's updates in their order
                for h in range(m):
                    r0, r1 = R[oj, h], R[oj + 1, h]
                    R[oi, h] = (R[oi, h] - L[o] * r0) - L[o + 1] * r1
                    R[oi + 1, h] = (R[oi + 1, h] - L[o + 2] * r0) - L[o + 3] * r1
                continue
            for r in range(pi):
                for k in range(pj):
                    lrk = L[o + r * pj + k]
                    for h in range(m):
                        R[oi + r, h] -= lrk * R[oj + k, h]


@njit(cache=True, nogil=True)
def backward_solve(L, colptr, rowidx, blkoff, nsize, nodeoff, Ns, X):
    """X ← L_sparse'⁻¹ X over the sparse columns, the tail rows of X already solved."""
    m = X.shape[1]
    for j in range(Ns - 1, -1, -1):
        pj = nsize[j]
        oj = nodeoff[j]
        od = blkoff[colptr[j]]
        for e in range(colptr[j] + 1, colptr[j + 1]):
            i = rowidx[e]
            pi = nsize[i]
            oi = nodeoff[i]
            o = blkoff[e]
            if pi == 2 and pj == 2:  # the loops below written out: each entry's updates in their order
                for h in range(m):
                    x0, x1 = X[oi, h], X[oi + 1, h]
                    X[oj, h] = (X[oj, h] - L[o] * x0) - L[o + 2] * x1
                    X[oj + 1, h] = (X[oj + 1, h] - L[o + 1] * x0) - L[o + 3] * x1
                continue
            for r in range(pi):
                for k in range(pj):
                    lrk = L[o + r * pj + k]
                    for h in range(m):
                        X[oj + k, h] -= lrk * X[oi + r, h]
        _solve_block(L, od, pj, X, oj, np.bool_(True))


@njit(cache=True, nogil=True)
def _get_block(Z, Zt, colptr, rowidx, blkoff, nsize, Ns, tailoff, a, b, out):
    """out (p_a × p_b) = block (a, b) of the symmetric inverse, from its stored lower half."""
    pa = nsize[a]
    pb = nsize[b]
    if a >= Ns and b >= Ns:
        for r in range(pa):
            for c in range(pb):
                out[r, c] = Zt[tailoff[a] + r, tailoff[b] + c]
    elif a >= b:
        o = blkoff[_find(rowidx, colptr[b], colptr[b + 1], a)]
        for r in range(pa):
            for c in range(pb):
                out[r, c] = Z[o + r * pb + c]
    else:
        o = blkoff[_find(rowidx, colptr[a], colptr[a + 1], b)]
        for r in range(pa):
            for c in range(pb):
                out[r, c] = Z[o + c * pa + r]


@njit(cache=True, nogil=True)
def _scalar_column(Z, Zt, colptr, rowidx, blkoff, Ns, tailoff, lo, hi, Y):
    """Z_ij = −Σ_k Z_ik Y_k for a column whose blocks are all 1 × 1: entries of the inverse
    between two tail nodes are read from Zt, others from the sparse part (found by search)."""
    for e in range(lo, hi):
        i = rowidx[e]
        s = 0.0
        if i >= Ns:
            ti = tailoff[i]
            for f in range(lo, hi):
                k = rowidx[f]
                if k >= Ns:
                    s += Zt[ti, tailoff[k]] * Y[f - lo, 0, 0]
                else:
                    s += Z[blkoff[_find(rowidx, colptr[k], colptr[k + 1], i)]] * Y[f - lo, 0, 0]
        else:
            for f in range(lo, hi):
                k = rowidx[f]
                if k >= i:
                    z = Z[blkoff[_find(rowidx, colptr[i], colptr[i + 1], k)]]
                else:
                    z = Z[blkoff[_find(rowidx, colptr[k], colptr[k + 1], i)]]
                s += z * Y[f - lo, 0, 0]
        Z[blkoff[e]] = -s


@njit(cache=True, nogil=True)
def _invert_block(L, o, p, Linv):
    """Linv (p × p) = D⁻¹, lower triangular with zeros above, D the lower block at L[o:]."""
    for c in range(p):
        for r in range(c):
            Linv[r, c] = 0.0
        Linv[c, c] = 1.0 / L[o + c * p + c]
        for r in range(c + 1, p):
            s = 0.0
            for k in range(c, r):
                s += L[o + r * p + k] * Linv[k, c]
            Linv[r, c] = -s / L[o + r * p + r]


@njit(cache=True, nogil=True)
def selected_inverse(L, colptr, rowidx, blkoff, nsize, Ns, tailoff, Zt, Z):
    """The blocks of (LL')⁻¹ on the pattern of the sparse part (Takahashi's recurrences), from the
    last column back; Zt holds the tail's block of the inverse (full). With Y = L_Ej L_jj⁻¹:
    Z_Ej = −Z_EE Y and Z_jj = L_jj⁻ᵀL_jj⁻¹ − Y'Z_Ej."""
    pmax = 1
    for j in range(len(nsize)):
        pmax = max(pmax, nsize[j])
    blk = np.empty((pmax, pmax))
    for j in range(Ns - 1, -1, -1):
        pj = nsize[j]
        od = blkoff[colptr[j]]
        Linv = np.empty((pj, pj))
        _invert_block(L, od, pj, Linv)
        lo, hi = colptr[j] + 1, colptr[j + 1]
        # Y blocks: L_ij Linv, kept in a scratch copy per row node
        nE = hi - lo
        width = 0
        for e in range(lo, hi):
            width = max(width, nsize[rowidx[e]])
        Y = np.zeros((nE, width, pj))
        for e in range(lo, hi):
            pi = nsize[rowidx[e]]
            o = blkoff[e]
            for r in range(pi):
                for c in range(pj):
                    s = 0.0
                    for k in range(c, pj):
                        s += L[o + r * pj + k] * Linv[k, c]
                    Y[e - lo, r, c] = s
        # Z_ij = -Σ_k Z_ik Y_kj
        scalar = pj == 1
        for e in range(lo, hi):
            scalar = scalar and nsize[rowidx[e]] == 1
        if scalar:  # every block 1 × 1 (crossed random intercepts): a gathered product
            _scalar_column(Z, Zt, colptr, rowidx, blkoff, Ns, tailoff, lo, hi, Y)
        pairs = pj == 2  # every block 2 × 2 and every row in the tail (crossed random slopes)
        for e in range(lo, hi):
            pairs = pairs and nsize[rowidx[e]] == 2 and rowidx[e] >= Ns
        if pairs:  # the general loops below written out, their sums in registers (the same order)
            for e in range(lo, hi):
                ti = tailoff[rowidx[e]]
                a00 = a01 = a10 = a11 = 0.0
                for f in range(lo, hi):
                    tk = tailoff[rowidx[f]]
                    z00, z01, z10, z11 = Zt[ti, tk], Zt[ti, tk + 1], Zt[ti + 1, tk], Zt[ti + 1, tk + 1]
                    y00, y01, y10, y11 = Y[f - lo, 0, 0], Y[f - lo, 0, 1], Y[f - lo, 1, 0], Y[f - lo, 1, 1]
                    a00 -= z00 * y00 + z01 * y10
                    a01 -= z00 * y01 + z01 * y11
                    a10 -= z10 * y00 + z11 * y10
                    a11 -= z10 * y01 + z11 * y11
                o = blkoff[e]
                Z[o], Z[o + 1], Z[o + 2], Z[o + 3] = a00, a01, a10, a11
        acc = np.zeros((pmax, pj))
        for e in range(lo, hi):
            if scalar or pairs:
                break
            i = rowidx[e]
            pi = nsize[i]
            o = blkoff[e]
            acc[:pi, :] = 0.0
            for f in range(lo, hi):
                k = rowidx[f]
                pk = nsize[k]
                if i >= Ns and k >= Ns:  # both in the tail: read its inverse in place
                    ti, tk = tailoff[i], tailoff[k]
                    for r in range(pi):
                        for c in range(pj):
                            s = 0.0
                            for h in range(pk):
                                s += Zt[ti + r, tk + h] * Y[f - lo, h, c]
                            acc[r, c] -= s
                    continue
                _get_block(Z, Zt, colptr, rowidx, blkoff, nsize, Ns, tailoff, i, k, blk)
                for r in range(pi):
                    for c in range(pj):
                        s = 0.0
                        for h in range(pk):
                            s += blk[r, h] * Y[f - lo, h, c]
                        acc[r, c] -= s
            for r in range(pi):
                for c in range(pj):
                    Z[o + r * pj + c] = acc[r, c]
        # Z_jj = Linv' Linv - Σ_k Y_kj' Z_kj
        for r in range(pj):
            for c in range(pj):
                s = 0.0
                for k in range(max(r, c), pj):
                    s += Linv[k, r] * Linv[k, c]
                for e in range(lo, hi):
                    pk = nsize[rowidx[e]]
                    o = blkoff[e]
                    for h in range(pk):
                        s -= Y[e - lo, h, r] * Z[o + h * pj + c]
                Z[od + r * pj + c] = s


# ---------------------------------------------------------------- gradient of the profiled criterion
@njit(cache=True, nogil=True)
def _gradient_block(G, go, S, so, rs, pi, pj, lam, li, lj, D, di, dj, diag):
    """For one stored block (i, j), i ≥ j, of G = Z'WZ and of S = (Λ'GΛ + I)⁻¹ (row stride
    ``rs``): D_i += G_ij Λ_j S_ij' and, off the diagonal, D_j += G_ij' Λ_i S_ij."""
    for a in range(pi):
        for c in range(pi):
            s = 0.0
            for b in range(pj):
                g = G[go + a * pj + b]
                if g != 0.0:
                    for e in range(pj):
                        s += g * lam[lj + b * pj + e] * S[so + c * rs + e]
            D[di + a * pi + c] += s
    if not diag:
        for a in range(pj):
            for c in range(pj):
                s = 0.0
                for b in range(pi):
                    g = G[go + b * pj + a]
                    if g != 0.0:
                        for e in range(pi):
                            s += g * lam[li + b * pi + e] * S[so + e * rs + c]
                D[dj + a * pj + c] += s


@njit(cache=True, nogil=True)
def logdet_gradient_blocks(
    A, Z, Zt, colptr, rowidx, blkoff, nsize, nterm, lam, lamoff, Ns, nsparse, brow, bcol, boff, tailoff, doff, D
):
    """D_l = Σ_j G_lj Λ_j S_jl for every node l (``D`` at ``doff[l]``, p_l × p_l): the diagonal
    blocks of GΛS, from the stored blocks of G (``A``: sparse part, then the tail's data blocks)
    and of the selected inverse S (``Z`` on the sparse pattern, ``Zt`` the tail's full inverse).
    ∂ log|Λ'GΛ + I| / ∂Λ = 2GΛS, so each θ's derivative sums D over the levels it enters."""
    qt = Zt.shape[0]
    Ztf = Zt.ravel()
    for j in range(Ns):
        pj = nsize[j]
        for e in range(colptr[j], colptr[j + 1]):
            i = rowidx[e]
            pi = nsize[i]
            o = blkoff[e]
            _gradient_block(
                A, o, Z, o, pj, pi, pj, lam, lamoff[nterm[i]], lamoff[nterm[j]], D, doff[i], doff[j], i == j
            )
    for k in range(len(brow)):
        i, j = brow[k], bcol[k]
        pi, pj = nsize[i], nsize[j]
        _gradient_block(
            A,
            nsparse + boff[k],
            Ztf,
            tailoff[i] * qt + tailoff[j],
            qt,
            pi,
            pj,
            lam,
            lamoff[nterm[i]],
            lamoff[nterm[j]],
            D,
            doff[i],
            doff[j],
            i == j,
        )


@njit(cache=True, nogil=True)
def _symmetric_block_product(G, go, pi, pj, oi, oj, V, out, diag):
    m = V.shape[1]
    for a in range(pi):
        for b in range(pj):
            g = G[go + a * pj + b]
            if g != 0.0:
                for h in range(m):
                    out[oi + a, h] += g * V[oj + b, h]
                if not diag:
                    for h in range(m):
                        out[oj + b, h] += g * V[oi + a, h]


@njit(cache=True, nogil=True)
def symmetric_product(A, colptr, rowidx, blkoff, nsize, nodeoff, Ns, nsparse, brow, bcol, boff, V, out):
    """out += G V for G = Z'WZ stored by its lower blocks (sparse part, then the tail's data
    blocks) and V with q rows in node order."""
    for j in range(Ns):
        pj = nsize[j]
        for e in range(colptr[j], colptr[j + 1]):
            i = rowidx[e]
            _symmetric_block_product(A, blkoff[e], nsize[i], pj, nodeoff[i], nodeoff[j], V, out, i == j)
    for k in range(len(brow)):
        i, j = brow[k], bcol[k]
        _symmetric_block_product(A, nsparse + boff[k], nsize[i], nsize[j], nodeoff[i], nodeoff[j], V, out, i == j)


@njit(cache=True, nogil=True)
def mirror_lower(M):
    """Copy the lower triangle of a square matrix onto its upper one, in place."""
    n = M.shape[0]
    for i in range(n):
        for j in range(i):
            M[j, i] = M[i, j]


@njit(cache=True, nogil=True)
def clique_union(mptr, midx, tptr, tidx, n, limit):
    """Edges (i > j) of the union of cliques: component c makes its nodes ``midx[mptr[c]:mptr[c+1]]``
    (sorted) pairwise adjacent; ``tidx[tptr[j]:tptr[j+1]]`` are the components at node j.
    Returns (rows, cols), or empty arrays and False once more than ``limit`` edges are found."""
    mark = np.full(n, -1, np.int64)
    cap = np.int64(1024)
    rows = np.empty(cap, np.int64)
    cols = np.empty(cap, np.int64)
    m = np.int64(0)
    for j in range(n):
        for e in range(tptr[j], tptr[j + 1]):
            c = tidx[e]
            for f in range(mptr[c], mptr[c + 1]):
                i = midx[f]
                if i > j and mark[i] != j:
                    mark[i] = j
                    if m == cap:
                        if m >= limit:
                            return rows[:0], cols[:0], False
                        cap *= 2
                        rows, cols = _grown(rows, m, cap), _grown(cols, m, cap)
                    rows[m] = i
                    cols[m] = j
                    m += 1
    return rows[:m], cols[:m], m <= limit


# ------------------------------------------------------------- one term: a p × p block per level
# A one-term model's factor is block diagonal (its levels share no rows): one small kernel does
# its work level by level, A, L and S flat with the blocks row-major one after the other. It is
# one dispatcher for the four operations, with the block loops written in it rather than called
# from the general kernels' helpers: a first fit after install compiles it in ~1.4 s where four
# kernels and their three helpers had taken ~2.4 s (each compiled function costs numba's fixed
# work; inline="always" costs more than writing the loops here).
LEVEL_FACTOR, LEVEL_SOLVE, LEVEL_INVERSE, LEVEL_PRODUCTS = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def level_blocks(op, A, lam, L, p, R, transpose, S, T):
    """One operation on every level's p × p block (``T`` p × p scratch; unused arguments any
    arrays of their types). Returns 0, or for LEVEL_FACTOR 1 + the first level whose block is
    not positive definite.

    LEVEL_FACTOR: L_l with L_l L_l' = λ'A_lλ + I (lower, zeros above).
    LEVEL_SOLVE: R ← L⁻¹R (or L'⁻¹R) in place (R: q × m, rows level by level).
    LEVEL_INVERSE: S_l = (L_l L_l')⁻¹ = L_l⁻ᵀL_l⁻¹ (full blocks).
    LEVEL_PRODUCTS: S_l ← A_l λ L_l with L_l here a flat p × w block (w = p for the
    log-determinant's gradient blocks, m for G V; λ lower triangular, the identity for G V)."""
    pp = p * p
    levels = A.shape[0] // pp if op != LEVEL_SOLVE else R.shape[0] // p
    if op == LEVEL_SOLVE:
        m = R.shape[1]
        for lev in range(levels):
            o, r0 = lev * pp, lev * p
            for i in range(p):
                c = p - 1 - i if transpose else i
                for k in range(c + 1, p) if transpose else range(c):
                    lck = L[o + k * p + c] if transpose else L[o + c * p + k]
                    for h in range(m):
                        R[r0 + c, h] -= lck * R[r0 + k, h]
                d = L[o + c * p + c]
                for h in range(m):
                    R[r0 + c, h] /= d
        return 0
    if op == LEVEL_INVERSE:
        for lev in range(levels):
            o = lev * pp
            for c in range(p):  # T = L_l⁻¹, lower
                for r in range(c):
                    T[r, c] = 0.0
                T[c, c] = 1.0 / L[o + c * p + c]
                for r in range(c + 1, p):
                    s = 0.0
                    for k in range(c, r):
                        s += L[o + r * p + k] * T[k, c]
                    T[r, c] = -s / L[o + r * p + r]
            for a in range(p):
                for b in range(p):
                    s = 0.0
                    for k in range(max(a, b), p):
                        s += T[k, a] * T[k, b]
                    S[o + a * p + b] = s
        return 0
    w = L.shape[0] // levels // p if op == LEVEL_PRODUCTS else p
    for lev in range(levels):
        o = lev * pp
        for c in range(p):  # T = A_l λ
            for b in range(p):
                s = 0.0
                for d in range(b, p):
                    s += A[o + c * p + d] * lam[d, b]
                T[c, b] = s
        if op == LEVEL_PRODUCTS:
            so = lev * p * w
            for a in range(p):
                for c in range(w):
                    s = 0.0
                    for b in range(p):
                        s += T[a, b] * L[so + b * w + c]
                    S[so + a * w + c] = s
            continue
        for a in range(p):  # λ'T + I, the lower triangle
            for b in range(a + 1):
                s = 1.0 if a == b else 0.0
                for c in range(a, p):
                    s += lam[c, a] * T[c, b]
                L[o + a * p + b] = s
            for b in range(a + 1, p):
                L[o + a * p + b] = 0.0
        for c in range(p):  # its Cholesky factor in place
            s = L[o + c * p + c]
            for k in range(c):
                s -= L[o + c * p + k] ** 2
            if not s > 0.0:
                return lev + 1
            d = np.sqrt(s)
            L[o + c * p + c] = d
            for r in range(c + 1, p):
                s = L[o + r * p + c]
                for k in range(c):
                    s -= L[o + r * p + k] * L[o + c * p + k]
                L[o + r * p + c] = s / d
            for r in range(c):
                L[o + r * p + c] = 0.0
    return 0


_NO_MATRIX = np.empty((0, 0))
_NO_VECTOR = np.empty(0)


def level_factor(A, lam, L):
    """L_l with L_l L_l' = λ'A_lλ + I for every level (lower, zeros above). Returns 0, or 1 + the
    first level whose block is not positive definite."""
    p = lam.shape[0]
    return level_blocks(LEVEL_FACTOR, A, lam, L, p, _NO_MATRIX, False, _NO_VECTOR, np.empty((p, p)))


def level_solve(L, p, R, transpose):
    """R ← L⁻¹R (or L'⁻¹R) in place for the block-diagonal L (R: q × m, rows level by level)."""
    level_blocks(LEVEL_SOLVE, _NO_VECTOR, _NO_MATRIX, L, p, R, transpose, _NO_VECTOR, _NO_MATRIX)


def level_inverse(L, p, S):
    """S_l = (L_l L_l')⁻¹ = L_l⁻ᵀL_l⁻¹ for every level (full blocks)."""
    level_blocks(LEVEL_INVERSE, L, _NO_MATRIX, L, p, _NO_MATRIX, False, S, np.empty((p, p)))


def level_products(A, lam, S, p, out):
    """out_l = A_l λ S_l for every level (λ lower triangular; the identity for G V), S_l and out_l
    flat p × w blocks (w = p for the log-determinant's gradient blocks, m for G V)."""
    level_blocks(LEVEL_PRODUCTS, A, lam, S, p, _NO_MATRIX, False, out, np.empty((p, p)))
