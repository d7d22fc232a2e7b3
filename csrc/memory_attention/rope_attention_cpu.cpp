// CPU kernel of the fused RoPE attention (fp32), flash-attention style: online softmax over
// key blocks, RoPE applied to queries once and to each key block on the fly into a small
// cache-resident buffer; neither the score matrix nor a rotated copy of all keys is ever
// materialised.
//
// Work split: each thread owns a contiguous range of (batch, query tile) jobs and keeps
// their rotated queries and softmax state for the whole key loop. Key blocks are the outer
// loop, so every thread rotates each key block once and reuses it for all of its query
// tiles (rotating per query tile would cost ~25% of the GEMM time at 512 keys per block).
// Per (query tile, key block) there are two small products on L2-resident blocks,
// S = Qr Kr^T ([128 x D] x [D x 256]) and acc += P V ([128 x 256] x [256 x Dv]):
// - with AVX-512 (checked at run time): the register-blocked micro-kernels of
//   cpu_avx512.h in a transposed layout (~440 GFLOP/s on the 2-core dev machine);
// - otherwise (or SAM2RL_FAST_CPU_ATTENTION=blas, or Dv % 8 != 0): ATen's BLAS
//   (MKL/OpenBLAS, single-threaded inside at::parallel_for; ~210 GFLOP/s there).
// The softmax and rotation loops are the ISA-dispatched loops of cpu_kernels.h.
// bfloat16 inputs: with AVX512-BF16 (checked at run time) the same schedule on bf16 operands
// with fp32 scores, softmax and accumulators (cpu_avx512_bf16.h); elsewhere the fp32 kernel
// on fp32 copies. Output in the inputs' dtype, lse in fp32.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/format.h"
#include "memory_attention/attention_math.h"
#include "memory_attention/cpu_avx512.h"
#include "memory_attention/cpu_avx512_bf16.h"
#include "memory_attention/cpu_kernels.h"
#include "memory_attention/rope_attention.h"

namespace sam2rl_fast {
namespace attention {

namespace {
constexpr int64_t kQ = 128;  // queries per tile
constexpr int64_t kK = 256;  // keys per block

// Pair-expanded cos/sin tables [Nq, D] of every query position (see cpu::rotate_row):
// c2 = (cos, cos), s2 = (-sin, sin) per adjacent channel pair. Computed once per call.
void rope_table(int64_t side, int64_t D, float theta, std::vector<float>& c2,
                std::vector<float>& s2) {
  const int64_t Nq = side * side, P = D / 2;
  c2.resize(Nq * D);
  s2.resize(Nq * D);
  at::parallel_for(0, Nq, 64, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      for (int64_t p = 0; p < P; ++p) {
        const float a = rope_angle(t, side, p, D, theta), c = cosf(a), s = sinf(a);
        c2[t * D + 2 * p] = c;
        c2[t * D + 2 * p + 1] = c;
        s2[t * D + 2 * p] = -s;
        s2[t * D + 2 * p + 1] = s;
      }
  });
}

// A float32 CPU tensor over scratch memory owned by the caller (no copy, no deleter).
at::Tensor wrap(const float* p, int64_t rows, int64_t cols) {
  return at::from_blob(const_cast<float*>(p), {rows, cols}, at::TensorOptions().dtype(at::kFloat));
}
}  // namespace

void check_rope_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               int64_t side, int64_t num_k_exclude_rope) {
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3,
              "sam2rl_fast: rope_attention needs q [B, Nq, D], k [B, M, D], v [B, M, Dv]");
  TORCH_CHECK(k.size(0) == q.size(0) && v.size(0) == q.size(0) && k.size(2) == q.size(2) &&
                  v.size(1) == k.size(1),
              "sam2rl_fast: rope_attention shapes do not match: q [", num(q.size(0)), ", ",
              num(q.size(1)), ", ", num(q.size(2)), "], k [", num(k.size(0)), ", ", num(k.size(1)),
              ", ", num(k.size(2)), "], v [", num(v.size(0)), ", ", num(v.size(1)), ", ",
              num(v.size(2)), "]");
  TORCH_CHECK(side > 0 && side * side == q.size(1), "sam2rl_fast: rope_attention needs a square "
              "grid: side ", num(side), " but ", num(q.size(1)), " queries");
  TORCH_CHECK(q.size(2) % 4 == 0, "sam2rl_fast: head dim must be a multiple of 4 for axial RoPE");
  const int64_t n_rope = k.size(1) - num_k_exclude_rope;
  TORCH_CHECK(num_k_exclude_rope >= 0 && n_rope >= 0 && n_rope % q.size(1) == 0,
              "sam2rl_fast: the ", num(k.size(1) - num_k_exclude_rope), " rotated keys must be a "
              "whole number of memory frames of ", num(q.size(1)), " tokens");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
              "sam2rl_fast: q, k and v must share a dtype");
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(),
              "sam2rl_fast: q, k and v must be on one device");
}

namespace {

// Everything a thread needs to run its range of (batch, query tile) jobs; T is the inputs'
// and output's element type (float, or bf16 bits), everything computed from them is fp32.
template <typename T>
struct ProblemOf {
  const T* q;       // [B, Nq, D]
  const T* k;       // [B, M, D]
  const T* v;       // [B, M, Dv]
  const float* c2;  // [Nq, D] pair-expanded cos
  const float* s2;  // [Nq, D] pair-expanded (-sin, sin)
  T* out;           // [B, Nq, Dv]
  float* lse;       // [B, Nq]
  int64_t Nq, D, M, Dv, n_rope, n_qt;
  float scale;
};
using Problem = ProblemOf<float>;

// Rotated key block [nk, D] of batch entry b starting at key k0 into kr.
void rotate_keys(const Problem& p, int64_t b, int64_t k0, int64_t nk, float* kr) {
  for (int64_t j = 0; j < nk; ++j) {
    const int64_t key = k0 + j;
    const float* src = p.k + (b * p.M + key) * p.D;
    if (key < p.n_rope) {
      const int64_t t = key % p.Nq;  // the query table tiled over memory frames
      cpu::rotate_row(src, p.c2 + t * p.D, p.s2 + t * p.D, 1.0f, kr + j * p.D, p.D);
    } else {  // object pointer tokens carry no RoPE
      std::copy(src, src + p.D, kr + j * p.D);
    }
  }
}

// Portable path: per (query tile, key block) two small GEMMs through ATen's BLAS.
void run_jobs_blas(const Problem& p, int64_t job0, int64_t job1) {
  const int64_t n_jobs = job1 - job0, D = p.D, Dv = p.Dv, n_qt = p.n_qt;
  // Per job: rotated, pre-scaled queries [kQ, D], accumulator [kQ, Dv], softmax state.
  std::vector<float> qr(n_jobs * kQ * D), acc(n_jobs * kQ * Dv, 0.0f);
  std::vector<SoftmaxState> st(n_jobs * kQ, softmax_init());
  std::vector<float> kr(kK * D), s(kQ * kK);  // rotated key block, score block
  for (int64_t job = job0; job < job1; ++job) {
    const int64_t b = job / n_qt, q0 = (job % n_qt) * kQ, nq = std::min(kQ, p.Nq - q0);
    for (int64_t i = 0; i < nq; ++i)
      cpu::rotate_row(p.q + (b * p.Nq + q0 + i) * D, p.c2 + (q0 + i) * D, p.s2 + (q0 + i) * D,
                      p.scale, &qr[((job - job0) * kQ + i) * D], D);
  }
  for (int64_t jb = job0; jb < job1;) {  // jobs of one batch entry b at a time
    const int64_t b = jb / n_qt, je = std::min(job1, (b + 1) * n_qt);
    for (int64_t k0 = 0; k0 < p.M; k0 += kK) {
      const int64_t nk = std::min(kK, p.M - k0);
      rotate_keys(p, b, k0, nk, kr.data());
      const auto kr_t = wrap(kr.data(), nk, D);                 // [nk, D]
      const auto v_t = wrap(p.v + (b * p.M + k0) * Dv, nk, Dv);  // [nk, Dv]
      auto s_t = wrap(s.data(), kQ, nk);                         // [kQ, nk]
      for (int64_t job = jb; job < je; ++job) {
        const int64_t idx = job - job0, nq = std::min(kQ, p.Nq - (job % n_qt) * kQ);
        auto s_q = nq == kQ ? s_t : s_t.narrow(0, 0, nq);  // [nq, nk]
        at::mm_out(s_q, wrap(&qr[idx * kQ * D], nq, D), kr_t.t());
        for (int64_t i = 0; i < nq; ++i) {
          float* row = &s[i * nk];
          SoftmaxState& si = st[idx * kQ + i];
          const float factor = softmax_rescale(&si, cpu::row_max(row, nk));
          float* a = &acc[(idx * kQ + i) * Dv];
          for (int64_t c = 0; c < Dv; ++c) a[c] *= factor;
          si.l += cpu::exp_sub_sum(row, nk, si.m);  // row <- exp(row - m)
        }
        wrap(&acc[idx * kQ * Dv], nq, Dv).addmm_(s_q, v_t);  // acc += P V
      }
    }
    jb = je;
  }
  for (int64_t job = job0; job < job1; ++job) {
    const int64_t b = job / n_qt, q0 = (job % n_qt) * kQ, nq = std::min(kQ, p.Nq - q0);
    for (int64_t i = 0; i < nq; ++i) {
      const SoftmaxState& si = st[(job - job0) * kQ + i];
      const float inv = 1.0f / si.l;
      const float* a = &acc[((job - job0) * kQ + i) * Dv];
      for (int64_t c = 0; c < Dv; ++c) p.out[(b * p.Nq + q0 + i) * Dv + c] = a[c] * inv;
      p.lse[b * p.Nq + q0 + i] = softmax_lse(si);
    }
  }
}

#ifdef S2F_HAVE_AVX512_KERNELS
// out = accT / l and lse for every query of jobs job0..job1 from their transposed
// accumulators accT [Dv, kQ] and softmax states; `store` converts to the output's type.
template <typename T, typename Store>
void write_transposed(const ProblemOf<T>& p, int64_t job0, int64_t job1, const std::vector<float>& accT,
                      const std::vector<SoftmaxState>& st, Store store) {
  const int64_t Dv = p.Dv;
  for (int64_t job = job0; job < job1; ++job) {
    const int64_t b = job / p.n_qt, q0 = (job % p.n_qt) * kQ, nq = std::min(kQ, p.Nq - q0);
    const float* a = &accT[(job - job0) * Dv * kQ];
    for (int64_t i = 0; i < nq; ++i) {
      const SoftmaxState& si = st[(job - job0) * kQ + i];
      const float inv = 1.0f / si.l;
      for (int64_t c = 0; c < Dv; ++c) p.out[(b * p.Nq + q0 + i) * Dv + c] = store(a[c * kQ + i] * inv);
      p.lse[b * p.Nq + q0 + i] = softmax_lse(si);
    }
  }
}

// Online-softmax step on a transposed score block S^T [nk, kQ] (queries in the lanes):
// S^T <- exp(S^T - m_new) in place, state and accumulator accT [Dv, kQ] rescaled.
S2F_AVX512 void softmax_block_T(float* st, int64_t nk, SoftmaxState* state, float* accT,
                                int64_t Dv) {
  alignas(64) float bmax[kQ], m_new[kQ], factor[kQ], sum[kQ];
  for (int64_t q = 0; q < kQ; ++q) bmax[q] = -INFINITY;
  for (int64_t j = 0; j < nk; ++j) {
    const float* row = st + j * kQ;
#pragma omp simd
    for (int64_t q = 0; q < kQ; ++q) bmax[q] = row[q] > bmax[q] ? row[q] : bmax[q];
  }
  for (int64_t q = 0; q < kQ; ++q) {
    factor[q] = softmax_rescale(&state[q], bmax[q]);
    m_new[q] = state[q].m;
    sum[q] = 0.0f;
  }
  for (int64_t j = 0; j < nk; ++j) {
    float* row = st + j * kQ;
#pragma omp simd
    for (int64_t q = 0; q < kQ; ++q) {
      const float e = cpu::exp_nonpos(row[q] - m_new[q]);
      row[q] = e;
      sum[q] += e;
    }
  }
  for (int64_t q = 0; q < kQ; ++q) state[q].l += sum[q];
  for (int64_t c = 0; c < Dv; ++c) {
    float* a = accT + c * kQ;
#pragma omp simd
    for (int64_t q = 0; q < kQ; ++q) a[q] *= factor[q];
  }
}

// AVX-512 path (cpu_avx512.h): transposed blocks, queries packed once per tile, keys
// rotated once per block and used in place. Needs Dv % 8 == 0.
void run_jobs_avx512(const Problem& p, int64_t job0, int64_t job1) {
  namespace k5 = cpu::avx512;
  static_assert(kQ % k5::kStrip == 0 && kK % k5::kRows == 0, "tiles must hold whole micro tiles");
  const int64_t n_jobs = job1 - job0, D = p.D, Dv = p.Dv, n_qt = p.n_qt;
  // Per job: rotated, pre-scaled queries packed [kQ / 32][D][32] (zero past the last
  // query), transposed accumulator [Dv, kQ], softmax state per query.
  std::vector<float> qrT(n_jobs * kQ * D, 0.0f), accT(n_jobs * Dv * kQ, 0.0f), row(D);
  std::vector<SoftmaxState> st(n_jobs * kQ, softmax_init());
  std::vector<float> kr(kK * D), sT(kK * kQ);  // rotated key block, S^T / P^T block
  for (int64_t job = job0; job < job1; ++job) {
    const int64_t b = job / n_qt, q0 = (job % n_qt) * kQ, nq = std::min(kQ, p.Nq - q0);
    float* dst = &qrT[(job - job0) * kQ * D];
    for (int64_t i = 0; i < nq; ++i) {
      cpu::rotate_row(p.q + (b * p.Nq + q0 + i) * D, p.c2 + (q0 + i) * D, p.s2 + (q0 + i) * D,
                      p.scale, row.data(), D);
      float* panel = dst + (i / k5::kStrip) * D * k5::kStrip + i % k5::kStrip;
      for (int64_t d = 0; d < D; ++d) panel[d * k5::kStrip] = row[d];
    }
  }
  for (int64_t jb = job0; jb < job1;) {  // jobs of one batch entry b at a time
    const int64_t b = jb / n_qt, je = std::min(job1, (b + 1) * n_qt);
    for (int64_t k0 = 0; k0 < p.M; k0 += kK) {
      const int64_t nk = std::min(kK, p.M - k0);
      const int64_t nk8 = (nk + k5::kRows - 1) / k5::kRows * k5::kRows;
      rotate_keys(p, b, k0, nk, kr.data());
      std::fill(kr.begin() + nk * D, kr.begin() + nk8 * D, 0.0f);  // rows past the last key
      const float* vb = p.v + (b * p.M + k0) * Dv;
      for (int64_t job = jb; job < je; ++job) {
        const int64_t idx = job - job0;
        k5::scores_T(kr.data(), nk8, D, &qrT[idx * kQ * D], kQ, sT.data(), kQ);
        softmax_block_T(sT.data(), nk, &st[idx * kQ], &accT[idx * Dv * kQ], Dv);
        k5::pv_T(vb, nk, Dv, sT.data(), kQ, kQ, &accT[idx * Dv * kQ], kQ);
      }
    }
    jb = je;
  }
  write_transposed(p, job0, job1, accT, st, [](float x) { return x; });
}
#ifdef S2F_HAVE_AVX512BF16_KERNELS
using ProblemBf16 = ProblemOf<uint16_t>;  // q, k, v and out as bf16 bits

// AVX512-BF16 path: run_jobs_avx512's schedule with bf16 operands packed in pairs along the
// reduced dimension (queries once per tile, keys and values once per key block, softmax
// weights once per tile and block). Needs Dv % 8 == 0 and an even D.
S2F_AVX512BF16 void run_jobs_avx512_bf16(const ProblemBf16& p, int64_t job0, int64_t job1) {
  namespace kb = cpu::avx512bf16;
  using kb::bf16;
  static_assert(kQ % kb::kStrip == 0 && kK % kb::kRows == 0, "tiles must hold whole micro tiles");
  const int64_t n_jobs = job1 - job0, D = p.D, Dv = p.Dv, n_qt = p.n_qt;
  std::vector<bf16> qrT2(n_jobs * kQ * D, 0);  // per job: kQ / 32 strips [D / 2][32][2]
  std::vector<float> accT(n_jobs * Dv * kQ, 0.0f), src(D), row(D);
  std::vector<SoftmaxState> st(n_jobs * kQ, softmax_init());
  std::vector<bf16> kr(kK * D), vt2(Dv * kK), pt2(kK * kQ);
  std::vector<float> sT(kK * kQ);
  auto widen = [&](const bf16* x) {
    for (int64_t d = 0; d < D; ++d) src[d] = kb::from_bf16(x[d]);
  };
  for (int64_t job = job0; job < job1; ++job) {
    const int64_t b = job / n_qt, q0 = (job % n_qt) * kQ, nq = std::min(kQ, p.Nq - q0);
    bf16* dst = &qrT2[(job - job0) * kQ * D];
    for (int64_t i = 0; i < nq; ++i) {
      widen(p.q + (b * p.Nq + q0 + i) * D);
      cpu::rotate_row(src.data(), p.c2 + (q0 + i) * D, p.s2 + (q0 + i) * D, p.scale, row.data(), D);
      bf16* strip = dst + (i / kb::kStrip) * kb::kStrip * D + 2 * (i % kb::kStrip);
      for (int64_t q = 0; q < D / 2; ++q) {
        strip[q * 2 * kb::kStrip] = kb::to_bf16(row[2 * q]);
        strip[q * 2 * kb::kStrip + 1] = kb::to_bf16(row[2 * q + 1]);
      }
    }
  }
  for (int64_t jb = job0; jb < job1;) {  // jobs of one batch entry b at a time
    const int64_t b = jb / n_qt, je = std::min(job1, (b + 1) * n_qt);
    for (int64_t k0 = 0; k0 < p.M; k0 += kK) {
      const int64_t nk = std::min(kK, p.M - k0);
      const int64_t nk8 = (nk + kb::kRows - 1) / kb::kRows * kb::kRows, nk2 = (nk + 1) / 2 * 2;
      for (int64_t j = 0; j < nk; ++j) {  // rotated keys, rounded back to bf16
        const int64_t key = k0 + j;
        widen(p.k + (b * p.M + key) * D);
        const float* r = src.data();
        if (key < p.n_rope) {
          const int64_t t = key % p.Nq;
          cpu::rotate_row(src.data(), p.c2 + t * D, p.s2 + t * D, 1.0f, row.data(), D);
          r = row.data();
        }
        for (int64_t d = 0; d < D; ++d) kr[j * D + d] = kb::to_bf16(r[d]);
      }
      std::fill(kr.begin() + nk * D, kr.begin() + nk8 * D, bf16(0));
      const bf16* vb = p.v + (b * p.M + k0) * Dv;  // values [nk, Dv] -> [Dv][nk2 / 2][2]
      for (int64_t c = 0; c < Dv; ++c)
        for (int64_t j = 0; j < nk2; ++j) vt2[c * nk2 + j] = j < nk ? vb[j * Dv + c] : bf16(0);
      for (int64_t job = jb; job < je; ++job) {
        const int64_t idx = job - job0;
        kb::scores_T(kr.data(), nk8, D, &qrT2[idx * kQ * D], kQ, sT.data(), kQ);
        softmax_block_T(sT.data(), nk, &st[idx * kQ], &accT[idx * Dv * kQ], Dv);
        kb::pack_pt2(sT.data(), nk, kQ, pt2.data());
        kb::pv_T(vt2.data(), nk2, Dv, pt2.data(), kQ, &accT[idx * Dv * kQ], kQ);
      }
    }
    jb = je;
  }
  write_transposed(p, job0, job1, accT, st, kb::to_bf16);
}
#endif
#endif

// SAM2RL_FAST_CPU_ATTENTION=blas forces the portable path (for tests and comparisons).
bool use_avx512(int64_t Dv) {
#ifdef S2F_HAVE_AVX512_KERNELS
  const char* env = std::getenv("SAM2RL_FAST_CPU_ATTENTION");
  return cpu::cpu_isa() == cpu::Isa::kAvx512 && Dv % cpu::avx512::kRows == 0 &&
         !(env && std::string(env) == "blas");
#else
  return false;
#endif
}

// bf16 inputs on the AVX512-BF16 kernels: the CPU has them and the shapes fit
// (SAM2RL_FAST_CPU_ATTENTION=fp32 or =blas forces the fp32 kernels on fp32 copies).
bool use_avx512_bf16(int64_t D, int64_t Dv) {
#ifdef S2F_HAVE_AVX512BF16_KERNELS
  static const bool cpu_has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  const char* env = std::getenv("SAM2RL_FAST_CPU_ATTENTION");
  return cpu_has && Dv % cpu::avx512bf16::kRows == 0 && D % 2 == 0 &&
         !(env && (std::string(env) == "blas" || std::string(env) == "fp32"));
#else
  (void)D;
  (void)Dv;
  return false;
#endif
}

std::tuple<at::Tensor, at::Tensor> rope_attention_fp32(const at::Tensor& q, const at::Tensor& k,
                                                       const at::Tensor& v, int64_t side,
                                                       int64_t num_k_exclude_rope, double scale,
                                                       const std::vector<float>& c2,
                                                       const std::vector<float>& s2) {
  const int64_t B = q.size(0), Nq = q.size(1), D = q.size(2), M = k.size(1), Dv = v.size(2);
  auto out = at::empty({B, Nq, Dv}, q.options());
  auto lse = at::empty({B, Nq}, q.options());
  const Problem p{q.const_data_ptr<float>(), k.const_data_ptr<float>(), v.const_data_ptr<float>(),
                  c2.data(), s2.data(), out.data_ptr<float>(), lse.data_ptr<float>(),
                  Nq, D, M, Dv, M - num_k_exclude_rope, (Nq + kQ - 1) / kQ,
                  static_cast<float>(scale)};
  const bool avx512 = use_avx512(Dv);
  at::parallel_for(0, B * p.n_qt, 1, [&](int64_t job0, int64_t job1) {
#ifdef S2F_HAVE_AVX512_KERNELS
    if (avx512) return run_jobs_avx512(p, job0, job1);
#endif
    run_jobs_blas(p, job0, job1);
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> rope_attention_cpu(const at::Tensor& q_in, const at::Tensor& k_in,
                                                      const at::Tensor& v_in, int64_t side,
                                                      int64_t num_k_exclude_rope, double scale,
                                                      double theta) {
  check_rope_attention_args(q_in, k_in, v_in, side, num_k_exclude_rope);
  const auto dtype = q_in.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
              "sam2rl_fast: the CPU rope_attention takes float32 or bfloat16");
  const auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const int64_t B = q.size(0), Nq = q.size(1), D = q.size(2), M = k.size(1), Dv = v.size(2);
  std::vector<float> c2, s2;
  rope_table(side, D, static_cast<float>(theta), c2, s2);
  if (dtype == at::kFloat)
    return rope_attention_fp32(q, k, v, side, num_k_exclude_rope, scale, c2, s2);
#ifdef S2F_HAVE_AVX512BF16_KERNELS
  if (use_avx512_bf16(D, Dv)) {
    auto out = at::empty({B, Nq, Dv}, q.options());
    auto lse = at::empty({B, Nq}, q.options().dtype(at::kFloat));
    auto bits = [](const at::Tensor& t) { return reinterpret_cast<const uint16_t*>(t.const_data_ptr()); };
    const ProblemBf16 p{bits(q), bits(k), bits(v), c2.data(), s2.data(),
                        reinterpret_cast<uint16_t*>(out.data_ptr()), lse.data_ptr<float>(),
                        Nq, D, M, Dv, M - num_k_exclude_rope, (Nq + kQ - 1) / kQ,
                        static_cast<float>(scale)};
    at::parallel_for(0, B * p.n_qt, 1, [&](int64_t job0, int64_t job1) {
      run_jobs_avx512_bf16(p, job0, job1);
    });
    return {out, lse};
  }
#endif
  // no AVX512-BF16 here: the fp32 kernels on fp32 copies, the output rounded to bf16
  auto [out, lse] = rope_attention_fp32(q.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat), side,
                                        num_k_exclude_rope, scale, c2, s2);
  return {out.to(at::kBFloat16), lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(sam2rl_fast, CPU, m) { m.impl("rope_attention", &rope_attention_cpu); }

}  // namespace attention
}  // namespace sam2rl_fast
