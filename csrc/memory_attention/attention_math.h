#pragma once
// Math of the fused RoPE attention, shared by the CPU and CUDA kernels.
#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace sam2rl_fast {
namespace attention {

// sam2's axial RoPE (position_encoding.compute_axial_cis) for head dim `dim`: channel pair
// p = (2p, 2p + 1); pairs [0, dim/4) rotate by x * f_k and pairs [dim/4, dim/2) by
// y * f_k with f_k = 1 / theta^(4k / dim), x = token mod side, y = token div side.
S2F_HOST_DEVICE float rope_inv_freq(int64_t pair, int64_t dim, float theta) {
  const int64_t k = pair % (dim / 4);
  return 1.0f / powf(theta, static_cast<float>(4 * k) / static_cast<float>(dim));
}

S2F_HOST_DEVICE float rope_angle(int64_t token, int64_t side, int64_t pair, int64_t dim,
                                 float theta) {
  const int64_t coord = pair < dim / 4 ? token % side : token / side;
  return static_cast<float>(coord) * rope_inv_freq(pair, dim, theta);
}

// (a + ib) * (cos + i sin)
S2F_HOST_DEVICE void rotate_pair(float a, float b, float c, float s, float* out_a,
                                 float* out_b) {
  *out_a = a * c - b * s;
  *out_b = a * s + b * c;
}

// Online softmax (flash attention): running max m and running sum l of exp(score - m).
// Folding in a block whose max is `block_max` rescales what was accumulated so far by
// the returned factor.
struct SoftmaxState {
  float m;
  float l;
};

S2F_HOST_DEVICE SoftmaxState softmax_init() { return SoftmaxState{-INFINITY, 0.0f}; }

S2F_HOST_DEVICE float softmax_rescale(SoftmaxState* st, float block_max) {
  const float m_new = fmaxf(st->m, block_max);
  const float factor = st->m == -INFINITY ? 0.0f : expf(st->m - m_new);
  st->l *= factor;
  st->m = m_new;
  return factor;
}

S2F_HOST_DEVICE float softmax_lse(const SoftmaxState& st) { return st.m + logf(st.l); }

}  // namespace attention
}  // namespace sam2rl_fast
