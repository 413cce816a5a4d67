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
_LUT = 16  # per-row table of normalised values of the counts 0.._LUT-1
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
def _lut_value(x, mode, scale, lut):
    """Normalised value of ``x``; small integer counts are computed once per row into ``lut``.

    ``lut`` holds NaN for counts not seen yet in the row (the caller resets it per row).
    """
    if mode == NORM_NONE:
        return np.float64(x)
    xf = np.float64(x)
    if 0.0 <= xf < _LUT:
        k = np.int64(xf)
        if k == xf:
            v = lut[k]
            if v != v:
                v = _value(x, mode, scale)
                lut[k] = v
            return v
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
def weighted_sum(indptr, base, indices, data, slot, table, mode, target, block):
    """``out = f(X_chunk) @ W`` with the rows of ``W`` that are not empty given densely.

    ``slot``/``table`` come from :func:`atlas.score.rowkernel.dense_weights`; ``f`` is the fused
    normalisation. Per row, one loop sums the values (float64, stored order; a non-finite total
    sends the row to a count of its non-finite values) and gathers the *hits*, the stored values
    whose gene has weights (about a third of them for 20 scanpy signatures) without a branch.
    Each hit then adds ``f(x) * table[slot]`` to the row's outputs (one dense, vectorised row of
    weights instead of a loop over the gene's sets), so every output is summed in stored order, as
    the GPU kernel does. Returns ``(out, n_nonfinite)`` with ``out`` as wide as ``table``.
    """
    n = indptr.shape[0] - 1
    width = table.shape[1]
    out = np.zeros((n, width))
    n_blocks = (n + block - 1) // block
    bad = np.zeros(n_blocks, np.int64)
    longest = 0
    for i in range(n):
        longest = max(longest, indptr[i + 1] - indptr[i])
    for b in prange(n_blocks):
        lut = np.empty(_LUT)
        hit_slot = np.empty(longest, np.int32)
        hit_x = np.empty(longest, data.dtype)
        for i in range(b * block, min(n, (b + 1) * block)):
            lo = indptr[i] - base
            hi = indptr[i + 1] - base
            total = 0.0
            m = 0
            for p in range(lo, hi):  # the row's total and a branch-free gather of the hits
                x = data[p]
                total += x
                s = slot[indices[p]]
                hit_slot[m] = s
                hit_x[m] = x
                m += s >= 0
            if total - total != 0:
                for p in range(lo, hi):
                    if data[p] - data[p] != 0:
                        bad[b] += 1
            scale = 1.0 if mode == NORM_NONE else _scale(total, mode, target)
            lut[:] = np.nan
            acc = out[i]
            for j in range(m):
                v = _lut_value(hit_x[j], mode, scale, lut)
                s = hit_slot[j]
                for k in range(width):
                    acc[k] += v * table[s, k]
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
def gene_fold(indptr, base, indices, data, mode, target, acc, nnz, bounds):
    """Add the chunk's (normalised) values into per-gene sums ``acc`` in row order, in place.

    Each gene is summed sequentially in the dtype of ``acc`` (float32 or float64), exactly as
    scanpy's ``ones @ X`` does, so bins of gene means match it bit for bit; ``nnz`` (int64) counts
    the stored values per gene. Part ``t`` (one per thread) owns the genes
    ``bounds[t] <= g < bounds[t + 1]``: for every row it sums the row (its scale) and checks that
    the row's indices are sorted in one sweep, then adds its slice of the row (found by binary
    search, or by a scan when the row is not sorted), from cache. So the order per gene stays
    sequential while parts run in parallel. Non-finite values are not checked here: the scoring
    pass that always follows reports them.
    """
    n = indptr.shape[0] - 1
    n_parts = bounds.shape[0] - 1
    for t in prange(n_parts):
        g0 = bounds[t]
        g1 = bounds[t + 1]
        lut = np.empty(_LUT)
        for i in range(n):
            lo = indptr[i] - base
            hi = indptr[i + 1] - base
            total = 0.0
            unsorted = False
            prev = -1
            for p in range(lo, hi):
                total += data[p]
                c = indices[p]
                unsorted |= c <= prev
                prev = c
            scale = 1.0 if mode == NORM_NONE else _scale(total, mode, target)
            lut[:] = np.nan
            if unsorted:
                for p in range(lo, hi):
                    c = indices[p]
                    if g0 <= c < g1:
                        acc[c] += _lut_value(data[p], mode, scale, lut)
                        nnz[c] += 1
            else:
                lo = _lower_bound(indices, lo, hi, g0)
                for p in range(lo, _lower_bound(indices, lo, hi, g1)):
                    c = indices[p]
                    acc[c] += _lut_value(data[p], mode, scale, lut)
                    nnz[c] += 1


def fold_csr(indptr, indices, data, mode: int, target: float, acc: np.ndarray, nnz: np.ndarray) -> None:
    """:func:`gene_fold` on one CSR chunk (absolute int64 ``indptr``), genes split between the threads."""
    from numba import get_num_threads

    n_cols = acc.shape[0]
    n_parts = max(1, min(n_cols, get_num_threads()))
    bounds = np.linspace(0, n_cols, n_parts + 1).astype(np.int64)
    gene_fold(indptr, np.int64(indptr[0]), indices, data, mode, target, acc, nnz, bounds)


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
