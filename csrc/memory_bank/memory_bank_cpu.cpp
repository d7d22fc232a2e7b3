// CPU kernels of the memory-bank ops, and the argument checks every backend shares.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <limits>

#include "common/format.h"
#include "memory_bank/memory_bank.h"
#include "memory_bank/memory_bank_math.h"

namespace sam2rl_fast {
namespace memory_bank {

namespace {

bool is_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

void check_same_device(const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == ref.device(), "sam2rl_fast: ", name, " is on ", t.device(),
              " but the bank is on ", ref.device());
}

void check_index(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong, "sam2rl_fast: ", name, " must be int64, got ",
              t.scalar_type());
}

// Index range checks read the values: cheap on the CPU. CUDA kernels instead poison
// (NaN) what an out-of-range index would have produced; the Python layer validates
// indices before they reach the device.
void check_range_cpu(const at::Tensor& idx, int64_t size, const char* name, bool allow_skip) {
  if (idx.numel() == 0) return;
  const int64_t lo = idx.min().item<int64_t>();
  const int64_t hi = idx.max().item<int64_t>();
  TORCH_CHECK(hi < size && (allow_skip ? lo >= -1 : lo >= 0), "sam2rl_fast: ", name,
              " holds values in [", num(lo), ", ", num(hi), "] but must lie in [",
              num(allow_skip ? -1 : 0), ", ", num(size - 1), "]");
}

// Offsets of packed sequences: 0 first, never decreasing, `total` (the packed length) last.
void check_offsets_cpu(const at::Tensor& cu_in, int64_t total, const char* name,
                       const char* packed) {
  const auto cu = cu_in.to(at::kLong).contiguous();
  const int64_t* v = cu.const_data_ptr<int64_t>();
  const int64_t n = cu.numel();
  TORCH_CHECK(v[0] == 0, "sam2rl_fast: ", name, " must start at 0, got ", num(v[0]));
  for (int64_t l = 1; l < n; ++l) {
    TORCH_CHECK(v[l] >= v[l - 1], "sam2rl_fast: ", name, " must be non-decreasing, got ", name, "[",
                num(l), "] = ", num(v[l]), " < ", name, "[", num(l - 1), "] = ", num(v[l - 1]));
  }
  TORCH_CHECK(v[n - 1] == total, "sam2rl_fast: ", name, " must end at len(", packed, ") = ",
              num(total), ", got ", num(v[n - 1]));
}

}  // namespace

void check_append_args(const at::Tensor& bank, const at::Tensor& mem, const at::Tensor& slots,
                       const at::Tensor& obj_score, const std::optional<at::Tensor>& no_obj_embed) {
  TORCH_CHECK(bank.dim() == 4, "sam2rl_fast: bank must be [B, S, HW, C], got shape ", shape(bank));
  TORCH_CHECK(bank.is_contiguous(), "sam2rl_fast: bank must be contiguous");
  TORCH_CHECK(is_float_type(bank.scalar_type()), "sam2rl_fast: bank dtype must be float32, "
              "bfloat16 or float16, got ", bank.scalar_type());
  TORCH_CHECK(mem.dim() == 4, "sam2rl_fast: mem must be [B, C, H, W], got shape ", shape(mem));
  TORCH_CHECK(is_float_type(mem.scalar_type()), "sam2rl_fast: mem dtype must be float32, "
              "bfloat16 or float16, got ", mem.scalar_type());
  const int64_t B = bank.size(0), HW = bank.size(2), C = bank.size(3);
  TORCH_CHECK(mem.size(0) == B && mem.size(1) == C && mem.size(2) * mem.size(3) == HW,
              "sam2rl_fast: mem of shape ", shape(mem), " does not fit a bank of shape ",
              shape(bank), " (expected [", num(B), ", ", num(C), ", H, W] with H*W = ", num(HW), ")");
  check_index(slots, "slots");
  TORCH_CHECK(slots.dim() == 1 && slots.size(0) == B, "sam2rl_fast: slots must be [B] = [", num(B),
              "], got ", shape(slots));
  TORCH_CHECK(obj_score.dim() == 1 && obj_score.size(0) == B,
              "sam2rl_fast: obj_score must be [B] = [", num(B), "], got ", shape(obj_score));
  TORCH_CHECK(obj_score.scalar_type() == at::kFloat, "sam2rl_fast: obj_score must be float32");
  check_same_device(bank, mem, "mem");
  check_same_device(bank, slots, "slots");
  check_same_device(bank, obj_score, "obj_score");
  if (no_obj_embed.has_value()) {
    const auto& e = *no_obj_embed;
    TORCH_CHECK(e.numel() == C, "sam2rl_fast: no_obj_embed must hold C = ", num(C), " values, got ",
                shape(e));
    TORCH_CHECK(e.scalar_type() == at::kFloat, "sam2rl_fast: no_obj_embed must be float32");
    check_same_device(bank, e, "no_obj_embed");
  }
}

namespace {

// What both gathers check of the bank, the encodings and the pointer store.
void check_bank_pos_ptrs(const at::Tensor& bank, const at::Tensor& spatial_pos,
                         const at::Tensor& temporal_pos, const at::Tensor& ptrs,
                         const at::Tensor& ptr_pos, at::ScalarType out_dtype) {
  TORCH_CHECK(bank.dim() == 4, "sam2rl_fast: bank must be [B, S, HW, C], got shape ", shape(bank));
  TORCH_CHECK(is_float_type(bank.scalar_type()), "sam2rl_fast: bank dtype must be float32, "
              "bfloat16 or float16, got ", bank.scalar_type());
  TORCH_CHECK(is_float_type(out_dtype), "sam2rl_fast: out_dtype must be float32, bfloat16 or "
              "float16, got ", out_dtype);
  const int64_t B = bank.size(0), HW = bank.size(2), C = bank.size(3);
  TORCH_CHECK(spatial_pos.dim() == 2 && spatial_pos.size(0) == HW && spatial_pos.size(1) == C,
              "sam2rl_fast: spatial_pos must be [HW, C] = [", num(HW), ", ", num(C), "], got ",
              shape(spatial_pos));
  TORCH_CHECK(temporal_pos.dim() == 2 && temporal_pos.size(1) == C,
              "sam2rl_fast: temporal_pos must be [T, C] with C = ", num(C), ", got ", shape(temporal_pos));
  for (const auto* t : {&spatial_pos, &temporal_pos, &ptr_pos}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, "sam2rl_fast: positional encodings must be "
                "float32 (as sam2 computes them), got ", t->scalar_type());
  }
  TORCH_CHECK(ptrs.dim() == 3 && ptrs.size(0) == B, "sam2rl_fast: ptrs must be [B, R, D] with B = ",
              num(B), ", got ", shape(ptrs));
  TORCH_CHECK(is_float_type(ptrs.scalar_type()), "sam2rl_fast: ptrs dtype must be floating, got ",
              ptrs.scalar_type());
  TORCH_CHECK(ptrs.size(2) % C == 0, "sam2rl_fast: pointer dim ", num(ptrs.size(2)),
              " must be a multiple of mem_dim ", num(C));
}

}  // namespace

void check_gather_args(const at::Tensor& bank, const at::Tensor& spatial_pos,
                       const at::Tensor& temporal_pos, const at::Tensor& slots,
                       const at::Tensor& tslots, const at::Tensor& ptrs,
                       const at::Tensor& ptr_idx, const at::Tensor& ptr_pos,
                       at::ScalarType out_dtype) {
  check_bank_pos_ptrs(bank, spatial_pos, temporal_pos, ptrs, ptr_pos, out_dtype);
  const int64_t B = bank.size(0), C = bank.size(3);
  check_index(slots, "slots");
  check_index(tslots, "tslots");
  check_index(ptr_idx, "ptr_idx");
  TORCH_CHECK(slots.dim() == 2 && slots.size(0) == B, "sam2rl_fast: slots must be [B, N] with B = ",
              num(B), ", got ", shape(slots));
  TORCH_CHECK(shape(tslots) == shape(slots), "sam2rl_fast: tslots must have the shape of slots ",
              shape(slots), ", got ", shape(tslots));
  TORCH_CHECK(ptr_idx.dim() == 2 && ptr_idx.size(0) == B, "sam2rl_fast: ptr_idx must be [B, P] "
              "with B = ", num(B), ", got ", shape(ptr_idx));
  TORCH_CHECK(ptr_pos.dim() == 3 && ptr_pos.size(0) == B && ptr_pos.size(1) == ptr_idx.size(1) &&
                  ptr_pos.size(2) == C,
              "sam2rl_fast: ptr_pos must be [B, P, C] = [", num(B), ", ", num(ptr_idx.size(1)), ", ", num(C),
              "], got ", shape(ptr_pos));
  for (const auto& [t, name] : {std::pair{&spatial_pos, "spatial_pos"}, {&temporal_pos, "temporal_pos"},
                                {&slots, "slots"}, {&tslots, "tslots"}, {&ptrs, "ptrs"},
                                {&ptr_idx, "ptr_idx"}, {&ptr_pos, "ptr_pos"}}) {
    check_same_device(bank, *t, name);
  }
}

void check_gather_varlen_args(const at::Tensor& bank, const at::Tensor& spatial_pos,
                              const at::Tensor& temporal_pos,
                              const std::optional<at::Tensor>& objects, const at::Tensor& slots,
                              const at::Tensor& tslots, const at::Tensor& cu_mems,
                              const at::Tensor& ptrs, const at::Tensor& ptr_idx,
                              const at::Tensor& ptr_pos, const at::Tensor& cu_ptrs,
                              at::ScalarType out_dtype) {
  check_bank_pos_ptrs(bank, spatial_pos, temporal_pos, ptrs, ptr_pos, out_dtype);
  const int64_t B = bank.size(0), HW = bank.size(2), C = bank.size(3);
  int64_t L = B;
  if (objects.has_value()) {
    check_index(*objects, "objects");
    TORCH_CHECK(objects->dim() == 1, "sam2rl_fast: objects must be [L] (the bank row of each "
                "sequence), got ", shape(*objects));
    L = objects->size(0);
    check_same_device(bank, *objects, "objects");
  }
  check_index(slots, "slots");
  check_index(tslots, "tslots");
  check_index(ptr_idx, "ptr_idx");
  TORCH_CHECK(slots.dim() == 1, "sam2rl_fast: slots must be [Nt] (every sequence's memories, "
              "packed), got ", shape(slots));
  TORCH_CHECK(shape(tslots) == shape(slots), "sam2rl_fast: tslots must have the shape of slots ",
              shape(slots), ", got ", shape(tslots));
  TORCH_CHECK(ptr_idx.dim() == 1, "sam2rl_fast: ptr_idx must be [Pt] (every sequence's pointers, "
              "packed), got ", shape(ptr_idx));
  TORCH_CHECK(ptr_pos.dim() == 2 && ptr_pos.size(0) == ptr_idx.size(0) && ptr_pos.size(1) == C,
              "sam2rl_fast: ptr_pos must be [Pt, C] = [", num(ptr_idx.size(0)), ", ", num(C),
              "], got ", shape(ptr_pos));
  const auto cu_type = cu_mems.scalar_type();
  TORCH_CHECK(cu_type == at::kInt || cu_type == at::kLong, "sam2rl_fast: cu_mems must be int32 "
              "or int64, got ", cu_type);
  TORCH_CHECK(cu_ptrs.scalar_type() == cu_type, "sam2rl_fast: cu_ptrs must have the dtype of "
              "cu_mems (", cu_type, "), got ", cu_ptrs.scalar_type());
  for (const auto& [t, name] : {std::pair{&cu_mems, "cu_mems"}, {&cu_ptrs, "cu_ptrs"}}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == L + 1, "sam2rl_fast: ", name, " must be [L + 1] = [",
                num(L + 1), "] (L = ", objects.has_value() ? "len(objects)" : "B without objects",
                "), got ", shape(*t));
  }
  TORCH_CHECK(L > 0 || (slots.size(0) == 0 && ptr_idx.size(0) == 0), "sam2rl_fast: no sequences "
              "(L = 0) but ", num(slots.size(0)), " memories and ", num(ptr_idx.size(0)), " pointers");
  const int64_t rows = gather_num_rows(HW, slots.size(0), ptr_idx.size(0), ptrs.size(2) / C);
  TORCH_CHECK(cu_type == at::kLong || rows <= std::numeric_limits<int32_t>::max(),
              "sam2rl_fast: ", num(rows), " packed rows overflow int32 offsets: pass int64 cu_mems");
  for (const auto& [t, name] : {std::pair{&spatial_pos, "spatial_pos"}, {&temporal_pos, "temporal_pos"},
                                {&slots, "slots"}, {&tslots, "tslots"}, {&cu_mems, "cu_mems"},
                                {&ptrs, "ptrs"}, {&ptr_idx, "ptr_idx"}, {&ptr_pos, "ptr_pos"},
                                {&cu_ptrs, "cu_ptrs"}}) {
    check_same_device(bank, *t, name);
  }
}

namespace {

template <typename bank_t, typename mem_t>
void append_kernel_cpu(bank_t* bank, const mem_t* mem, const int64_t* slots, const float* score,
                       const float* embed, int64_t B, int64_t S, int64_t HW, int64_t C) {
  // [B, C, HW] -> [B, slot, HW, C]: a transpose, tiled so both sides stay in cache.
  constexpr int64_t kTile = 32;
  const int64_t n_ttiles = (HW + kTile - 1) / kTile;
  const std::vector<float> zeros(C, 0.0f);  // SAM 2.0: nothing to add (w = 0)
  at::parallel_for(0, B * n_ttiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t job = begin; job < end; ++job) {
      const int64_t b = job / n_ttiles, t0 = (job % n_ttiles) * kTile;
      const int64_t slot = slots[b];
      if (slot < 0) continue;  // this object does not store its memory
      const float w = embed ? no_obj_weight(score[b]) : 0.0f;
      const float* embed_row = embed ? embed : zeros.data();
      const int64_t t1 = std::min(t0 + kTile, HW);
      bank_t* dst = bank + (b * S + slot) * HW * C;
      const mem_t* src = mem + b * C * HW;
      float tile[kTile][kTile + 1];
      for (int64_t c0 = 0; c0 < C; c0 += kTile) {
        const int64_t c1 = std::min(c0 + kTile, C);
        // Read rows of `mem` contiguously (along HW) into a small tile ...
        for (int64_t c = c0; c < c1; ++c) {
          const mem_t* row = src + c * HW;
          for (int64_t t = t0; t < t1; ++t) tile[c - c0][t - t0] = static_cast<float>(row[t]);
        }
        // ... and write the bank contiguously (along C).
        for (int64_t t = t0; t < t1; ++t) {
          bank_t* out = dst + t * C;
          for (int64_t c = c0; c < c1; ++c) {
            out[c] = static_cast<bank_t>(append_value(tile[c - c0][t - t0], w, embed_row[c]));
          }
        }
      }
    }
  });
}

void memory_append_cpu(at::Tensor& bank, const at::Tensor& mem_in, const at::Tensor& slots_in,
                       const at::Tensor& score_in, const std::optional<at::Tensor>& embed_in) {
  check_append_args(bank, mem_in, slots_in, score_in, embed_in);
  const int64_t B = bank.size(0), S = bank.size(1), HW = bank.size(2), C = bank.size(3);
  check_range_cpu(slots_in, S, "slots", /*allow_skip=*/true);
  const auto mem = mem_in.contiguous();
  const auto slots = slots_in.contiguous();
  const auto score = score_in.contiguous();
  at::Tensor embed;
  if (embed_in.has_value()) embed = embed_in->contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, bank.scalar_type(), "memory_append_bank", [&] {
    using bank_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, mem.scalar_type(), "memory_append_mem", [&] {
      append_kernel_cpu<bank_t, scalar_t>(
          bank.data_ptr<bank_t>(), mem.const_data_ptr<scalar_t>(), slots.const_data_ptr<int64_t>(),
          score.const_data_ptr<float>(), embed.defined() ? embed.const_data_ptr<float>() : nullptr,
          B, S, HW, C);
    });
  });
}

template <typename bank_t, typename out_t>
void gather_kernel_cpu(const bank_t* bank, const float* spos, const float* tpos,
                       const int64_t* slots, const int64_t* tslots, const out_t* ptrs,
                       const int64_t* ptr_idx, const float* ptr_pos, out_t* memory,
                       float* memory_pos, int64_t B, int64_t S, int64_t HW, int64_t C, int64_t N,
                       int64_t R, int64_t D, int64_t P) {
  const int64_t split = D / C;
  const int64_t M = gather_num_rows(HW, N, P, split);
  at::parallel_for(0, M, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const RowSource src = gather_row_source(row, HW, N, split);
      for (int64_t b = 0; b < B; ++b) {
        out_t* dst = memory + (row * B + b) * C;
        float* pdst = memory_pos + (row * B + b) * C;
        if (src.spatial) {
          const int64_t s = slots[b * N + src.item], ts = tslots[b * N + src.item];
          const bank_t* m = bank + ((b * S + s) * HW + src.offset) * C;
          const float* sp = spos + src.offset * C;
          const float* tp = tpos + ts * C;
          for (int64_t c = 0; c < C; ++c) {
            dst[c] = static_cast<out_t>(static_cast<float>(m[c]));
            pdst[c] = sp[c] + tp[c];
          }
        } else {
          const int64_t p = ptr_idx[b * P + src.item];
          const out_t* m = ptrs + (b * R + p) * D + src.offset * C;
          const float* pp = ptr_pos + (b * P + src.item) * C;
          for (int64_t c = 0; c < C; ++c) {
            dst[c] = m[c];
            pdst[c] = pp[c];
          }
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> memory_gather_cpu(
    const at::Tensor& bank_in, const at::Tensor& spos_in, const at::Tensor& tpos_in,
    const at::Tensor& slots_in, const at::Tensor& tslots_in, const at::Tensor& ptrs_in,
    const at::Tensor& ptr_idx_in, const at::Tensor& ptr_pos_in, at::ScalarType out_dtype) {
  check_gather_args(bank_in, spos_in, tpos_in, slots_in, tslots_in, ptrs_in, ptr_idx_in,
                    ptr_pos_in, out_dtype);
  const int64_t B = bank_in.size(0), S = bank_in.size(1), HW = bank_in.size(2), C = bank_in.size(3);
  const int64_t N = slots_in.size(1), R = ptrs_in.size(1), D = ptrs_in.size(2), P = ptr_idx_in.size(1);
  check_range_cpu(slots_in, S, "slots", false);
  check_range_cpu(tslots_in, tpos_in.size(0), "tslots", false);
  check_range_cpu(ptr_idx_in, R, "ptr_idx", false);
  const auto bank = bank_in.contiguous();
  const auto spos = spos_in.contiguous();
  const auto tpos = tpos_in.contiguous();
  const auto slots = slots_in.contiguous();
  const auto tslots = tslots_in.contiguous();
  const auto ptrs = ptrs_in.to(out_dtype).contiguous();  // [B, R, D]: a few KiB
  const auto ptr_idx = ptr_idx_in.contiguous();
  const auto ptr_pos = ptr_pos_in.contiguous();
  const int64_t M = gather_num_rows(HW, N, P, D / C);
  auto memory = at::empty({M, B, C}, bank.options().dtype(out_dtype));
  auto memory_pos = at::empty({M, B, C}, spos.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, bank.scalar_type(), "memory_gather_bank", [&] {
    using bank_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out_dtype, "memory_gather_out", [&] {
      gather_kernel_cpu<bank_t, scalar_t>(
          bank.const_data_ptr<bank_t>(), spos.const_data_ptr<float>(), tpos.const_data_ptr<float>(),
          slots.const_data_ptr<int64_t>(), tslots.const_data_ptr<int64_t>(),
          ptrs.const_data_ptr<scalar_t>(), ptr_idx.const_data_ptr<int64_t>(),
          ptr_pos.const_data_ptr<float>(), memory.data_ptr<scalar_t>(),
          memory_pos.data_ptr<float>(), B, S, HW, C, N, R, D, P);
    });
  });
  return {memory, memory_pos};
}

template <typename bank_t, typename out_t, typename idx_t>
void gather_varlen_kernel_cpu(const bank_t* bank, const float* spos, const float* tpos,
                              const int64_t* objects, const int64_t* slots, const int64_t* tslots,
                              const idx_t* cu_mems, const out_t* ptrs, const int64_t* ptr_idx,
                              const float* ptr_pos, const idx_t* cu_ptrs, const idx_t* cu_seqlens,
                              out_t* memory, float* memory_pos, int64_t L, int64_t S, int64_t HW,
                              int64_t C, int64_t R, int64_t D, int64_t rows) {
  const int64_t split = D / C;
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t seq = varlen_find_sequence(cu_seqlens, L, row);
      const VarlenSource src = varlen_row_source(row, seq, cu_mems, cu_ptrs, HW, split);
      const int64_t b = objects ? objects[seq] : seq;  // offsets and indices checked up front
      out_t* dst = memory + row * C;
      float* pdst = memory_pos + row * C;
      if (src.spatial) {
        const bank_t* m = bank + ((b * S + slots[src.index]) * HW + src.offset) * C;
        const float* sp = spos + src.offset * C;
        const float* tp = tpos + tslots[src.index] * C;
        for (int64_t c = 0; c < C; ++c) {
          dst[c] = static_cast<out_t>(static_cast<float>(m[c]));
          pdst[c] = sp[c] + tp[c];
        }
      } else {
        const out_t* m = ptrs + (b * R + ptr_idx[src.index]) * D + src.offset * C;
        const float* pp = ptr_pos + src.index * C;
        for (int64_t c = 0; c < C; ++c) {
          dst[c] = m[c];
          pdst[c] = pp[c];
        }
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> memory_gather_varlen_cpu(
    const at::Tensor& bank_in, const at::Tensor& spos_in, const at::Tensor& tpos_in,
    const std::optional<at::Tensor>& objects_in, const at::Tensor& slots_in,
    const at::Tensor& tslots_in, const at::Tensor& cu_mems_in, const at::Tensor& ptrs_in,
    const at::Tensor& ptr_idx_in, const at::Tensor& ptr_pos_in, const at::Tensor& cu_ptrs_in,
    at::ScalarType out_dtype) {
  check_gather_varlen_args(bank_in, spos_in, tpos_in, objects_in, slots_in, tslots_in, cu_mems_in,
                           ptrs_in, ptr_idx_in, ptr_pos_in, cu_ptrs_in, out_dtype);
  const int64_t B = bank_in.size(0), S = bank_in.size(1), HW = bank_in.size(2), C = bank_in.size(3);
  const int64_t R = ptrs_in.size(1), D = ptrs_in.size(2), L = cu_mems_in.size(0) - 1;
  const int64_t Nt = slots_in.size(0), Pt = ptr_idx_in.size(0);
  if (objects_in.has_value()) check_range_cpu(*objects_in, B, "objects", false);
  check_range_cpu(slots_in, S, "slots", false);
  check_range_cpu(tslots_in, tpos_in.size(0), "tslots", false);
  check_range_cpu(ptr_idx_in, R, "ptr_idx", false);
  check_offsets_cpu(cu_mems_in, Nt, "cu_mems", "slots");
  check_offsets_cpu(cu_ptrs_in, Pt, "cu_ptrs", "ptr_idx");
  const auto bank = bank_in.contiguous();
  const auto spos = spos_in.contiguous();
  const auto tpos = tpos_in.contiguous();
  at::Tensor objects;
  if (objects_in.has_value()) objects = objects_in->contiguous();
  const auto slots = slots_in.contiguous();
  const auto tslots = tslots_in.contiguous();
  const auto cu_mems = cu_mems_in.contiguous();
  const auto ptrs = ptrs_in.to(out_dtype).contiguous();  // [B, R, D]: a few KiB
  const auto ptr_idx = ptr_idx_in.contiguous();
  const auto ptr_pos = ptr_pos_in.contiguous();
  const auto cu_ptrs = cu_ptrs_in.contiguous();
  const int64_t split = D / C;
  const auto cu_seqlens = cu_mems.mul(HW).add_(cu_ptrs.mul(split));  // [L + 1], dtype of cu_mems
  const int64_t M = gather_num_rows(HW, Nt, Pt, split);
  auto memory = at::empty({M, C}, bank.options().dtype(out_dtype));
  auto memory_pos = at::empty({M, C}, spos.options());
  AT_DISPATCH_INDEX_TYPES(cu_mems.scalar_type(), "memory_gather_varlen_idx", [&] {
    using idx_t = index_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, bank.scalar_type(), "memory_gather_varlen_bank", [&] {
      using bank_t = scalar_t;
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out_dtype, "memory_gather_varlen_out", [&] {
        gather_varlen_kernel_cpu<bank_t, scalar_t, idx_t>(
            bank.const_data_ptr<bank_t>(), spos.const_data_ptr<float>(), tpos.const_data_ptr<float>(),
            objects.defined() ? objects.const_data_ptr<int64_t>() : nullptr,
            slots.const_data_ptr<int64_t>(), tslots.const_data_ptr<int64_t>(),
            cu_mems.const_data_ptr<idx_t>(), ptrs.const_data_ptr<scalar_t>(),
            ptr_idx.const_data_ptr<int64_t>(), ptr_pos.const_data_ptr<float>(),
            cu_ptrs.const_data_ptr<idx_t>(), cu_seqlens.const_data_ptr<idx_t>(),
            memory.data_ptr<scalar_t>(), memory_pos.data_ptr<float>(), L, S, HW, C, R, D, M);
      });
    });
  });
  return {memory, memory_pos, cu_seqlens};
}

}  // namespace

TORCH_LIBRARY_IMPL(sam2rl_fast, CPU, m) {
  m.impl("memory_append", &memory_append_cpu);
  m.impl("memory_gather", &memory_gather_cpu);
  m.impl("memory_gather_varlen", &memory_gather_varlen_cpu);
}

}  // namespace memory_bank
}  // namespace sam2rl_fast
