// The extension module `sam2rl_fast._C`: every op schema, and build facts for Python.
#include <pybind11/pybind11.h>
#include <torch/library.h>

TORCH_LIBRARY(sam2rl_fast, m) {
  // Write memories `mem` [B, C, H, W] into `bank[b, slots[b]]` ([B, S, HW, C], token-major),
  // converting layout and dtype in one pass; slots[b] = -1 skips object b. With
  // `no_obj_embed` (SAM 2.1), it is added to memories whose obj_score <= 0.
  m.def("memory_append(Tensor(a!) bank, Tensor mem, Tensor slots, Tensor obj_score, "
        "Tensor? no_obj_embed) -> ()");
  // Build sam2's memory-attention inputs `memory`, `memory_pos` [M, B, C] with
  // M = N * HW + P * (D / C): N spatial memories then P object pointers, each split into
  // D / C tokens.
  m.def("memory_gather(Tensor bank, Tensor spatial_pos, Tensor temporal_pos, Tensor slots, "
        "Tensor tslots, Tensor ptrs, Tensor ptr_idx, Tensor ptr_pos, ScalarType out_dtype) "
        "-> (Tensor memory, Tensor memory_pos)");
  // The same rows for objects whose selections differ in size, packed without padding
  // (flash-attention's cu_seqlens pattern): sequence l reads bank row objects[l] (l itself
  // when objects is None), memories slots[cu_mems[l]:cu_mems[l+1]] and pointers
  // ptr_idx[cu_ptrs[l]:cu_ptrs[l+1]]; its rows [cu_seqlens[l], cu_seqlens[l+1]) of the
  // packed [total_M, C] outputs are what memory_gather gives that object alone.
  // total_M = len(slots) * HW + len(ptr_idx) * (D / C): a static size.
  m.def("memory_gather_varlen(Tensor bank, Tensor spatial_pos, Tensor temporal_pos, "
        "Tensor? objects, Tensor slots, Tensor tslots, Tensor cu_mems, Tensor ptrs, "
        "Tensor ptr_idx, Tensor ptr_pos, Tensor cu_ptrs, ScalarType out_dtype) "
        "-> (Tensor memory, Tensor memory_pos, Tensor cu_seqlens)");
  // Fused single-head RoPE attention (sam2 memory attention's core): q [B, Nq, D] and
  // k [B, M, D] unrotated, rotated on the fly (keys tiled over memory frames, the last
  // num_k_exclude_rope keys unrotated), v [B, M, Dv]. Returns out [B, Nq, Dv] and the
  // log-sum-exp [B, Nq] of the scaled scores.
  m.def("rope_attention(Tensor q, Tensor k, Tensor v, SymInt side, SymInt num_k_exclude_rope, "
        "float scale, float theta) -> (Tensor out, Tensor lse)");
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "sam2rl-fast compiled ops (registered as torch.ops.sam2rl_fast.*)";
#ifdef SAM2RL_FAST_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
