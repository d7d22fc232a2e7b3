#pragma once
// Fused single-head RoPE attention of sam2's memory attention.
//
//   q [B, Nq, D]  projected queries (not yet rotated), Nq = side * side
//   k [B, M, D]   projected keys (not yet rotated); the first M - num_k_exclude_rope are
//                 spatial memory tokens rotated with the query table tiled over memory
//                 frames (key i uses position i mod Nq), the rest (object pointers) are not
//   v [B, M, Dv]  values (the raw 64-d memory for the exact PV shortcut)
// returns out [B, Nq, Dv] = softmax(scale * rope(q) rope(k)^T) v and lse [B, Nq]
// (log-sum-exp of the scaled scores, for merging split-KV parts).
#include <ATen/core/Tensor.h>

namespace sam2rl_fast {
namespace attention {

void check_rope_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               int64_t side, int64_t num_k_exclude_rope);

}  // namespace attention
}  // namespace sam2rl_fast
