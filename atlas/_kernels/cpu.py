"""CPU twins of the CUDA kernels (numba, ``parallel=True``, float64 accumulation).

All kernels work on one CSR row chunk given as ``(indptr, base, indices, data)``: ``indptr`` is the
int64 row-pointer slice of the chunk with *absolute* offsets into the full matrix and ``base`` is
the offset of the chunk's first stored entry, so entry ``p`` of row ``i`` lives at
``data[indptr[i] - base + ...]``. Offsets are int64 throughout, so matrices with more than 2^31
stored values work (see :func:`chunk_span`).

Normalisation modes (``mode``), fused into every pass so no normalised matrix is materialised:

* ``NORM_NONE`` (0): values as stored;
* ``NORM_F32`` (1): counts per ``target`` then log1p, rounded the way scanpy's
  ``normalize_total`` + ``log1p`` round float32 data (row sum accumulated in float64 and stored
  as float32, float32 division, log1p rounded to float32);
* ``NORM_F64`` (2): the same in float64 (scanpy on float64 data).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

NORM_NONE, NORM_F32, NORM_F64 = 0, 1, 2
_MEMO = 64  # per-row cache of normalised values for small integer counts
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


def chunk_span(indptr: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """Stored-entry range ``[lo, hi)`` of rows ``start:stop`` as Python ints (no int32 overflow)."""
    return int(np.int64(indptr[start])), int(np.int64(indptr[stop]))


@njit(cache=True, inline="always")
def _scale(total, mode, target):
    if mode == NORM_F32:
        s = np.float32(total) / np.float32(target)
        if s == 0:
            s = np.float32(1.0)
        return np.float64(s)
    s = total / target
    if s == 0.0:
        s = 1.0
    return s


@njit(cache=True, inline="always")
def _value(x, mode, scale):
    if mode == NORM_NONE:
        return np.float64(x)
    if mode == NORM_F32:
        q = np.float32(x) / np.float32(scale)
        return np.float64(np.float32(math.log1p(np.float64(q))))
    return math.log1p(np.float64(x) / scale)


@njit(cache=True, inline="always")
def _memo_value(x, mode, scale, row, tag, memo):
    if mode == NORM_NONE:
        return np.float64(x)
    xf = np.float64(x)
    if 0.0 <= xf < _MEMO:
        k = np.int64(xf)
        if k == xf:
            if tag[k] != row:
                memo[k] = _value(x, mode, scale)
                tag[k] = row
            return memo[k]
    return _value(x, mode, scale)


@njit(cache=True, inline="always")
def _row_scale(indptr, base, data, i, mode, target):
    if mode == NORM_NONE:
        return 1.0
    total = 0.0
    for p in range(indptr[i] - base, indptr[i + 1] - base):
        total += data[p]
    return _scale(total, mode, target)


@njit(parallel=True, cache=True, nogil=True)
def row_scales(indptr, base, data, mode, target):
    """Per-row normalisation scale (``1`` for ``NORM_NONE``); float64 (exact float32 for mode 1)."""
    n = indptr.shape[0] - 1
    out = np.ones(n)
    for i in prange(n):
        out[i] = _row_scale(indptr, base, data, i, mode, target)
    return out


@njit(parallel=True, cache=True, nogil=True)
def weighted_sum(indptr, base, indices, data, w_indptr, w_cols, w_vals, n_out, mode, target, block):
    """``out = f(X_chunk) @ W`` with ``W`` (genes x n_out) given as CSR ``w_indptr/w_cols/w_vals``.

    ``f`` is the fused normalisation. Each row is one sequential float64 accumulation in stored
    order (the GPU kernel adds in the same order). Returns ``(out, n_nonfinite)``.
    """
    n = indptr.shape[0] - 1
    out = np.zeros((n, n_out))
    n_blocks = (n + block - 1) // block
    bad = np.zeros(n_blocks, np.int64)
    for b in prange(n_blocks):
        tag = np.full(_MEMO, -1, np.int64)
        memo = np.zeros(_MEMO)
        for i in range(b * block, min(n, (b + 1) * block)):
            scale = _row_scale(indptr, base, data, i, mode, target)
            for p in range(indptr[i] - base, indptr[i + 1] - base):
                x = data[p]
                if x - x != 0:
                    bad[b] += 1
                c = indices[p]
                w0 = w_indptr[c]
                w1 = w_indptr[c + 1]
                if w0 == w1:
                    continue
                v = _memo_value(x, mode, scale, i, tag, memo)
                for q in range(w0, w1):
                    out[i, w_cols[q]] += v * w_vals[q]
    return out, bad.sum()


@njit(cache=True, inline="always")
def _lower_bound(a, lo, hi, v):
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(parallel=True, cache=True, nogil=True)
def gene_fold(indptr, base, indices, data, mode, target, acc, bounds, sorted_rows):
    """Add the chunk's (normalised) values into per-gene sums ``acc`` in row order, in place.

    Each gene is summed sequentially in the dtype of ``acc`` (float32 or float64), exactly as
    scanpy's ``ones @ X`` does, so bins of gene means match it bit for bit. Part ``t`` (one per
    thread, one parallel region per chunk) owns the genes ``bounds[t] <= g < bounds[t + 1]`` and
    walks its slice of every row (found by binary search when the row's indices are sorted), so
    the order per gene stays sequential while parts run in parallel. Non-finite values are not
    checked here: the scoring pass that always follows reports them.
    """
    n = indptr.shape[0] - 1
    n_parts = bounds.shape[0] - 1
    scales = np.ones(n)
    if mode != NORM_NONE:
        for i in prange(n):
            scales[i] = _row_scale(indptr, base, data, i, mode, target)
    for t in prange(n_parts):
        g0 = bounds[t]
        g1 = bounds[t + 1]
        tag = np.full(_MEMO, -1, np.int64)
        memo = np.zeros(_MEMO)
        for i in range(n):
            hi = indptr[i + 1] - base
            p = indptr[i] - base
            scale = scales[i]
            if sorted_rows:
                p = _lower_bound(indices, p, hi, g0)
                if mode == NORM_NONE:
                    while p < hi and indices[p] < g1:
                        acc[indices[p]] += data[p]
                        p += 1
                else:
                    while p < hi and indices[p] < g1:
                        acc[indices[p]] += _memo_value(data[p], mode, scale, i, tag, memo)
                        p += 1
            else:
                for q in range(p, hi):
                    c = indices[q]
                    if g0 <= c < g1:
                        acc[c] += _memo_value(data[q], mode, scale, i, tag, memo)


@njit(parallel=True, cache=True, nogil=True)
def col_counts(indices, n_cols, n_parts):
    """Stored entries per column (decoupler's notion of a non-empty gene), ``n_parts`` threads."""
    m = indices.shape[0]
    step = (m + n_parts - 1) // n_parts
    part = np.zeros((n_parts, n_cols), np.int64)
    for t in prange(n_parts):
        for p in range(t * step, min(m, (t + 1) * step)):
            part[t, indices[p]] += 1
    return part.sum(axis=0)


@njit(cache=True, inline="always")
def _add_memb(out, i, g, memb_indptr, memb_cols, value):
    for q in range(memb_indptr[g], memb_indptr[g + 1]):
        out[i, memb_cols[q]] += value


@njit(parallel=True, cache=True, nogil=True)
def rank_scores(
    indptr,
    base,
    indices,
    vals,
    dkey,
    tb,
    tb_inv,
    memb_indptr,
    memb_cols,
    n_out,
    mode,
    cap,
    nvar,
    max_nnz,
    block,
):
    """Per-cell rank statistics of signature genes, summed per signature (exact, in float64).

    ``dkey`` is a uint32 key per stored value that sorts *descending* by value; ``tb`` the tie-break
    position of each gene (``tb_inv`` its inverse). Stored zeros are not ranked. Per row the
    non-zeros are packed as ``(dkey << 32) | tb`` and sorted (a partial sort when the row holds
    many more than ``cap`` values).

    * ``mode=0`` (AUCell, decoupler): ordinal ranks over all ``nvar`` genes with ties broken by
      ``tb``, zeros after the positives (in ``tb`` order) and negatives last; adds
      ``cap - r`` for every signature gene with rank ``r <= cap`` (``cap`` = n_up).
    * ``mode=1`` (UCell, pyUCell): average ranks among the non-zeros; adds ``r - cap`` for every
      signature gene with rank ``r <= cap`` (``cap`` = max_rank).
    """
    n = indptr.shape[0] - 1
    out = np.zeros((n, n_out))
    n_blocks = (n + block - 1) // block
    bad = np.zeros(n_blocks, np.int64)
    for b in prange(n_blocks):
        keys = np.empty(max(max_nnz, 1), np.uint64)
        mark = np.full(nvar if mode == 0 else 1, -1, np.int64)
        for i in range(b * block, min(n, (b + 1) * block)):
            m = 0
            npos = 0
            for p in range(indptr[i] - base, indptr[i + 1] - base):
                v = vals[p]
                if v - v != 0:
                    bad[b] += 1
                if v != 0:
                    if v > 0:
                        npos += 1
                    t = tb[indices[p]]
                    keys[m] = (np.uint64(dkey[p]) << _SHIFT) | np.uint64(t)
                    m += 1
                    if mode == 0:
                        mark[t] = i
            if m > 2 * cap + 64:  # partial sort: only the top `cap` matter (plus a boundary tie group)
                part = np.partition(keys[:m], cap - 1)
                top = np.sort(part[:cap])
                rest = part[cap:]
            else:
                top = keys[:m]
                top.sort()
                rest = keys[:0]
            if mode == 0:
                for k in range(top.shape[0]):
                    r = k + 1 if k < npos else k + 1 + (nvar - m)
                    if r > cap:
                        break
                    g = tb_inv[np.int64(top[k] & _MASK32)]
                    _add_memb(out, i, g, memb_indptr, memb_cols, np.float64(cap - r))
                z = 0
                q = 0
                while npos + z + 1 <= cap and q < nvar:
                    if mark[q] != i:
                        _add_memb(out, i, tb_inv[q], memb_indptr, memb_cols, np.float64(cap - (npos + z + 1)))
                        z += 1
                    q += 1
            else:
                k = 0
                ntop = top.shape[0]
                while k < ntop:
                    hk = top[k] >> _SHIFT
                    e = k + 1
                    while e < ntop and (top[e] >> _SHIFT) == hk:
                        e += 1
                    extra = 0
                    if e == ntop:
                        for j in range(rest.shape[0]):
                            if (rest[j] >> _SHIFT) == hk:
                                extra += 1
                    ravg = (k + 1 + e + extra) / 2.0
                    if ravg > cap:
                        break
                    for j in range(k, e):
                        _add_memb(
                            out, i, tb_inv[np.int64(top[j] & _MASK32)], memb_indptr, memb_cols, ravg - cap
                        )
                    if extra > 0:
                        for j in range(rest.shape[0]):
                            if (rest[j] >> _SHIFT) == hk:
                                g = tb_inv[np.int64(rest[j] & _MASK32)]
                                _add_memb(out, i, g, memb_indptr, memb_cols, ravg - cap)
                    k = e
    return out, bad.sum()


@njit(cache=True, nogil=True)
def rows_sorted(indptr, base, indices):
    """True when every row's column indices are strictly increasing (canonical CSR)."""
    for i in range(indptr.shape[0] - 1):
        for p in range(indptr[i] - base + 1, indptr[i + 1] - base):
            if indices[p] <= indices[p - 1]:
                return False
    return True
