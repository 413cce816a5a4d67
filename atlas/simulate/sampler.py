# ruff: noqa: NPY002  (numba kernels only support the legacy np.random API; it is seeded per block)
"""The count sampler: numba kernel drawing one block of cells, and its per-data-set driver.

For each cell, the genes of its type's *support* (the ~3,500 most expressed genes plus all
programme, MT and ribosomal genes) are drawn gene by gene from a negative binomial with mean
``library * p_g`` (CDF inversion for small means, gamma-Poisson for large ones). The remaining genes carry little mass; their counts are drawn as a
Poisson number of background UMIs placed by the genes' weights (binary search on a cumulative sum).
With ambient RNA (``Difficulty.ambient_fraction``), a share of each cell's expected UMIs is drawn the
same way from its sample's soup profile and added to the cell's own counts.

Randomness: each block of :data:`BLOCK` cells has its own seed, derived from the simulation seed,
the data set and the block index, and seeds numba's thread-local generator at the start of the
kernel. Output therefore does not depend on the chunk size or on the number of threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

BLOCK = 256  # cells per independently seeded block (fixed: output must not depend on chunk_size)
_NO_SAMPLE = np.zeros(0, dtype=np.int64)  # kernel arguments when there is no ambient RNA
_NO_SOUP = np.zeros((1, 1))


@numba.njit(cache=True, nogil=True)
def _grow(a, need):
    if need <= a.size:
        return a
    b = np.empty(max(need, 2 * a.size), dtype=a.dtype)
    b[: a.size] = a
    return b


@numba.njit(cache=True, nogil=True)
def _neg_binomial(mu, theta):
    """One negative-binomial draw (mean ``mu``, inverse dispersion ``theta``).

    Small means (the vast majority of genes in a cell) use inversion of the CDF with the pmf
    recurrence, which costs one uniform and a log; large means use the gamma-Poisson mixture.
    """
    if mu > 8.0:
        return np.random.poisson(np.random.gamma(theta, mu / theta))
    u = np.random.random()
    pk = np.exp(-theta * np.log1p(mu / theta))
    cdf = pk
    r = mu / (mu + theta)
    k = 0
    while u > cdf and k < 1000:
        pk *= (k + theta) / (k + 1.0) * r
        k += 1
        cdf += pk
    return k


@numba.njit(cache=True, nogil=True)
def sample_block(seed, ctype, prof, lib, mt_factor, wprog, neutrophil, support, sup_w, sup_theta, sup_mt,
                 eff_pos, effects, bg_genes, bg_cdf, n_genes, ambient, csample, soup_cdf):  # fmt: skip
    """Draw counts for one block of cells.

    Parameters
    ----------
    seed
        Seed of this block (uint32 range).
    ctype, prof
        (n,) cell type and profile (sample * n_types + type) of each cell.
    lib
        (n,) expected total counts of each cell.
    mt_factor
        (n,) factor on mitochondrial genes (1 for healthy cells).
    wprog
        (n, n_programs) programme weights (used for cells of type ``neutrophil``).
    neutrophil
        Index of the neutrophil type.
    support, sup_theta, sup_mt
        (n_types, k) sorted support genes of each type, their inverse dispersions and MT flags.
    sup_w
        (n_profiles, k) expression weights of the support genes of each profile.
    eff_pos, effects
        Positions in the neutrophil support touched by a programme, and (n_programs, len(eff_pos))
        log-fold programme effects there.
    bg_genes
        (n_types, n_genes - k) the other genes of each type, sorted.
    bg_cdf
        (n_profiles, n_genes - k) cumulative weights of the background genes of each profile.
    n_genes
        Number of genes.
    ambient
        Share of each cell's expected UMIs drawn from its sample's soup (0: none, no draws).
    csample, soup_cdf
        (n,) sample of each cell and (n_samples, n_genes) cumulative soup weights of each sample
        (unused when ``ambient`` is 0).

    Returns
    -------
    indptr, indices, data
        CSR arrays (cells x genes) of the block.
    """
    np.random.seed(seed)
    n = ctype.size
    k = support.shape[1]
    n_bg = bg_genes.shape[1]
    n_prog = effects.shape[0]
    buf = np.empty(k)
    dense = np.zeros(n_genes, dtype=np.int32)
    bg_list = np.empty(64, dtype=np.int64)
    sup_idx = np.empty(k, dtype=np.int64)
    sup_val = np.empty(k, dtype=np.int32)
    indptr = np.zeros(n + 1, dtype=np.int64)
    indices = np.empty(n * 512, dtype=np.int32)
    data = np.empty(n * 512, dtype=np.int32)
    pos = 0
    for c in range(n):
        t = ctype[c]
        p = prof[c]
        buf[:] = sup_w[p]
        if t == neutrophil:
            for i in range(eff_pos.size):
                e = 0.0
                for q in range(n_prog):
                    e += wprog[c, q] * effects[q, i]
                buf[eff_pos[i]] *= np.exp(e)
        if mt_factor[c] != 1.0:
            for j in range(k):
                if sup_mt[t, j]:
                    buf[j] *= mt_factor[c]
        tot = buf.sum()
        bg_mass = bg_cdf[p, n_bg - 1] if n_bg > 0 else 0.0
        own_lib = lib[c] * (1.0 - ambient) if ambient > 0.0 else lib[c]
        scale = own_lib / (tot + bg_mass)
        ns = 0
        for j in range(k):
            x = _neg_binomial(buf[j] * scale, sup_theta[t, j])
            if x > 0:
                sup_idx[ns] = support[t, j]
                sup_val[ns] = x
                ns += 1
        nb = 0
        if n_bg > 0:
            m = np.random.poisson(bg_mass * scale)
            for _ in range(m):
                u = np.random.random() * bg_mass
                i = np.searchsorted(bg_cdf[p], u, side="right")
                if i >= n_bg:
                    i = n_bg - 1
                g = bg_genes[t, i]
                if dense[g] == 0:
                    bg_list = _grow(bg_list, nb + 1)
                    bg_list[nb] = g
                    nb += 1
                dense[g] += 1
        if ambient > 0.0:  # soup UMIs (may hit support genes: merged below)
            soup = soup_cdf[csample[c]]
            soup_mass = soup[soup.size - 1]
            m = np.random.poisson(ambient * lib[c])
            for _ in range(m):
                g = np.searchsorted(soup, np.random.random() * soup_mass, side="right")
                if g >= n_genes:
                    g = n_genes - 1
                if dense[g] == 0:
                    bg_list = _grow(bg_list, nb + 1)
                    bg_list[nb] = g
                    nb += 1
                dense[g] += 1
        bg_sorted = np.sort(bg_list[:nb])
        indices = _grow(indices, pos + ns + nb)
        data = _grow(data, pos + ns + nb)
        a = 0
        b = 0
        while a < ns or b < nb:  # merge the two sorted lists
            if b >= nb or (a < ns and sup_idx[a] < bg_sorted[b]):
                indices[pos] = sup_idx[a]
                data[pos] = sup_val[a]
                a += 1
            elif a < ns and sup_idx[a] == bg_sorted[b]:  # a support gene with soup UMIs
                g = bg_sorted[b]
                indices[pos] = g
                data[pos] = sup_val[a] + dense[g]
                dense[g] = 0
                a += 1
                b += 1
            else:
                g = bg_sorted[b]
                indices[pos] = g
                data[pos] = dense[g]
                dense[g] = 0
                b += 1
            pos += 1
        indptr[c + 1] = pos
    return indptr, indices[:pos].copy(), data[:pos].copy()


@dataclass
class DatasetModel:
    """Everything the kernel needs for one data set, plus its cells' per-cell parameters."""

    support: np.ndarray
    sup_w: np.ndarray
    sup_theta: np.ndarray
    sup_mt: np.ndarray
    eff_pos: np.ndarray
    effects: np.ndarray
    bg_genes: np.ndarray
    bg_cdf: np.ndarray
    ctype: np.ndarray
    prof: np.ndarray
    lib: np.ndarray
    mt_factor: np.ndarray
    wprog: np.ndarray
    block_seeds: np.ndarray
    neutrophil: int
    n_genes: int
    ambient: float = 0.0
    csample: np.ndarray | None = None
    soup_cdf: np.ndarray | None = None

    @property
    def n_cells(self) -> int:
        """Number of cells of the data set."""
        return int(self.ctype.size)

    def _block(self, b: int) -> sp.csr_matrix:
        s = slice(b * BLOCK, min((b + 1) * BLOCK, self.n_cells))
        indptr, indices, data = sample_block(
            int(self.block_seeds[b]), self.ctype[s], self.prof[s], self.lib[s], self.mt_factor[s],
            self.wprog[s], self.neutrophil, self.support, self.sup_w, self.sup_theta, self.sup_mt,
            self.eff_pos, self.effects, self.bg_genes, self.bg_cdf, self.n_genes, self.ambient,
            self.csample[s] if self.ambient > 0 else _NO_SAMPLE, self.soup_cdf if self.ambient > 0 else _NO_SOUP,
        )  # fmt: skip
        return sp.csr_matrix((data, indices, indptr), shape=(s.stop - s.start, self.n_genes))

    def chunks(self, chunk_size: int, n_jobs: int = 1):
        """Yield ``(start, counts)`` CSR chunks of whole blocks, about ``chunk_size`` cells each.

        Parameters
        ----------
        chunk_size
            Target cells per chunk (rounded down to whole blocks, at least one block).
        n_jobs
            Threads drawing blocks concurrently (the output does not depend on it).
        """
        n_blocks = -(-self.n_cells // BLOCK)
        per_chunk = max(1, chunk_size // BLOCK)
        pool = ThreadPoolExecutor(max_workers=n_jobs) if n_jobs > 1 else None
        try:
            for first in range(0, n_blocks, per_chunk):
                ids = range(first, min(first + per_chunk, n_blocks))
                blocks = list(pool.map(self._block, ids)) if pool else [self._block(b) for b in ids]
                yield first * BLOCK, sp.vstack(blocks, format="csr")
        finally:
            if pool is not None:
                pool.shutdown()
