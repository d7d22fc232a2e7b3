// CPU kernel of the fused RoPE attention: online softmax over key blocks, RoPE applied to
// query and key tiles on the fly; neither the score matrix nor rotated copies of the keys
// are materialised.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "common/format.h"
#include "memory_attention/attention_math.h"
#include "memory_attention/rope_attention.h"

namespace sam2rl_fast {
namespace attention {

namespace {
constexpr int64_t kQ = 32;  // queries per tile
constexpr int64_t kK = 64;  // keys per tile

// cos/sin [Nq, D/2] of every query position: computed once per call, shared by all tiles.
void rope_table(int64_t side, int64_t D, float theta, std::vector<float>& cs,
                std::vector<float>& sn) {
  const int64_t Nq = side * side, P = D / 2;
  cs.resize(Nq * P);
  sn.resize(Nq * P);
  at::parallel_for(0, Nq, 64, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t)
      for (int64_t p = 0; p < P; ++p) {
        const float a = rope_angle(t, side, p, D, theta);
        cs[t * P + p] = cosf(a);
        sn[t * P + p] = sinf(a);
      }
  });
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

std::tuple<at::Tensor, at::Tensor> rope_attention_cpu(const at::Tensor& q_in, const at::Tensor& k_in,
                                                      const at::Tensor& v_in, int64_t side,
                                                      int64_t num_k_exclude_rope, double scale,
                                                      double theta) {
  check_rope_attention_args(q_in, k_in, v_in, side, num_k_exclude_rope);
  TORCH_CHECK(q_in.scalar_type() == at::kFloat, "sam2rl_fast: the CPU rope_attention is float32");
  const auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const int64_t B = q.size(0), Nq = q.size(1), D = q.size(2), M = k.size(1), Dv = v.size(2);
  const int64_t P = D / 2, n_rope = M - num_k_exclude_rope;
  std::vector<float> cs, sn;
  rope_table(side, D, static_cast<float>(theta), cs, sn);
  auto out = at::empty({B, Nq, Dv}, q.options());
  auto lse = at::empty({B, Nq}, q.options());
  const float* qp = q.const_data_ptr<float>();
  const float* kp = k.const_data_ptr<float>();
  const float* vp = v.const_data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  const int64_t n_qt = (Nq + kQ - 1) / kQ;
  const float fscale = static_cast<float>(scale);
  at::parallel_for(0, B * n_qt, 1, [&](int64_t job0, int64_t job1) {
    std::vector<float> qr(kQ * D), krT(D * kK), s(kQ * kK), acc(kQ * Dv);
    std::vector<SoftmaxState> st(kQ);
    for (int64_t job = job0; job < job1; ++job) {
      const int64_t b = job / n_qt, q0 = (job % n_qt) * kQ, nq = std::min(kQ, Nq - q0);
      // Rotated, pre-scaled query tile.
      for (int64_t i = 0; i < nq; ++i) {
        const float* src = qp + (b * Nq + q0 + i) * D;
        const float* c = &cs[(q0 + i) * P];
        const float* sv = &sn[(q0 + i) * P];
        for (int64_t p = 0; p < P; ++p) {
          float x, y;
          rotate_pair(src[2 * p], src[2 * p + 1], c[p], sv[p], &x, &y);
          qr[i * D + 2 * p] = x * fscale;
          qr[i * D + 2 * p + 1] = y * fscale;
        }
        st[i] = softmax_init();
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t k0 = 0; k0 < M; k0 += kK) {
        const int64_t nk = std::min(kK, M - k0);
        // Key tile, rotated on the fly and transposed ([D, kK]) so the score loop runs
        // contiguously over keys and vectorises.
        for (int64_t j = 0; j < nk; ++j) {
          const int64_t key = k0 + j;
          const float* src = kp + (b * M + key) * D;
          if (key < n_rope) {
            const int64_t t = key % Nq;
            for (int64_t p = 0; p < P; ++p) {
              float x, y;
              rotate_pair(src[2 * p], src[2 * p + 1], cs[t * P + p], sn[t * P + p], &x, &y);
              krT[(2 * p) * kK + j] = x;
              krT[(2 * p + 1) * kK + j] = y;
            }
          } else {
            for (int64_t d = 0; d < D; ++d) krT[d * kK + j] = src[d];
          }
        }
        for (int64_t i = 0; i < nq; ++i) {
          float* srow = &s[i * kK];
          std::fill(srow, srow + nk, 0.0f);
          for (int64_t d = 0; d < D; ++d) {
            const float qv = qr[i * D + d];
            const float* kr = &krT[d * kK];
            for (int64_t j = 0; j < nk; ++j) srow[j] += qv * kr[j];
          }
          float bmax = -INFINITY;
          for (int64_t j = 0; j < nk; ++j) bmax = std::max(bmax, srow[j]);
          const float factor = softmax_rescale(&st[i], bmax);
          float* a = &acc[i * Dv];
          for (int64_t c = 0; c < Dv; ++c) a[c] *= factor;
          float lsum = 0.0f;
          for (int64_t j = 0; j < nk; ++j) {
            const float pj = expf(srow[j] - st[i].m);
            lsum += pj;
            const float* vr = vp + (b * M + k0 + j) * Dv;
            for (int64_t c = 0; c < Dv; ++c) a[c] += pj * vr[c];
          }
          st[i].l += lsum;
        }
      }
      for (int64_t i = 0; i < nq; ++i) {
        const float inv = 1.0f / st[i].l;
        for (int64_t c = 0; c < Dv; ++c) op[(b * Nq + q0 + i) * Dv + c] = acc[i * Dv + c] * inv;
        lp[b * Nq + q0 + i] = softmax_lse(st[i]);
      }
    }
  });
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(sam2rl_fast, CPU, m) { m.impl("rope_attention", &rope_attention_cpu); }

}  // namespace attention
}  // namespace sam2rl_fast
