#pragma once
// Vectorised inner loops of the CPU rope_attention kernel, compiled once per x86 ISA level
// and picked at run time.
//
// The extension is built with the baseline ISA (x86-64: SSE2) so that the wheel runs on any
// x86-64 CPU; these few loops (key rotation, row max, exp + row sum) are what the GEMMs
// leave to us, and at SSE2 width they would cost as much as the GEMMs themselves. Each loop
// body is an always_inline function written as plain C++ that GCC/Clang vectorise; thin
// wrappers compile it with target("avx512f"), target("avx2,fma") and the default, and
// `cpu_isa()` picks one from cpuid once per process. Non-x86 builds use the default only.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace sam2rl_fast {
namespace attention {
namespace cpu {

#define S2F_ALWAYS_INLINE inline __attribute__((always_inline))

// exp(x) for x <= 0 (scores minus their running max), vectorisable: Cody-Waite range
// reduction x = n ln2 + r, |r| <= ln2 / 2, and a degree-6 Taylor polynomial of exp(r)
// (relative error < 2e-7, below fp32 rounding of the sums it feeds). Inputs below -87.3
// are clamped there (exp = 1.2e-38, which vanishes next to the row's max term of 1);
// NaN passes the clamp and propagates.
S2F_ALWAYS_INLINE float exp_nonpos(float x) {
  x = x < -87.3f ? -87.3f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln2)
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 0]
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// s[j] <- exp(s[j] - m), returns sum_j s[j].
S2F_ALWAYS_INLINE float exp_sub_sum_body(float* __restrict__ s, int64_t n, float m) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    const float e = exp_nonpos(s[j] - m);
    s[j] = e;
    sum += e;
  }
  return sum;
}

S2F_ALWAYS_INLINE float row_max_body(const float* __restrict__ s, int64_t n) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = s[j] > m ? s[j] : m;
  return m;
}

// dst[d] = src[d] * c2[d] + src[d ^ 1] * s2[d] * scale over one token of `dim` channels,
// with pair-expanded tables c2 = (cos, cos), s2 = (-sin, sin) per adjacent pair: the
// rotation (a + ib)(cos + i sin) written so that every lane does the same arithmetic.
S2F_ALWAYS_INLINE void rotate_row_body(const float* __restrict__ src, const float* __restrict__ c2,
                                       const float* __restrict__ s2, float scale,
                                       float* __restrict__ dst, int64_t dim) {
#pragma omp simd
  for (int64_t d = 0; d < dim; d += 2) {
    const float a = src[d], b = src[d + 1];
    dst[d] = (a * c2[d] + b * s2[d]) * scale;
    dst[d + 1] = (b * c2[d + 1] + a * s2[d + 1]) * scale;
  }
}

enum class Isa { kDefault, kAvx2, kAvx512 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define S2F_DEFINE_ISA_VARIANTS(SUFFIX, TARGET)                                                 \
  __attribute__((target(TARGET))) inline float exp_sub_sum_##SUFFIX(float* s, int64_t n,      \
                                                                     float m) {                \
    return exp_sub_sum_body(s, n, m);                                                          \
  }                                                                                            \
  __attribute__((target(TARGET))) inline float row_max_##SUFFIX(const float* s, int64_t n) {   \
    return row_max_body(s, n);                                                                 \
  }                                                                                            \
  __attribute__((target(TARGET))) inline void rotate_row_##SUFFIX(                             \
      const float* src, const float* c2, const float* s2, float scale, float* dst,            \
      int64_t dim) {                                                                           \
    rotate_row_body(src, c2, s2, scale, dst, dim);                                             \
  }
S2F_DEFINE_ISA_VARIANTS(avx512, "avx512f,avx512dq,avx2,fma")
S2F_DEFINE_ISA_VARIANTS(avx2, "avx2,fma")
#undef S2F_DEFINE_ISA_VARIANTS

inline Isa cpu_isa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kDefault;
  }();
  return isa;
}
#define S2F_ISA_DISPATCH(NAME, ...)                                  \
  switch (cpu_isa()) {                                               \
    case Isa::kAvx512: return NAME##_avx512(__VA_ARGS__);            \
    case Isa::kAvx2: return NAME##_avx2(__VA_ARGS__);                \
    default: return NAME##_body(__VA_ARGS__);                        \
  }
#else
inline Isa cpu_isa() { return Isa::kDefault; }
#define S2F_ISA_DISPATCH(NAME, ...) return NAME##_body(__VA_ARGS__);
#endif

inline float exp_sub_sum(float* s, int64_t n, float m) { S2F_ISA_DISPATCH(exp_sub_sum, s, n, m) }
inline float row_max(const float* s, int64_t n) { S2F_ISA_DISPATCH(row_max, s, n) }
inline void rotate_row(const float* src, const float* c2, const float* s2, float scale, float* dst,
                       int64_t dim) {
  S2F_ISA_DISPATCH(rotate_row, src, c2, s2, scale, dst, dim)
}
#undef S2F_ISA_DISPATCH

}  // namespace cpu
}  // namespace attention
}  // namespace sam2rl_fast
