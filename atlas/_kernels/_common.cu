// Shared device helpers for the atlas scoring kernels (included by the other .cu files; not a kernel of its own).
// Offsets into the stored values are 64-bit everywhere: matrices may hold more than 2^31 values.
#pragma once

// Normalisation modes, fused into every pass (see atlas/_kernels/cpu.py for the CPU twin):
// 0 = values as stored; 1 = counts per target then log1p, rounded like scanpy on float32 data;
// 2 = the same in float64.
__device__ __forceinline__ double atlas_scale(double total, int mode, double target) {
    if (mode == 1) {
        float s = __fdiv_rn((float)total, (float)target);
        if (s == 0.0f) s = 1.0f;
        return (double)s;
    }
    double s = __ddiv_rn(total, target);
    if (s == 0.0) s = 1.0;
    return s;
}

template <typename T>
__device__ __forceinline__ double atlas_value(T x, int mode, double scale) {
    if (mode == 0) return (double)x;
    if (mode == 1) {
        float q = __fdiv_rn((float)x, (float)scale);
        return (double)(float)log1p((double)q);
    }
    return log1p(__ddiv_rn((double)x, scale));
}

__device__ __forceinline__ bool atlas_finite(float x) { return isfinite(x); }
__device__ __forceinline__ bool atlas_finite(double x) { return isfinite(x); }
template <typename T>
__device__ __forceinline__ bool atlas_finite(T) { return true; }

// Sum over the 32 lanes of a warp, result in every lane.
__device__ __forceinline__ double atlas_warp_sum(double s) {
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    return s;
}
