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

}  // namespace memory_bank
}  // namespace sam2rl_fast
