// Rank methods, one block per row: for every stored non-zero value of a signature gene, its rank
// among the row's values is found by counting (exact, no sort), then added per signature.
// mode 0 = AUCell (decoupler): ordinal ranks over all nvar genes, ties broken by the gene's
//          tie-break position tb; zeros follow the positives in tb order, negatives come last;
//          adds cap - r for r <= cap (cap = n_up). Zero-valued signature genes are candidates
//          (cand_gene, sorted by cand_tb) when the row has fewer than cap positives.
// mode 1 = UCell (pyUCell): average ranks among the non-zeros; adds r - cap for r <= cap
//          (cap = max_rank).
// Contributions are integers or halves, so the double atomics in shared memory are exact and the
// result does not depend on their order. CPU twin: atlas._kernels.cpu.rank_scores (sort based).
#include "_common.cu"

template <typename T, typename I>
__global__ void rank_scores(const long long* __restrict__ indptr, long long base,
                            const I* __restrict__ indices, const T* __restrict__ vals, long long n_rows,
                            const long long* __restrict__ tb, const long long* __restrict__ memb_indptr,
                            const int* __restrict__ memb_cols, int n_out, int mode, long long cap,
                            long long nvar, const long long* __restrict__ cand_gene,
                            const long long* __restrict__ cand_tb, long long n_cand, double* __restrict__ out,
                            unsigned long long* __restrict__ bad) {
    extern __shared__ double sacc[];
    __shared__ unsigned long long s_pos, s_nz;
    unsigned long long nbad = 0;
    for (long long row = blockIdx.x; row < n_rows; row += gridDim.x) {
        for (int k = threadIdx.x; k < n_out; k += blockDim.x) sacc[k] = 0.0;
        if (threadIdx.x == 0) { s_pos = 0; s_nz = 0; }
        __syncthreads();
        const long long lo = indptr[row] - base;
        const long long hi = indptr[row + 1] - base;
        unsigned long long my_pos = 0, my_nz = 0;
        for (long long p = lo + threadIdx.x; p < hi; p += blockDim.x) {
            const T v = vals[p];
            if (!atlas_finite(v)) nbad++;
            if (v != (T)0) { my_nz++; if (v > (T)0) my_pos++; }
        }
        atomicAdd(&s_pos, my_pos);
        atomicAdd(&s_nz, my_nz);
        __syncthreads();
        const long long npos = (long long)s_pos;
        const long long m = (long long)s_nz;
        for (long long p = lo + threadIdx.x; p < hi; p += blockDim.x) {
            const long long c = (long long)indices[p];
            const long long m0 = memb_indptr[c], m1 = memb_indptr[c + 1];
            const T v = vals[p];
            if (m0 == m1 || v == (T)0) continue;
            const long long t = tb[c];
            long long gt = 0, eq = 0, eq_before = 0;
            for (long long q = lo; q < hi; ++q) {
                const T u = vals[q];
                if (u == (T)0) continue;
                if (u > v) gt++;
                else if (u == v) { eq++; if (tb[indices[q]] < t) eq_before++; }
            }
            double contrib;
            if (mode == 0) {
                long long r = gt + eq_before + 1;
                if (v < (T)0) r += nvar - m;
                if (r > cap) continue;
                contrib = (double)(cap - r);
            } else {
                const double r = (double)gt + 0.5 * (double)(eq + 1);
                if (r > (double)cap) continue;
                contrib = r - (double)cap;
            }
            for (long long q = m0; q < m1; ++q) atomicAdd(&sacc[memb_cols[q]], contrib);
        }
        if (mode == 0 && npos < cap) {
            for (long long j = threadIdx.x; j < n_cand; j += blockDim.x) {
                const long long tg = cand_tb[j];
                if (tg > cap - 1 - npos + m) break;  // rank >= npos + tg - m + 1 > cap from here on
                const long long g = cand_gene[j];
                long long below = 0;
                bool nonzero = false;
                for (long long q = lo; q < hi; ++q) {
                    if (vals[q] == (T)0) continue;
                    const long long cq = (long long)indices[q];
                    if (cq == g) nonzero = true;
                    if (tb[cq] < tg) below++;
                }
                if (nonzero) continue;
                const long long r = npos + (tg - below) + 1;
                if (r > cap) continue;
                for (long long q = memb_indptr[g]; q < memb_indptr[g + 1]; ++q)
                    atomicAdd(&sacc[memb_cols[q]], (double)(cap - r));
            }
        }
        __syncthreads();
        for (int k = threadIdx.x; k < n_out; k += blockDim.x) out[row * (long long)n_out + k] = sacc[k];
        __syncthreads();
    }
    if (nbad) atomicAdd(bad, nbad);
}
