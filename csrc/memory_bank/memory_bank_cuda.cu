// CUDA kernels of the memory-bank ops. All are memory-bound copies: the work is to
// read and write each byte once, coalesced.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "memory_bank/memory_bank.h"
#include "memory_bank/memory_bank_math.h"

namespace sam2rl_fast {
namespace memory_bank {
namespace {

constexpr int kTile = 32;
constexpr int kRows = 8;

// [B, C, HW] -> bank[b, slot, HW, C]: a shared-memory tiled transpose so that both the
// read (along HW) and the write (along C) are coalesced.
template <typename bank_t, typename mem_t>
__global__ void append_kernel(bank_t* __restrict__ bank, const mem_t* __restrict__ mem,
                              const int64_t* __restrict__ slots, const float* __restrict__ score,
                              const float* __restrict__ embed, int64_t S, int64_t HW, int64_t C) {
  __shared__ float tile[kTile][kTile + 1];  // +1: no bank conflicts on the transposed read
  const int64_t b = blockIdx.z;
  const int64_t slot = slots[b];
  if (!index_in_range(slot, S)) return;  // -1: not stored; others were rejected on the host
  const float w = embed ? no_obj_weight(score[b]) : 0.0f;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const mem_t* src = mem + b * C * HW;
  for (int r = threadIdx.y; r < kTile; r += kRows) {
    const int64_t c = c0 + r, t = t0 + threadIdx.x;
    if (c < C && t < HW) tile[r][threadIdx.x] = static_cast<float>(src[c * HW + t]);
  }
  __syncthreads();
  bank_t* dst = bank + (b * S + slot) * HW * C;
  for (int r = threadIdx.y; r < kTile; r += kRows) {
    const int64_t t = t0 + r, c = c0 + threadIdx.x;
    if (c < C && t < HW) {
      const float e = embed ? embed[c] : 0.0f;
      dst[t * C + c] = static_cast<bank_t>(append_value(tile[threadIdx.x][r], w, e));
    }
  }
}

// One thread per output element of [M, B, C]: consecutive threads write consecutive
// channels and read consecutive channels of one bank token.
template <typename bank_t, typename out_t>
__global__ void gather_kernel(const bank_t* __restrict__ bank, const float* __restrict__ spos,
                              const float* __restrict__ tpos, const int64_t* __restrict__ slots,
                              const int64_t* __restrict__ tslots, const out_t* __restrict__ ptrs,
                              const int64_t* __restrict__ ptr_idx, const float* __restrict__ ptr_pos,
                              out_t* __restrict__ memory, float* __restrict__ memory_pos,
                              int64_t B, int64_t S, int64_t HW, int64_t C, int64_t N, int64_t T,
                              int64_t R, int64_t D, int64_t P, int64_t total) {
  const int64_t split = D / C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % C;
    const int64_t b = (i / C) % B;
    const int64_t row = i / (C * B);
    const RowSource src = gather_row_source(row, HW, N, split);
    float v, pv;
    if (src.spatial) {
      const int64_t s = slots[b * N + src.item], ts = tslots[b * N + src.item];
      if (index_in_range(s, S) && index_in_range(ts, T)) {
        v = static_cast<float>(bank[((b * S + s) * HW + src.offset) * C + c]);
        pv = spos[src.offset * C + c] + tpos[ts * C + c];
      } else {  // poisoned, never silently wrong
        v = pv = std::numeric_limits<float>::quiet_NaN();
      }
    } else {
      const int64_t p = ptr_idx[b * P + src.item];
      if (index_in_range(p, R)) {
        memory[i] = ptrs[(b * R + p) * D + src.offset * C + c];
        memory_pos[i] = ptr_pos[(b * P + src.item) * C + c];
        continue;
      }
      v = pv = std::numeric_limits<float>::quiet_NaN();
    }
    memory[i] = static_cast<out_t>(v);
    memory_pos[i] = pv;
  }
}

// One thread per element of the packed [total_M, C] outputs, as gather_kernel; each finds
// its sequence by binary search over the L + 1 row offsets (L is the number of objects).
template <typename bank_t, typename out_t, typename idx_t>
__global__ void gather_varlen_kernel(
    const bank_t* __restrict__ bank, const float* __restrict__ spos, const float* __restrict__ tpos,
    const int64_t* __restrict__ objects, const int64_t* __restrict__ slots,
    const int64_t* __restrict__ tslots, const idx_t* __restrict__ cu_mems,
    const out_t* __restrict__ ptrs, const int64_t* __restrict__ ptr_idx,
    const float* __restrict__ ptr_pos, const idx_t* __restrict__ cu_ptrs,
    const idx_t* __restrict__ cu_seqlens, out_t* __restrict__ memory, float* __restrict__ memory_pos,
    int64_t L, int64_t B, int64_t S, int64_t HW, int64_t C, int64_t T, int64_t R, int64_t D,
    int64_t Nt, int64_t Pt, int64_t total) {
  const int64_t split = D / C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % C, row = i / C;
    const int64_t seq = varlen_find_sequence(cu_seqlens, L, row);
    const VarlenSource src = varlen_row_source(row, seq, cu_mems, cu_ptrs, HW, split);
    const int64_t b = objects ? objects[seq] : seq;
    // Every index is checked: offsets or indices that slipped past the host checks
    // poison the row (NaN) instead of reading out of bounds.
    float v = std::numeric_limits<float>::quiet_NaN(), pv = v;
    if (src.valid && index_in_range(b, B)) {
      if (src.spatial) {
        if (index_in_range(src.index, Nt)) {
          const int64_t s = slots[src.index], ts = tslots[src.index];
          if (index_in_range(s, S) && index_in_range(ts, T)) {
            v = static_cast<float>(bank[((b * S + s) * HW + src.offset) * C + c]);
            pv = spos[src.offset * C + c] + tpos[ts * C + c];
          }
        }
      } else if (index_in_range(src.index, Pt)) {
        const int64_t p = ptr_idx[src.index];
        if (index_in_range(p, R)) {
          memory[i] = ptrs[(b * R + p) * D + src.offset * C + c];
          memory_pos[i] = ptr_pos[src.index * C + c];
          continue;
        }
      }
    }
    memory[i] = static_cast<out_t>(v);
    memory_pos[i] = pv;
  }
}

int num_blocks(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535 * 8));
}

void memory_append_cuda(at::Tensor& bank, const at::Tensor& mem_in, const at::Tensor& slots_in,
                        const at::Tensor& score_in, const std::optional<at::Tensor>& embed_in) {
  check_append_args(bank, mem_in, slots_in, score_in, embed_in);
  const c10::cuda::CUDAGuard guard(bank.device());
  const int64_t B = bank.size(0), S = bank.size(1), HW = bank.size(2), C = bank.size(3);
  if (B == 0 || HW == 0 || C == 0) return;
  TORCH_CHECK(B <= 65535, "sam2rl_fast: at most 65535 objects per append");
  const auto mem = mem_in.contiguous();
  const auto slots = slots_in.contiguous();
  const auto score = score_in.contiguous();
  at::Tensor embed;
  if (embed_in.has_value()) embed = embed_in->contiguous();
  const dim3 grid((HW + kTile - 1) / kTile, (C + kTile - 1) / kTile, B);
  const dim3 block(kTile, kRows);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, bank.scalar_type(), "memory_append_bank", [&] {
    using bank_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, mem.scalar_type(), "memory_append_mem", [&] {
      append_kernel<bank_t, scalar_t><<<grid, block, 0, stream>>>(
          bank.data_ptr<bank_t>(), mem.const_data_ptr<scalar_t>(), slots.const_data_ptr<int64_t>(),
          score.const_data_ptr<float>(), embed.defined() ? embed.const_data_ptr<float>() : nullptr,
          S, HW, C);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

std::tuple<at::Tensor, at::Tensor> memory_gather_cuda(
    const at::Tensor& bank_in, const at::Tensor& spos_in, const at::Tensor& tpos_in,
    const at::Tensor& slots_in, const at::Tensor& tslots_in, const at::Tensor& ptrs_in,
    const at::Tensor& ptr_idx_in, const at::Tensor& ptr_pos_in, at::ScalarType out_dtype) {
  check_gather_args(bank_in, spos_in, tpos_in, slots_in, tslots_in, ptrs_in, ptr_idx_in,
                    ptr_pos_in, out_dtype);
  const c10::cuda::CUDAGuard guard(bank_in.device());
  const int64_t B = bank_in.size(0), S = bank_in.size(1), HW = bank_in.size(2), C = bank_in.size(3);
  const int64_t N = slots_in.size(1), T = tpos_in.size(0), R = ptrs_in.size(1), D = ptrs_in.size(2);
  const int64_t P = ptr_idx_in.size(1);
  const auto bank = bank_in.contiguous();
  const auto spos = spos_in.contiguous();
  const auto tpos = tpos_in.contiguous();
  const auto slots = slots_in.contiguous();
  const auto tslots = tslots_in.contiguous();
  const auto ptrs = ptrs_in.to(out_dtype).contiguous();
  const auto ptr_idx = ptr_idx_in.contiguous();
  const auto ptr_pos = ptr_pos_in.contiguous();
  const int64_t M = gather_num_rows(HW, N, P, D / C);
  auto memory = at::empty({M, B, C}, bank.options().dtype(out_dtype));
  auto memory_pos = at::empty({M, B, C}, spos.options());
  const int64_t total = M * B * C;
  if (total == 0) return {memory, memory_pos};
  constexpr int kThreads = 256;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, bank.scalar_type(), "memory_gather_bank", [&] {
    using bank_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out_dtype, "memory_gather_out", [&] {
      gather_kernel<bank_t, scalar_t><<<num_blocks(total, kThreads), kThreads, 0, stream>>>(
          bank.const_data_ptr<bank_t>(), spos.const_data_ptr<float>(), tpos.const_data_ptr<float>(),
          slots.const_data_ptr<int64_t>(), tslots.const_data_ptr<int64_t>(),
          ptrs.const_data_ptr<scalar_t>(), ptr_idx.const_data_ptr<int64_t>(),
          ptr_pos.const_data_ptr<float>(), memory.data_ptr<scalar_t>(),
          memory_pos.data_ptr<float>(), B, S, HW, C, N, T, R, D, P, total);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {memory, memory_pos};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> memory_gather_varlen_cuda(
    const at::Tensor& bank_in, const at::Tensor& spos_in, const at::Tensor& tpos_in,
    const std::optional<at::Tensor>& objects_in, const at::Tensor& slots_in,
    const at::Tensor& tslots_in, const at::Tensor& cu_mems_in, const at::Tensor& ptrs_in,
    const at::Tensor& ptr_idx_in, const at::Tensor& ptr_pos_in, const at::Tensor& cu_ptrs_in,
    at::ScalarType out_dtype) {
  check_gather_varlen_args(bank_in, spos_in, tpos_in, objects_in, slots_in, tslots_in, cu_mems_in,
                           ptrs_in, ptr_idx_in, ptr_pos_in, cu_ptrs_in, out_dtype);
  const c10::cuda::CUDAGuard guard(bank_in.device());
  const int64_t B = bank_in.size(0), S = bank_in.size(1), HW = bank_in.size(2), C = bank_in.size(3);
  const int64_t T = tpos_in.size(0), R = ptrs_in.size(1), D = ptrs_in.size(2);
  const int64_t L = cu_mems_in.size(0) - 1, Nt = slots_in.size(0), Pt = ptr_idx_in.size(0);
  const auto bank = bank_in.contiguous();
  const auto spos = spos_in.contiguous();
  const auto tpos = tpos_in.contiguous();
  at::Tensor objects;
  if (objects_in.has_value()) objects = objects_in->contiguous();
  const auto slots = slots_in.contiguous();
  const auto tslots = tslots_in.contiguous();
  const auto cu_mems = cu_mems_in.contiguous();
  const auto ptrs = ptrs_in.to(out_dtype).contiguous();
  const auto ptr_idx = ptr_idx_in.contiguous();
  const auto ptr_pos = ptr_pos_in.contiguous();
  const auto cu_ptrs = cu_ptrs_in.contiguous();
  const int64_t split = D / C;
  const auto cu_seqlens = cu_mems.mul(HW).add_(cu_ptrs.mul(split));  // on the stream, no sync
  const int64_t M = gather_num_rows(HW, Nt, Pt, split);
  auto memory = at::empty({M, C}, bank.options().dtype(out_dtype));
  auto memory_pos = at::empty({M, C}, spos.options());
  const int64_t total = M * C;
  if (total == 0) return {memory, memory_pos, cu_seqlens};
  constexpr int kThreads = 256;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_INDEX_TYPES(cu_mems.scalar_type(), "memory_gather_varlen_idx", [&] {
    using idx_t = index_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, bank.scalar_type(), "memory_gather_varlen_bank", [&] {
      using bank_t = scalar_t;
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out_dtype, "memory_gather_varlen_out", [&] {
        gather_varlen_kernel<bank_t, scalar_t, idx_t><<<num_blocks(total, kThreads), kThreads, 0, stream>>>(
            bank.const_data_ptr<bank_t>(), spos.const_data_ptr<float>(), tpos.const_data_ptr<float>(),
            objects.defined() ? objects.const_data_ptr<int64_t>() : nullptr,
            slots.const_data_ptr<int64_t>(), tslots.const_data_ptr<int64_t>(),
            cu_mems.const_data_ptr<idx_t>(), ptrs.const_data_ptr<scalar_t>(),
            ptr_idx.const_data_ptr<int64_t>(), ptr_pos.const_data_ptr<float>(),
            cu_ptrs.const_data_ptr<idx_t>(), cu_seqlens.const_data_ptr<idx_t>(),
            memory.data_ptr<scalar_t>(), memory_pos.data_ptr<float>(), L, B, S, HW, C, T, R, D,
            Nt, Pt, total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return {memory, memory_pos, cu_seqlens};
}

}  // namespace

TORCH_LIBRARY_IMPL(sam2rl_fast, CUDA, m) {
  m.impl("memory_append", &memory_append_cuda);
  m.impl("memory_gather", &memory_gather_cuda);
  m.impl("memory_gather_varlen", &memory_gather_varlen_cuda);
}

}  // namespace memory_bank
}  // namespace sam2rl_fast
