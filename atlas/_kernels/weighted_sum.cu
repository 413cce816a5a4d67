// Fused scoring pass: out = f(X_chunk) @ W, one warp per row.
// W (genes x n_out) is CSR: w_indptr (int64), w_cols, w_vals. f is the fused normalisation.
// Hits (stored values whose gene has a W row) are taken in stored order via a warp ballot and their
// W entries are spread over the lanes, so every output is summed in the same order as the CPU twin
// (atlas._kernels.cpu.weighted_sum); __dmul_rn/__dadd_rn keep the compiler from fusing into FMAs.
// Accumulators live in shared memory: blockDim/32 warps x n_out doubles.
#include "_common.cu"

template <typename T, typename I>
__global__ void weighted_sum(const long long* __restrict__ indptr, long long base,
                             const I* __restrict__ indices, const T* __restrict__ data, long long n_rows,
                             const long long* __restrict__ w_indptr, const int* __restrict__ w_cols,
                             const double* __restrict__ w_vals, int n_out, int mode, double target,
                             double* __restrict__ out, unsigned long long* __restrict__ bad) {
    extern __shared__ double sacc[];
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    double* acc = sacc + (size_t)warp * (size_t)n_out;
    unsigned long long nbad = 0;
    for (long long row = (long long)blockIdx.x * warps + warp; row < n_rows;
         row += (long long)gridDim.x * warps) {
        for (int k = lane; k < n_out; k += 32) acc[k] = 0.0;
        const long long lo = indptr[row] - base;
        const long long hi = indptr[row + 1] - base;
        double scale = 1.0;
        if (mode != 0) {
            double s = 0.0;
            for (long long p = lo + lane; p < hi; p += 32) s += (double)data[p];
            scale = atlas_scale(atlas_warp_sum(s), mode, target);
        }
        __syncwarp();
        for (long long t0 = lo; t0 < hi; t0 += 32) {
            const long long p = t0 + lane;
            const bool valid = p < hi;
            T x = valid ? data[p] : (T)0;
            long long c = valid ? (long long)indices[p] : 0;
            if (valid && !atlas_finite(x)) nbad++;
            long long w0 = valid ? w_indptr[c] : 0;
            long long w1 = valid ? w_indptr[c + 1] : 0;
            const bool hit = w1 > w0;
            double v = hit ? atlas_value(x, mode, scale) : 0.0;
            unsigned mask = __ballot_sync(0xffffffffu, hit);
            while (mask) {
                const int src = __ffs(mask) - 1;
                mask &= mask - 1;
                const double vs = __shfl_sync(0xffffffffu, v, src);
                const long long a = __shfl_sync(0xffffffffu, w0, src);
                const long long e = __shfl_sync(0xffffffffu, w1, src);
                for (long long q = a + lane; q < e; q += 32) {
                    const int k = w_cols[q];
                    acc[k] = __dadd_rn(acc[k], __dmul_rn(vs, w_vals[q]));
                }
                __syncwarp();
            }
        }
        for (int k = lane; k < n_out; k += 32) out[row * (long long)n_out + k] = acc[k];
        __syncwarp();
    }
    if (nbad) atomicAdd(bad, nbad);
}
