#pragma once
// AVX-512 register-blocked micro-kernels of the CPU rope_attention, used when the CPU has
// AVX-512 (checked at run time; the extension itself is built for baseline x86-64).
//
// Why not BLAS: MKL runs its AVX2 code on AMD CPUs (~108 GFLOP/s per core on the Zen 5
// dev machine, while AVX-512 FMA peaks ~1.6x higher there), and small per-block GEMM calls
// pay dispatch overhead. These kernels work in a transposed ("keys x queries") layout:
//
//   S^T [kK keys, kQ queries] = Kr [keys, D] . QrT [D, queries]   (8 keys x 32 queries/tile)
//   accT [Dv, kQ] += V^T [Dv, keys] . P^T [keys, kQ]              (8 channels x 32 queries)
//
// so that Kr is the rotated key block exactly as the rotation writes it (row-major, used by
// broadcast), the queries are packed once per tile, and the online softmax runs along
// keys with queries in the vector lanes: no horizontal reductions, no transposes of the
// key block, and V is read in place from the raw [M, Dv] memory.
#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define S2F_HAVE_AVX512_KERNELS 1
#define S2F_AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma")))

namespace sam2rl_fast {
namespace attention {
namespace cpu {
namespace avx512 {

constexpr int64_t kStrip = 32;  // queries per micro tile (two zmm registers)
constexpr int64_t kRows = 8;    // rows of the broadcast operand per micro tile

// c[r][0:32] (+)= sum_k a[r * a_rs + k * a_cs] * b[k * ldb + 0:32] for r < 8, k < K:
// 16 accumulators, 2 vector loads + 8 broadcasts per 16 FMAs.
template <bool kAccumulate>
S2F_AVX512 inline void micro_8x32(const float* __restrict__ a, int64_t a_rs, int64_t a_cs,
                                  const float* __restrict__ b, int64_t ldb, int64_t K,
                                  float* __restrict__ c, int64_t ldc) {
  __m512 lo[kRows], hi[kRows];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    lo[r] = kAccumulate ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();
    hi[r] = kAccumulate ? _mm512_loadu_ps(c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b + k * ldb), b1 = _mm512_loadu_ps(b + k * ldb + 16);
    const float* ak = a + k * a_cs;
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m512 av = _mm512_set1_ps(ak[r * a_rs]);
      lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
      hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    _mm512_storeu_ps(c + r * ldc, lo[r]);
    _mm512_storeu_ps(c + r * ldc + 16, hi[r]);
  }
}

// S^T [nk8, nq_pad] (ld ldst) = Kr [nk8, D] . QrT, QrT packed as [nq_pad / 32][D][32].
// nk8 is a multiple of 8 (the caller zero-pads the key rows), nq_pad of 32.
S2F_AVX512 inline void scores_T(const float* kr, int64_t nk8, int64_t D, const float* qrT,
                                int64_t nq_pad, float* st, int64_t ldst) {
  for (int64_t s = 0; s < nq_pad; s += kStrip)  // a 32-query panel (D x 32) stays in L1
    for (int64_t r = 0; r < nk8; r += kRows)
      micro_8x32<false>(kr + r * D, D, 1, qrT + s * D, kStrip, D, st + r * ldst + s, ldst);
}

// accT [Dv, nq_pad] (ld ldacc) += V^T . P^T with V [nk, Dv] (row stride Dv, read in place)
// and P^T [nk, nq_pad] (ld ldp). Dv is a multiple of 8.
S2F_AVX512 inline void pv_T(const float* v, int64_t nk, int64_t Dv, const float* pt, int64_t ldp,
                            int64_t nq_pad, float* acc, int64_t ldacc) {
  for (int64_t s = 0; s < nq_pad; s += kStrip)
    for (int64_t c = 0; c < Dv; c += kRows)
      micro_8x32<true>(v + c, 1, Dv, pt + s, ldp, nk, acc + c * ldacc + s, ldacc);
}

}  // namespace avx512
}  // namespace cpu
}  // namespace attention
}  // namespace sam2rl_fast

#endif
