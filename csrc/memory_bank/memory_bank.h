#pragma once
// Memory-bank ops: append (write an encoded memory into a slot) and gather (build the
// memory / memory_pos sequences that sam2's memory attention consumes).
//
// Shapes (B objects, S slots, HW tokens, C = mem_dim, D = pointer dim, R pointer slots):
//   bank         [B, S, HW, C]   storage dtype (bf16 by default, as stock sam2 stores it)
//   mem          [B, C, H, W]    as sam2's memory encoder emits it
//   spatial_pos  [HW, C]         sam2's maskmem_pos_enc, token-major
//   temporal_pos [T, C]          sam2's maskmem_tpos_enc flattened
//   slots/tslots [B, N] int64    memory slot and temporal-position index per gathered memory
//   ptrs         [B, R, D]       object-pointer store
//   ptr_idx      [B, P] int64    pointers to gather, in order
//   ptr_pos      [B, P, C]       their positional encodings
// The variable-length gather packs L sequences (flash-attention's cu_seqlens pattern):
//   objects      [L] int64 or None  bank row of each sequence (None: L = B, row l = object l)
//   slots/tslots [Nt] int64      every sequence's memories, packed
//   cu_mems      [L + 1]         int32 or int64 offsets into slots: 0, ..., Nt
//   ptr_idx      [Pt] int64      every sequence's pointers, packed
//   ptr_pos      [Pt, C]         their positional encodings
//   cu_ptrs      [L + 1]         offsets into ptr_idx (dtype of cu_mems): 0, ..., Pt
//   memory/memory_pos [Nt * HW + Pt * D / C, C], cu_seqlens [L + 1] (their row offsets)
#include <ATen/core/Tensor.h>

namespace sam2rl_fast {
namespace memory_bank {

// Validates shapes, dtypes and devices; shared by every backend.
void check_append_args(const at::Tensor& bank, const at::Tensor& mem, const at::Tensor& slots,
                       const at::Tensor& obj_score, const std::optional<at::Tensor>& no_obj_embed);
void check_gather_args(const at::Tensor& bank, const at::Tensor& spatial_pos,
                       const at::Tensor& temporal_pos, const at::Tensor& slots,
                       const at::Tensor& tslots, const at::Tensor& ptrs,
                       const at::Tensor& ptr_idx, const at::Tensor& ptr_pos,
                       at::ScalarType out_dtype);
void check_gather_varlen_args(const at::Tensor& bank, const at::Tensor& spatial_pos,
                              const at::Tensor& temporal_pos,
                              const std::optional<at::Tensor>& objects, const at::Tensor& slots,
                              const at::Tensor& tslots, const at::Tensor& cu_mems,
                              const at::Tensor& ptrs, const at::Tensor& ptr_idx,
                              const at::Tensor& ptr_pos, const at::Tensor& cu_ptrs,
                              at::ScalarType out_dtype);

}  // namespace memory_bank
}  // namespace sam2rl_fast
