// Exact-erf GELU, vectorised: y = 0.5 x (1 + erf(x / sqrt(2))) with our own SIMD-friendly erf.
//
// ggml's GELU_ERF op calls libm's scalar erff once per element (about 20 ns each on a Zen 4 core):
// at real ViT widths that is a tenth of a tower's time. This one evaluates, with u = x / sqrt(2) and
// a = |u| (float32 throughout, fused multiply-adds where the hardware has them):
//   a < 1:      erf(u) = u P(u^2)                        P: degree 6, fitted for relative error
//   1 <= a < 4: erfc(a) = exp(-a^2) R(1 / a)              R: degree 10; exp by range reduction to
//                                                          [-ln2/2, ln2/2] and a degree-7 polynomial
//               gelu = 0.5 x (2 - erfc(a)) for u > 0, 0.5 x erfc(a) for u < 0 (no cancellation)
//               (the compiler may fuse multiply-adds into FMAs: results can differ by an ulp between
//               a -march=native build and a portable one)
//   a >= 4:     erfc(a) taken as 0 (below 1.6e-8; libm's 1 + erff(u) rounds to 0 or 6e-8 there too)
// Against float64 GELU it is within 4e-7 absolute and 1e-6 relative wherever |gelu| > 1e-3
// (libm's erff formula: 4.4e-7 and 5e-5); tests/test_fast_gelu.py measures it through the runtime.
#pragma once

#include "ggml.h"

#include <cstdint>

namespace omni {

// y[i] = gelu_erf(x[i]) for i < n (x and y may alias).
void gelu_erf_fast(const float * x, float * y, int64_t n);

// The op: F32 x (contiguous) -> F32 gelu_erf, computed on the CPU by gelu_erf_fast, split over threads.
ggml_tensor * ggml_gelu_erf_fast(ggml_context * ctx, ggml_tensor * x);

}  // namespace omni
