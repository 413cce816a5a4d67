// Pass 1 of the "scanpy" method: per-gene sums of (normalised) values, each gene summed
// sequentially in row order in the accumulator type A (float for float32 data), exactly like
// scanpy's `ones @ X`, so that the expression bins match scanpy bit for bit.
// The host sorts the chunk's stored values by gene with a stable sort (row order kept within a
// gene) into `perm`, with segment offsets `seg` per gene; one thread then folds one gene.
// CPU twin: atlas._kernels.cpu.gene_fold (threads own disjoint genes; same order per gene).
#include "_common.cu"

// One warp per row: the normalisation scale of each row of the chunk (1 when mode == 0).
template <typename T>
__global__ void row_scale(const long long* __restrict__ indptr, long long base, const T* __restrict__ data,
                          long long n_rows, int mode, double target, double* __restrict__ scale) {
    const int lane = threadIdx.x & 31;
    const int warps = blockDim.x >> 5;
    for (long long row = (long long)blockIdx.x * warps + (threadIdx.x >> 5); row < n_rows;
         row += (long long)gridDim.x * warps) {
        double s = 0.0;
        if (mode != 0) {
            for (long long p = indptr[row] - base + lane; p < indptr[row + 1] - base; p += 32) s += (double)data[p];
            s = atlas_scale(atlas_warp_sum(s), mode, target);
        } else {
            s = 1.0;
        }
        if (lane == 0) scale[row] = s;
    }
}

template <typename T, typename A>
__global__ void gene_fold(const long long* __restrict__ seg, const long long* __restrict__ perm,
                          const int* __restrict__ row_of, const T* __restrict__ data,
                          const double* __restrict__ scale, int mode, long long n_cols, A* __restrict__ acc,
                          unsigned long long* __restrict__ bad) {
    unsigned long long nbad = 0;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < n_cols;
         j += (long long)gridDim.x * blockDim.x) {
        A a = acc[j];
        for (long long p = seg[j]; p < seg[j + 1]; ++p) {
            const long long e = perm[p];
            const T x = data[e];
            if (!atlas_finite(x)) nbad++;
            a = a + (A)atlas_value(x, mode, scale[row_of[e]]);
        }
        acc[j] = a;
    }
    if (nbad) atomicAdd(bad, nbad);
}
