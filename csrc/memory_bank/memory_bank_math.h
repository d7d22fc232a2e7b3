#pragma once
// Index and value rules of the memory-bank ops, shared by the CPU and CUDA kernels.
#include <cstdint>

#include "common/host_device.h"

namespace sam2rl_fast {
namespace memory_bank {

// SAM 2.1 marks a memory whose object score logit is <= 0 by adding the learned
// no_obj_embed_spatial to every token. sam2 computes `x + (1 - (score > 0)) * e`
// in the encoder's float precision; we keep the same two operations so the stored
// value rounds identically (w is 0 or 1, so w * e is exact and an FMA changes nothing).
S2F_HOST_DEVICE float no_obj_weight(float obj_score) {
  return 1.0f - (obj_score > 0.0f ? 1.0f : 0.0f);
}
S2F_HOST_DEVICE float append_value(float x, float weight, float embed) {
  return x + weight * embed;
}

// Where row `row` of the gathered `[M, B, C]` sequence comes from. Spatial rows come
// first, memory by memory (row = i * hw + token); then the object-pointer rows:
// sam2 splits each D-dim pointer into D / C adjacent C-dim tokens, so pointer row
// j = p * split + chunk reads channels [chunk * C, (chunk + 1) * C) of pointer p.
struct RowSource {
  bool spatial;
  int64_t item;   // memory i (spatial) or pointer p
  int64_t offset; // token within the memory (spatial) or chunk within the pointer
};

S2F_HOST_DEVICE RowSource gather_row_source(int64_t row, int64_t hw, int64_t n_mem,
                                            int64_t split) {
  const int64_t spatial_rows = n_mem * hw;
  if (row < spatial_rows) {
    return RowSource{true, row / hw, row % hw};
  }
  const int64_t j = row - spatial_rows;
  return RowSource{false, j / split, j % split};
}

S2F_HOST_DEVICE int64_t gather_num_rows(int64_t hw, int64_t n_mem, int64_t n_ptr,
                                        int64_t split) {
  return n_mem * hw + n_ptr * split;
}

S2F_HOST_DEVICE bool index_in_range(int64_t i, int64_t size) {
  return i >= 0 && i < size;
}

}  // namespace memory_bank
}  // namespace sam2rl_fast
