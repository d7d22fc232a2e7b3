#pragma once
// AVX512-BF16 micro-kernels of the CPU rope_attention for bf16 inputs: the transposed layout
// of cpu_avx512.h with bf16 operands and fp32 accumulation. `vdpbf16ps` adds, in each of 16
// fp32 lanes, the products of one pair of bf16 values along the reduced dimension, so both
// operands are packed pair-interleaved along it:
//
//   S^T [8 keys, 32 queries] += Kr [keys, D] . QrT2        QrT2 [D/2][32 queries][2]
//   accT [8 ch, 32 queries] += VT2 [Dv, keys] . PT2        PT2  [keys/2][queries][2]
//
// Kr is the rotated key block row-major (a row's pair is one 32-bit broadcast), VT2 the
// value block repacked once per key block [Dv][keys/2][2], PT2 the softmax block rounded to
// bf16 as it is packed. Scores, softmax state and accumulators stay fp32.
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 10))
#include <immintrin.h>

#define S2F_HAVE_AVX512BF16_KERNELS 1
#define S2F_AVX512BF16 __attribute__((target("avx512f,avx512dq,avx512bw,avx512bf16,avx2,fma")))

namespace sam2rl_fast {
namespace attention {
namespace cpu {
namespace avx512bf16 {

using bf16 = uint16_t;  // raw bits
constexpr int64_t kStrip = 32;  // queries per micro tile
constexpr int64_t kRows = 8;    // rows of the broadcast operand per micro tile

// Round to nearest even; NaN stays NaN (quiet), unlike the bare rounding add.
inline bf16 to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if (std::isnan(x)) return static_cast<bf16>((u >> 16) | 0x40);
  return static_cast<bf16>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float from_bf16(bf16 h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

// c[r][0:32] (+)= sum_p a2[r * a_rs + p] . b[p * ldb : p * ldb + 64] for r < 8, p < P pairs:
// a2 holds bf16 pairs as int32 (broadcast), b 32 queries x 2 bf16 per pair (2 zmm).
template <bool kAccumulate>
S2F_AVX512BF16 inline void micro_8x32(const int32_t* __restrict__ a2, int64_t a_rs,
                                      const bf16* __restrict__ b, int64_t ldb, int64_t P,
                                      float* __restrict__ c, int64_t ldc) {
  __m512 lo[kRows], hi[kRows];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    lo[r] = kAccumulate ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();
    hi[r] = kAccumulate ? _mm512_loadu_ps(c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < P; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * ldb);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + p * ldb + 32);
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(a2[r * a_rs + p]);
      lo[r] = _mm512_dpbf16_ps(lo[r], av, b0);
      hi[r] = _mm512_dpbf16_ps(hi[r], av, b1);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    _mm512_storeu_ps(c + r * ldc, lo[r]);
    _mm512_storeu_ps(c + r * ldc + 16, hi[r]);
  }
}

// S^T [nk8, nq_pad] (ld ldst) = Kr [nk8, D] . QrT2 (strips of 32 queries, 32 * D bf16 each).
S2F_AVX512BF16 inline void scores_T(const bf16* kr, int64_t nk8, int64_t D, const bf16* qrT2,
                                    int64_t nq_pad, float* st, int64_t ldst) {
  const int32_t* kr2 = reinterpret_cast<const int32_t*>(kr);
  for (int64_t s = 0; s < nq_pad; s += kStrip)
    for (int64_t r = 0; r < nk8; r += kRows)
      micro_8x32<false>(kr2 + r * (D / 2), D / 2, qrT2 + s * D, 2 * kStrip, D / 2,
                        st + r * ldst + s, ldst);
}

// accT [Dv, nq] (ld ldacc) += VT2 [Dv][nk2 / 2] . PT2 [nk2 / 2][nq][2]; Dv % 8 == 0.
S2F_AVX512BF16 inline void pv_T(const bf16* vt2, int64_t nk2, int64_t Dv, const bf16* pt2,
                                int64_t nq, float* acc, int64_t ldacc) {
  const int32_t* v2 = reinterpret_cast<const int32_t*>(vt2);
  for (int64_t s = 0; s < nq; s += kStrip)
    for (int64_t ch = 0; ch < Dv; ch += kRows)
      micro_8x32<true>(v2 + ch * (nk2 / 2), nk2 / 2, pt2 + 2 * s, 2 * nq, nk2 / 2,
                       acc + ch * ldacc + s, ldacc);
}

// PT2 [nk2 / 2][nq][2] from the fp32 block P^T [nk, nq] (rows past nk are zero): two key rows
// rounded to bf16 (nearest even) and interleaved per query in one 32-bit lane.
S2F_AVX512BF16 inline void pack_pt2(const float* pt, int64_t nk, int64_t nq, bf16* pt2) {
  const __m512i round = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (int64_t j = 0; j < nk; j += 2) {
    const float* r0 = pt + j * nq;
    const float* r1 = j + 1 < nk ? pt + (j + 1) * nq : nullptr;
    int32_t* dst = reinterpret_cast<int32_t*>(pt2 + j * nq);
    for (int64_t q = 0; q < nq; q += 16) {
      const __m512i u0 = _mm512_castps_si512(_mm512_loadu_ps(r0 + q));
      const __m512i u1 = r1 ? _mm512_castps_si512(_mm512_loadu_ps(r1 + q)) : _mm512_setzero_si512();
      // x + 0x7FFF + lsb(x >> 16): round to nearest even (softmax weights are finite)
      const __m512i b0 = _mm512_add_epi32(_mm512_add_epi32(u0, round),
                                          _mm512_and_si512(_mm512_srli_epi32(u0, 16), one));
      const __m512i b1 = _mm512_add_epi32(_mm512_add_epi32(u1, round),
                                          _mm512_and_si512(_mm512_srli_epi32(u1, 16), one));
      _mm512_storeu_si512(dst + q, _mm512_or_si512(_mm512_srli_epi32(b0, 16), _mm512_and_si512(b1, high)));
    }
  }
}

}  // namespace avx512bf16
}  // namespace cpu
}  // namespace attention
}  // namespace sam2rl_fast

#endif
