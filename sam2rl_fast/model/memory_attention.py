"""`FastMemoryAttention`: a drop-in replacement for sam2's `MemoryAttention` (inference).

Same weights (shared, not copied), same `forward` signature and output as
`sam2.modeling.memory_attention.MemoryAttention`; the state dict keys are the stock ones,
so checkpoints load into either. What changes is how the 4 layers are computed:

- RoPE is real cos/sin arithmetic on adjacent channel pairs (stock goes through complex
  numbers); the tables are cached per grid side, device and dtype.
- Self-attention: one merged q/k projection (q and k share their input), then RoPE
  attention.
- Cross-attention uses the exact PV shortcut
  `out_proj(softmax(S) @ (m Wv^T + bv)) = (softmax(S) @ m) @ (Wo Wv)^T + (Wo bv + bo)`:
  attention runs on the raw 64-d memory instead of 256-d values (the PV product and the
  V projection over all M memory tokens drop out), followed by one merged 64 -> 256
  projection. The merged weights are computed once (in float64, then cast) and recomputed
  only when a weight changes (tracked by tensor version and storage, so `load_state_dict`,
  in-place updates and `.to()` are all seen).
- On the CPU in float32 both attention cores are the fused `sam2rl_fast::rope_attention`
  op (RoPE on the fly, online softmax, never a score matrix or a rotated copy of the
  keys; AVX-512 micro-kernels where the CPU has them): cross-attention with the 64-d
  memory as values, self-attention as one "memory frame" with 256-d values. Everywhere
  else (CUDA, other dtypes, autocast) it is an exact torch composite: the same real RoPE
  and `scaled_dot_product_attention` (with the 64-d V for cross-attention), the merged
  projection. The CUDA `rope_attention` kernel (one warp per query, no tensor cores) is
  ~50x slower than stock SDPA, so CUDA does not use it; a tensor-core split-KV kernel is
  pending.
- On the CPU in bfloat16 (under bf16 autocast, or bf16 inputs: `FastTracker(precision=
  "bf16")`) the attention cores are the same op on bf16 q, k, v with fp32 scores, softmax
  and accumulation (AVX512-BF16 micro-kernels where the CPU has them, else the fp32
  kernels on fp32 copies); the projections on oneDNN's bf16 linears (packed bf16 weights).
- On the CPU in float32 the projections and the MLP run through oneDNN's prepacked fp32
  linear when this torch has it (AVX-512 where present; ATen's `F.linear` goes to MKL,
  which runs AVX2 code on AMD CPUs), else through `F.linear`.

Inference only: when gradients are required (grad mode on and any input or weight
requires grad) or the module is in training mode (dropout), `forward` runs stock sam2's
own `MemoryAttention.forward` on the shared weights, so training and fine-tuning behave
exactly as before, just not faster. Run under `torch.no_grad()` / `torch.inference_mode()`
(as `SAM2VideoPredictor.propagate_in_video` does) to get the fast path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sam2rl_fast.model.cpu_linear import (
    PackedWeight,
    onednn_linear_available,
    packed_linear,
)
from sam2rl_fast.model.values_key import values_key
from sam2rl_fast.ops.rope import apply_rope, rope_tables
from sam2rl_fast.ops.rope_attention import rope_attention


def _stock_classes():
    from sam2.modeling.memory_attention import MemoryAttention
    from sam2.modeling.sam.transformer import RoPEAttention

    return MemoryAttention, RoPEAttention


def check_supported(stock: nn.Module, who: str = "this module", error: type = ValueError) -> None:
    """Raise unless `stock` is a sam2 MemoryAttention of the kind every released config
    builds (batch-first, one-head RoPE attention with theta 10000, internal dim = d_model),
    the kind both `FastMemoryAttention` and the ONNX export compute."""
    MemoryAttention, RoPEAttention = _stock_classes()
    if not isinstance(stock, MemoryAttention):
        raise TypeError(f"{who} needs a sam2 MemoryAttention, got "
                        f"{type(stock).__name__}")
    if not stock.batch_first:
        raise error(f"{who} supports sam2's batch_first=True "
                         "MemoryAttention only (every released config)")
    for i, layer in enumerate(stock.layers):
        for name in ("self_attn", "cross_attn_image"):
            attn = getattr(layer, name)
            if not isinstance(attn, RoPEAttention) or attn.num_heads != 1:
                raise error(f"layer {i}.{name}: {who} needs a one-head "
                                 f"RoPEAttention (every released sam2 config)")
        thetas = {getattr(a, "compute_cis").keywords.get("theta", 10000.0)
                  for a in (layer.self_attn, layer.cross_attn_image)}
        if thetas != {10000.0}:
            raise error(f"layer {i}: RoPE theta {sorted(thetas)}; {who} "
                             f"implements sam2's 10000 (every released config)")
        if layer.cross_attn_image.internal_dim != stock.d_model:
            raise error(f"layer {i}: cross-attention internal dim "
                             f"{layer.cross_attn_image.internal_dim} != d_model {stock.d_model}")


class FastMemoryAttention(nn.Module):
    """sam2 `MemoryAttention` with the PV shortcut and fused CPU attention kernels.

    Build it with `FastMemoryAttention.from_sam2(model.memory_attention)`; it shares the
    stock module's layers and final norm (see the module docstring for what is computed
    how, and when the stock forward is used instead).
    """

    def __init__(self, stock: nn.Module):
        super().__init__()
        check_supported(stock, who="FastMemoryAttention")
        # Same submodule names as stock: identical state_dict keys, shared parameters.
        self.layers = stock.layers
        self.norm = stock.norm
        self.d_model = stock.d_model
        self.num_layers = stock.num_layers
        self.pos_enc_at_input = stock.pos_enc_at_input
        self.batch_first = stock.batch_first
        self.mem_dim = stock.layers[0].cross_attn_image.kv_in_dim
        # Kept outside the module tree (it holds the same submodules): its forward is the
        # fallback when gradients are required or in training mode.
        self.__dict__["_stock"] = stock
        self.train(stock.training)
        self._merged: dict[int, tuple] = {}
        self._rope: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_sam2(cls, stock: nn.Module) -> "FastMemoryAttention":
        """Wrap a stock sam2 `MemoryAttention`, sharing its weights."""
        return cls(stock)

    # ---- precomputed tables -------------------------------------------------------------

    def _layer_weights(self, i: int, packed: bool) -> dict[str, "_Linear"]:
        """Per layer, every projection the fast path runs, keyed by name: self-attention
        q/k stacked ([2d, d], q and k share their input), v, out; cross-attention q, k and
        the merged out projection Wo Wv [d, C] with bias Wo bv + bo (float64 products);
        the MLP. With `packed`, also oneDNN's prepacked weights (CPU float32)."""
        layer = self.layers[i]
        sa, ca = layer.self_attn, layer.cross_attn_image
        lins = (sa.q_proj, sa.k_proj, sa.v_proj, sa.out_proj, ca.q_proj, ca.k_proj, ca.v_proj,
                ca.out_proj, layer.linear1, layer.linear2)
        key = (packed,) + values_key(*[t for m in lins for t in (m.weight, m.bias)])
        hit = self._merged.get(i)
        if hit is not None and hit[0] == key:
            return hit[1]
        val = {k: _Linear(w, b, packed) for k, (w, b) in merged_projections(layer).items()}
        self._merged[i] = (key, val)
        return val

    def _rope_tables(self, side: int, device, dtype):
        key = (side, str(device), dtype)
        if key not in self._rope:
            self._rope[key] = rope_tables(side, self.d_model, device=device, dtype=dtype)
        return self._rope[key]  # cos, sin [side*side, d/2]

    # ---- forward --------------------------------------------------------------------------

    def _check_inputs(self, curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens):
        tensors = {"curr": curr, "memory": memory, "curr_pos": curr_pos, "memory_pos": memory_pos}
        for name, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"FastMemoryAttention: {name} must be a tensor, got "
                                f"{type(t).__name__}")
            if t.dim() != 3:
                raise ValueError(f"FastMemoryAttention: {name} must be 3-D (sequence-first), got "
                                 f"shape {tuple(t.shape)}")
        Nq, B, d = curr.shape
        M = memory.shape[0]
        if curr_pos.shape != curr.shape:
            raise ValueError(f"FastMemoryAttention: curr_pos {tuple(curr_pos.shape)} must match "
                             f"curr {tuple(curr.shape)}")
        if d != self.d_model:
            raise ValueError(f"FastMemoryAttention: curr has {d} channels, the model {self.d_model}")
        if memory.shape[1:] != (B, self.mem_dim):
            raise ValueError(f"FastMemoryAttention: memory must be [M, {B}, {self.mem_dim}] "
                             f"(batch of curr, memory dim of the model), got {tuple(memory.shape)}")
        if M == 0:
            raise ValueError("FastMemoryAttention: memory is empty (sam2 adds no_mem_embed "
                             "instead of running memory attention without memories)")
        if memory_pos.shape != memory.shape:
            raise ValueError(f"FastMemoryAttention: memory_pos {tuple(memory_pos.shape)} must "
                             f"match memory {tuple(memory.shape)}")
        side = math.isqrt(Nq)
        if side * side != Nq:
            raise ValueError(f"FastMemoryAttention: memory attention needs a square grid, got "
                             f"{Nq} query tokens")
        n_ptr = int(num_obj_ptr_tokens)
        per_ptr = self.d_model // self.mem_dim
        if n_ptr < 0 or n_ptr > M or n_ptr % per_ptr:
            raise ValueError(f"FastMemoryAttention: num_obj_ptr_tokens={n_ptr} must be a multiple "
                             f"of {per_ptr} (tokens per object pointer) in [0, M={M}]")
        if (M - n_ptr) % Nq:
            raise ValueError(f"FastMemoryAttention: the {M - n_ptr} spatial memory tokens are not a "
                             f"whole number of memory frames of {Nq} tokens")
        weight = self.norm.weight
        devices = {t.device for t in tensors.values()} | {weight.device}
        if len(devices) > 1:
            raise ValueError("FastMemoryAttention: inputs and weights must be on one device, got "
                             + ", ".join(f"{n} on {t.device}" for n, t in tensors.items())
                             + f", weights on {weight.device}")
        for name, t in tensors.items():
            if not t.is_floating_point():
                raise TypeError(f"FastMemoryAttention: {name} must be floating point, got {t.dtype}")
        autocast = torch.is_autocast_enabled(curr.device.type)
        dtypes = {t.dtype for t in tensors.values()} | {weight.dtype}
        if len(dtypes) > 1 and not autocast:
            raise TypeError("FastMemoryAttention: inputs and weights must share a dtype (or run "
                            "under autocast), got "
                            + ", ".join(f"{n} {t.dtype}" for n, t in tensors.items())
                            + f", weights {weight.dtype}")
        return side, n_ptr, autocast

    def forward(
        self,
        curr: torch.Tensor | list,  # [Nq, B, d] (or a one-element list, as stock)
        memory: torch.Tensor,  # [M, B, C]: spatial memory tokens, then pointer tokens
        curr_pos: torch.Tensor | list | None = None,  # [Nq, B, d]
        memory_pos: torch.Tensor | None = None,  # [M, B, C]
        num_obj_ptr_tokens: int = 0,  # trailing memory tokens without RoPE
    ) -> torch.Tensor:
        """Returns `[Nq, B, d]`, equal to stock `MemoryAttention.forward`."""
        if isinstance(curr, list):
            if not isinstance(curr_pos, list) or len(curr) != 1 or len(curr_pos) != 1:
                raise ValueError("FastMemoryAttention: list inputs must be one-element lists "
                                 "curr=[x], curr_pos=[pos], as in stock sam2")
            curr, curr_pos = curr[0], curr_pos[0]
        if curr_pos is None or memory_pos is None:
            raise ValueError("FastMemoryAttention: curr_pos and memory_pos are required")
        side, n_ptr, autocast = self._check_inputs(curr, memory, curr_pos, memory_pos,
                                                   num_obj_ptr_tokens)
        if self.training or (torch.is_grad_enabled() and (
                any(t.requires_grad for t in (curr, memory, curr_pos, memory_pos))
                or any(p.requires_grad for p in self.parameters()))):
            return self._stock(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)
        cpu = curr.device.type == "cpu"
        # bf16 on the CPU (autocast to bf16, or bf16 inputs): the op's bf16 kernels
        bf16 = cpu and ((autocast and torch.get_autocast_dtype("cpu") == torch.bfloat16)
                        or (not autocast and curr.dtype == torch.bfloat16))
        fused = bf16 or (cpu and curr.dtype == torch.float32 and not autocast)
        return self._forward_fast(curr, memory, curr_pos, memory_pos, side, n_ptr, fused, bf16)

    def _forward_fast(self, curr, memory, curr_pos, memory_pos, side, n_ptr, fused, bf16=False):
        x = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        x = x.transpose(0, 1).contiguous()  # [B, Nq, d]
        qpos = curr_pos.transpose(0, 1)  # [B, Nq, d]
        mem = memory.transpose(0, 1).contiguous()  # [B, M, C]
        cos, sin = self._rope_tables(side, x.device, torch.float32 if fused else x.dtype)
        packed = fused and onednn_linear_available()  # oneDNN's linears (bf16 ones under autocast)

        def attend(q, k, v, cross):
            if bf16:  # the op in bf16 (fp32 accumulation); the projections ran under autocast
                q, k, v = q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16)
            if fused:  # self-attention: one "memory frame" (the grid itself), 256-d values
                return rope_attention(q, k, v, side, n_ptr if cross else 0)[0]
            if cross:
                return _composite_cross_attention(q, k, v, cos, sin, n_ptr)
            return F.scaled_dot_product_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)

        weights = [self._layer_weights(i, packed) for i in range(len(self.layers))]
        x = memory_attention_layers(x, qpos, mem, memory_pos.transpose(0, 1), self.layers,
                                    weights, attend)
        return self.norm(x).transpose(0, 1)  # [Nq, B, d]


@torch.no_grad()
def merged_projections(layer: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (weight [out, in], bias [out])} of every projection the one forward runs, from
    a stock MemoryAttentionLayer: self-attention q/k stacked ([2d, d]: q and k share their
    input), v, out; cross-attention q, k and the PV-shortcut projection Wo Wv [d, C] with
    bias Wo bv + bo (products in float64, then the weights' dtype); the MLP."""
    sa, ca = layer.self_attn, layer.cross_attn_image
    wo, wv = ca.out_proj.weight.double(), ca.v_proj.weight.double()
    dt = ca.out_proj.weight.dtype
    return {
        "sa_qk": (torch.cat([sa.q_proj.weight, sa.k_proj.weight], 0),
                  torch.cat([sa.q_proj.bias, sa.k_proj.bias], 0)),
        "sa_v": (sa.v_proj.weight, sa.v_proj.bias),
        "sa_out": (sa.out_proj.weight, sa.out_proj.bias),
        "ca_q": (ca.q_proj.weight, ca.q_proj.bias),
        "ca_k": (ca.k_proj.weight, ca.k_proj.bias),
        "ca_out": ((wo @ wv).to(dt),
                   (wo @ ca.v_proj.bias.double() + ca.out_proj.bias.double()).to(dt)),
        "mlp1": (layer.linear1.weight, layer.linear1.bias),
        "mlp2": (layer.linear2.weight, layer.linear2.bias),
    }


def memory_attention_layers(x, qpos, mem, mem_pos, layers, weights, attend):
    """The one forward of sam2's memory-attention layers (pre-norm; batch-first tensors).

    x [B, Nq, d] (curr, plus 0.1 curr_pos when the model adds it), qpos [B, Nq, d], mem and
    mem_pos [B, M, C]; `layers` give the norms, the positional-encoding flags and the
    activation of each stock layer; `weights[i]` its `merged_projections` as callables
    `f(x, relu=False)`; `attend(q, k, v, cross)` the attention core on projected, not yet
    rotated, q [B, Nq, d] and k [B, L, d]: the fused op, an SDPA composite, or an explicit
    softmax for ONNX. Cross-attention runs on the raw memory (the PV shortcut). Returns x
    before the final norm."""
    mem_k = None  # memory + memory_pos, built once for every layer that uses it
    for layer, w in zip(layers, weights):
        h = layer.norm1(x)
        qk = w["sa_qk"](h + qpos if layer.pos_enc_at_attn else h)
        d = qk.shape[-1] // 2  # slices, not chunk(): ONNX opset 17 has no Split(num_outputs)
        q, k = qk[..., :d], qk[..., d:]
        x = x + w["sa_out"](attend(q, k, w["sa_v"](h), False))
        h = layer.norm2(x)
        q = w["ca_q"](h + qpos if layer.pos_enc_at_cross_attn_queries else h)  # [B, Nq, d]
        if layer.pos_enc_at_cross_attn_keys:
            if mem_k is None:
                mem_k = mem + mem_pos
            k = w["ca_k"](mem_k)  # [B, M, d]
        else:
            k = w["ca_k"](mem)
        x = x + w["ca_out"](attend(q, k, mem, True))
        h = layer.norm3(x)
        if layer.activation is F.relu:
            h = w["mlp1"](h, relu=True)
        else:
            h = layer.activation(w["mlp1"](h))
        x = x + w["mlp2"](h)
    return x


class _Linear:
    """y = x W^T + b (then ReLU), through oneDNN's prepacked fp32 kernels when `packed`
    (see `sam2rl_fast.model.cpu_linear`: ~2x ATen's MKL path on AMD CPUs, same arithmetic)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, packed: bool):
        self.weight, self.bias = weight, bias  # [out, in], [out]
        self.cache = PackedWeight() if packed else None

    def __call__(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        act = "relu" if relu else "none"
        if self.cache is not None:
            return packed_linear(x, self.weight, self.bias, self.cache, act)
        y = F.linear(x, self.weight, self.bias)
        return F.relu(y) if relu else y


def _composite_cross_attention(
    q: torch.Tensor,  # [B, Nq, d] projected queries
    k: torch.Tensor,  # [B, M, d] projected keys
    v: torch.Tensor,  # [B, M, C] raw memory
    cos: torch.Tensor,  # [Nq, d/2]
    sin: torch.Tensor,  # [Nq, d/2]
    n_ptr: int,
) -> torch.Tensor:
    """softmax(rope(q) rope(k)^T / sqrt(d)) v with plain torch ops (any device and dtype)."""
    B, Nq, d = q.shape
    n_rope = k.shape[1] - n_ptr
    # Key i takes the rotation of query position i mod Nq: rotate [B, frames, Nq, d] with
    # the [Nq, d/2] tables broadcast over frames instead of materialising tiled tables.
    k_rope = apply_rope(k[:, :n_rope].unflatten(1, (n_rope // Nq, Nq)), cos, sin).flatten(1, 2)
    k = torch.cat([k_rope, k[:, n_rope:]], dim=1)
    return F.scaled_dot_product_attention(apply_rope(q, cos, sin), k, v.to(q.dtype))  # [B, Nq, C]
