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

// ---- the variable-length gather (flash-attention's cu_seqlens pattern)
// L sequences are packed one after another: sequence l owns the memories
// [cu_mems[l], cu_mems[l + 1]) and pointers [cu_ptrs[l], cu_ptrs[l + 1]) of the packed
// index arrays, and the output rows [cu_seqlens[l], cu_seqlens[l + 1]), laid out as one
// memory_gather row range of its own (its memories' tokens, then its pointers' tokens).
template <typename idx_t>
S2F_HOST_DEVICE int64_t varlen_seq_start(const idx_t* cu_mems, const idx_t* cu_ptrs, int64_t l,
                                         int64_t hw, int64_t split) {
  return static_cast<int64_t>(cu_mems[l]) * hw + static_cast<int64_t>(cu_ptrs[l]) * split;
}

// The sequence that holds packed row `row`: the last l in [0, L) with cu_seqlens[l] <= row
// (empty sequences share their start with the next one and are skipped). Always returns
// an l in [0, L), even for offsets that are not monotonic: the caller's range checks then
// catch what such offsets would have read.
template <typename idx_t>
S2F_HOST_DEVICE int64_t varlen_find_sequence(const idx_t* cu_seqlens, int64_t L, int64_t row) {
  int64_t lo = 0, hi = L;  // the answer lies in [lo, hi)
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (static_cast<int64_t>(cu_seqlens[mid]) <= row) lo = mid; else hi = mid;
  }
  return lo;
}

// Where packed row `row` (of sequence `seq`) comes from: `index` is the position in the
// packed slots/tslots (spatial) or ptr_idx/ptr_pos (pointer) arrays, `offset` the token
// within the memory or the chunk within the pointer, as in gather_row_source. `valid` is
// false when offsets that are not monotonic put the row outside its sequence; `index`
// must still be checked against the packed arrays' lengths.
struct VarlenSource {
  bool valid;
  bool spatial;
  int64_t index;
  int64_t offset;
};

template <typename idx_t>
S2F_HOST_DEVICE VarlenSource varlen_row_source(int64_t row, int64_t seq, const idx_t* cu_mems,
                                               const idx_t* cu_ptrs, int64_t hw, int64_t split) {
  const int64_t m0 = cu_mems[seq], p0 = cu_ptrs[seq];
  const int64_t n_mem = static_cast<int64_t>(cu_mems[seq + 1]) - m0;
  const int64_t n_ptr = static_cast<int64_t>(cu_ptrs[seq + 1]) - p0;
  const int64_t j = row - varlen_seq_start(cu_mems, cu_ptrs, seq, hw, split);
  if (n_mem < 0 || n_ptr < 0 || j < 0 || j >= gather_num_rows(hw, n_mem, n_ptr, split)) {
    return VarlenSource{false, false, -1, 0};
  }
  const RowSource src = gather_row_source(j, hw, n_mem, split);
  return VarlenSource{true, src.spatial, (src.spatial ? m0 : p0) + src.item, src.offset};
}

}  // namespace memory_bank
}  // namespace sam2rl_fast
