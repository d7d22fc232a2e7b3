// CUDA kernel of the fused RoPE attention: a simple, exact version (one warp per query,
// fp32 accumulation, inputs fp32/bf16/fp16). It rotates queries and keys on the fly from
// a [Nq, D/2] cos/sin table and never materialises scores or rotated keys. The tensor-core
// (mma/wgmma), split-KV version replaces the inner loop later; this one is the correct
// baseline that keeps the op set the same on CPU and CUDA.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "memory_attention/attention_math.h"
#include "memory_attention/rope_attention.h"

namespace sam2rl_fast {
namespace attention {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxPairsPerLane = 4;  // D <= 256
constexpr int kMaxValsPerLane = 8;   // Dv <= 256

__global__ void rope_table_kernel(float* cs, float* sn, int64_t side, int64_t D, float theta) {
  const int64_t P = D / 2, total = side * side * P;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float a = rope_angle(i / P, side, i % P, D, theta);
    cs[i] = cosf(a);
    sn[i] = sinf(a);
  }
}

template <typename T>
__global__ void rope_attention_kernel(const T* __restrict__ q, const T* __restrict__ k,
                                      const T* __restrict__ v, const float* __restrict__ cs,
                                      const float* __restrict__ sn, T* __restrict__ out,
                                      float* __restrict__ lse, int64_t Nq, int64_t M, int64_t D,
                                      int64_t Dv, int64_t n_rope, float scale) {
  const int lane = threadIdx.x % 32;
  const int64_t b = blockIdx.y;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (i >= Nq) return;
  const int64_t P = D / 2;
  float qa[kMaxPairsPerLane], qb[kMaxPairsPerLane];
#pragma unroll
  for (int r = 0; r < kMaxPairsPerLane; ++r) {
    const int64_t p = lane + 32 * r;
    qa[r] = qb[r] = 0.0f;
    if (p < P) {
      const T* src = q + (b * Nq + i) * D + 2 * p;
      rotate_pair(static_cast<float>(src[0]), static_cast<float>(src[1]), cs[i * P + p],
                  sn[i * P + p], &qa[r], &qb[r]);
      qa[r] *= scale;
      qb[r] *= scale;
    }
  }
  float acc[kMaxValsPerLane];
#pragma unroll
  for (int r = 0; r < kMaxValsPerLane; ++r) acc[r] = 0.0f;
  SoftmaxState st = softmax_init();
  for (int64_t j = 0; j < M; ++j) {
    const T* kr = k + (b * M + j) * D;
    const int64_t t = j % Nq;
    float partial = 0.0f;
#pragma unroll
    for (int r = 0; r < kMaxPairsPerLane; ++r) {
      const int64_t p = lane + 32 * r;
      if (p < P) {
        float x = static_cast<float>(kr[2 * p]), y = static_cast<float>(kr[2 * p + 1]);
        if (j < n_rope) rotate_pair(x, y, cs[t * P + p], sn[t * P + p], &x, &y);
        partial += qa[r] * x + qb[r] * y;
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) partial += __shfl_xor_sync(0xffffffffu, partial, off);
    const float factor = softmax_rescale(&st, partial);
    const float pj = expf(partial - st.m);
    st.l += pj;
    const T* vr = v + (b * M + j) * Dv;
#pragma unroll
    for (int r = 0; r < kMaxValsPerLane; ++r) {
      const int64_t c = lane + 32 * r;
      if (c < Dv) acc[r] = acc[r] * factor + pj * static_cast<float>(vr[c]);
    }
  }
  const float inv = 1.0f / st.l;
#pragma unroll
  for (int r = 0; r < kMaxValsPerLane; ++r) {
    const int64_t c = lane + 32 * r;
    if (c < Dv) out[(b * Nq + i) * Dv + c] = static_cast<T>(acc[r] * inv);
  }
  if (lane == 0) lse[b * Nq + i] = softmax_lse(st);
}

std::tuple<at::Tensor, at::Tensor> rope_attention_cuda(const at::Tensor& q_in, const at::Tensor& k_in,
                                                       const at::Tensor& v_in, int64_t side,
                                                       int64_t num_k_exclude_rope, double scale,
                                                       double theta) {
  check_rope_attention_args(q_in, k_in, v_in, side, num_k_exclude_rope);
  TORCH_CHECK(q_in.size(2) <= 2 * 32 * kMaxPairsPerLane && v_in.size(2) <= 32 * kMaxValsPerLane,
              "sam2rl_fast: the CUDA rope_attention supports head dim <= 256 and value dim <= 256");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const int64_t B = q.size(0), Nq = q.size(1), D = q.size(2), M = k.size(1), Dv = v.size(2);
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto fopts = q.options().dtype(at::kFloat);
  auto cs = at::empty({Nq, D / 2}, fopts), sn = at::empty({Nq, D / 2}, fopts);
  rope_table_kernel<<<static_cast<int>(std::min<int64_t>((Nq * D / 2 + 255) / 256, 4096)), 256, 0,
                      stream>>>(cs.data_ptr<float>(), sn.data_ptr<float>(), side, D,
                                static_cast<float>(theta));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto out = at::empty({B, Nq, Dv}, q.options());
  auto lse = at::empty({B, Nq}, fopts);
  if (B == 0 || Nq == 0) return {out, lse};
  TORCH_CHECK(M > 0, "sam2rl_fast: rope_attention needs at least one key");
  const dim3 grid((Nq + kWarps - 1) / kWarps, B);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "rope_attention", [&] {
    rope_attention_kernel<scalar_t><<<grid, 32 * kWarps, 0, stream>>>(
        q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
        cs.const_data_ptr<float>(), sn.const_data_ptr<float>(), out.data_ptr<scalar_t>(),
        lse.data_ptr<float>(), Nq, M, D, Dv, M - num_k_exclude_rope, static_cast<float>(scale));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(sam2rl_fast, CUDA, m) { m.impl("rope_attention", &rope_attention_cuda); }

}  // namespace attention
}  // namespace sam2rl_fast
