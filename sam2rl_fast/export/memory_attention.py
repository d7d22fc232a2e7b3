"""SAM 2's memory attention as an ONNX model (export, runner and CLI hooks).

Stock sam2 rotates queries and keys through complex numbers (`torch.polar`,
`view_as_complex`), which `torch.onnx` cannot export (sam2 issues #186, #702).
`ExportableMemoryAttention` is the same function written with real arithmetic:

- RoPE rotates adjacent channel pairs (2p, 2p+1) by the angles of sam2's axial tables,
  `(a, b) -> (a cos - b sin, a sin + b cos)`, with cos/sin computed once in float32 by
  torch exactly as sam2 computes them and stored in the graph as constants.
- Memory keys take the rotation of query position `i mod Nq` (sam2 tiles the query table
  over memory frames); the last `num_obj_ptr_tokens` keys are not rotated. Both are
  computed in the graph from `arange(M)` and the pointer count, so one exported file
  serves any number of memory frames and pointers (a `Where` keeps the pointer keys
  bit-identical instead of rotating them by a zero angle).
- Cross-attention uses the exact PV shortcut (V carries no RoPE and softmax rows sum to 1):
  `out_proj(softmax(S) @ (m Wv^T + bv)) = (softmax(S) @ m) @ (Wo Wv)^T + (Wo bv + bo)`,
  so the PV product runs on the 64-d memory (merged weights computed in float64).

Graph inputs (sequence-first, like `MemoryAttention.forward`): `curr [Nq, B, d]`,
`memory [M, B, C]`, `curr_pos [Nq, B, d]`, `memory_pos [M, B, C]`,
`num_obj_ptr_tokens` (int64 scalar); output `pix_feat_with_mem [Nq, B, d]`. Nq = grid^2
is fixed at export (the RoPE tables depend on it); B and M are dynamic.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path

import torch
from torch import nn

from sam2rl_fast.export.memory_attention_runtime import (  # noqa: F401 - re-exported
    INPUT_MEANINGS,
    INPUT_NAMES,
    OUTPUT_MEANINGS,
    OUTPUT_NAMES,
    OnnxMemoryAttention,
    OnnxMemoryAttentionError,
    read_metadata,
)
from sam2rl_fast.export.onnx_common import quiet_exporter
from sam2rl_fast.model.memory_attention import (
    check_supported,
    memory_attention_layers,
    merged_projections,
)
from sam2rl_fast.ops.rope import apply_rope, rope_tables
from sam2rl_fast.runtime.onnx_session import default_providers  # noqa: F401 - re-exported

# ---- the exportable module ----------------------------------------------------------------


def _stock_memory_attention(obj) -> tuple[nn.Module, object]:
    """(MemoryAttention, owning SAM2Base or None) of a sam2 model or MemoryAttention."""
    from sam2.modeling.memory_attention import MemoryAttention
    from sam2.modeling.sam2_base import SAM2Base

    if isinstance(obj, SAM2Base):
        return obj.memory_attention, obj
    if isinstance(obj, MemoryAttention):
        return obj, None
    raise TypeError(f"expected a sam2 model (SAM2Base) or its MemoryAttention, got "
                    f"{type(obj).__name__}")


def _check_grid(grid) -> int:
    if isinstance(grid, (tuple, list)):
        if len(grid) != 2 or grid[0] != grid[1]:
            raise OnnxMemoryAttentionError(
                f"memory attention needs a square feature grid (sam2 builds its RoPE tables "
                f"for side = sqrt(Nq)), got {tuple(grid)}")
        grid = grid[0]
    if int(grid) != grid or grid < 1:
        raise OnnxMemoryAttentionError(f"grid side must be a positive integer, got {grid!r}")
    return int(grid)


class _Proj(nn.Linear):
    """A copied projection, called as `memory_attention_layers` calls its weights."""

    def forward(self, x, relu: bool = False):
        y = super().forward(x)
        return torch.relu(y) if relu else y


class _Layer(nn.Module):
    """One MemoryAttentionLayer's norms, flags and `merged_projections`, copied."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (copy.deepcopy(n) for n in
                                              (layer.norm1, layer.norm2, layer.norm3))
        self.activation = layer.activation
        self.pos_enc_at_attn = layer.pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = layer.pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = layer.pos_enc_at_cross_attn_keys
        self.proj = nn.ModuleDict()
        for name, (w, b) in merged_projections(layer).items():
            lin = _Proj(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            self.proj[name] = lin


def _attend(q, k, v, scale: float):
    # Explicit softmax(q k^T) v: exports to MatMul/Softmax at any opset.
    return torch.softmax((q * scale) @ k.transpose(-1, -2), dim=-1) @ v


class ExportableMemoryAttention(nn.Module):
    """sam2 `MemoryAttention` (eval) for a fixed square grid, with real-arithmetic RoPE.

    Build with `ExportableMemoryAttention.from_sam2(model.memory_attention, grid=64)`; the
    weights are copied (later changes to the stock module are not seen). It runs the one
    forward of `sam2rl_fast.model.memory_attention` with an explicit-softmax core.
    `forward(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)` takes the pointer
    count as an int64 tensor (so it stays a graph input) and returns `[Nq, B, d]`.
    """

    def __init__(self, stock: nn.Module, grid):
        super().__init__()
        stock, _ = _stock_memory_attention(stock)
        check_supported(stock, who="ONNX export", error=OnnxMemoryAttentionError)
        self.grid = _check_grid(grid)
        self.d_model = stock.d_model
        self.mem_dim = stock.layers[0].cross_attn_image.kv_in_dim
        self.pos_enc_at_input = stock.pos_enc_at_input
        self.layers = nn.ModuleList(_Layer(layer) for layer in stock.layers)
        self.norm = copy.deepcopy(stock.norm)
        cos, sin = rope_tables(self.grid, self.d_model)  # [Nq, d/2], float32 as sam2
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.eval()

    @classmethod
    def from_sam2(cls, memory_attention: nn.Module, grid) -> ExportableMemoryAttention:
        return cls(memory_attention, grid)

    def forward(self, curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens):
        scale = self.d_model ** -0.5
        Nq, M = self.cos.shape[0], memory.shape[0]
        cos, sin = self.cos, self.sin
        # Key rotation tables: key i uses query position i mod Nq; pointer keys stay as they are.
        idx = torch.arange(M, device=memory.device)
        cos_k, sin_k = cos[idx % Nq], sin[idx % Nq]  # [M, d/2]
        is_spatial = (idx < M - num_obj_ptr_tokens).unsqueeze(-1)  # [M, 1]

        def attend(q, k, v, cross):
            q = apply_rope(q, cos, sin)
            if cross:  # a Where keeps pointer keys bit-identical (no rotation by angle 0)
                k = torch.where(is_spatial, apply_rope(k, cos_k, sin_k), k)
            else:
                k = apply_rope(k, cos, sin)
            return _attend(q, k, v, scale)

        x = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        x = memory_attention_layers(x.transpose(0, 1), curr_pos.transpose(0, 1),
                                    memory.transpose(0, 1), memory_pos.transpose(0, 1),
                                    self.layers, [layer.proj for layer in self.layers], attend)
        return self.norm(x).transpose(0, 1)


# ---- export ---------------------------------------------------------------------------------


def _grid_for(owner, image_size, grid) -> int:
    if grid is not None:
        return _check_grid(grid)
    stride = getattr(owner, "backbone_stride", 16)
    if image_size is None:
        if owner is None:
            raise OnnxMemoryAttentionError("exporting a bare MemoryAttention needs image_size "
                                           "(or grid): the RoPE tables depend on the grid")
        image_size = owner.image_size
    if int(image_size) != image_size or image_size <= 0 or image_size % stride:
        raise OnnxMemoryAttentionError(f"image_size must be a positive multiple of the backbone "
                                       f"stride {stride}, got {image_size!r}")
    return int(image_size) // stride


def _example_inputs(m: ExportableMemoryAttention, frames=2, n_ptr=8, batch=2):
    # Sizes other than 0/1 so that the exporter keeps B and M symbolic.
    Nq, d, C = m.grid ** 2, m.d_model, m.mem_dim
    g = torch.Generator().manual_seed(0)
    M = frames * Nq + n_ptr
    return (torch.randn(Nq, batch, d, generator=g), torch.randn(M, batch, C, generator=g),
            torch.randn(Nq, batch, d, generator=g), torch.randn(M, batch, C, generator=g),
            torch.tensor(n_ptr, dtype=torch.int64))


def export_memory_attention(model_or_memory_attention, path, *, image_size: int | None = None,
                            opset: int = 17, overwrite: bool = False,
                            config_name: str | None = None, grid=None) -> Path:
    """Write sam2's memory attention as ONNX to `path` and return the path.

    `model_or_memory_attention` is a sam2 model (SAM2Base / SAM2VideoPredictor; image_size
    defaults to the model's) or its `MemoryAttention` (image_size or grid required).
    The graph has dynamic batch and memory length, a float32 output equal to stock
    `MemoryAttention.forward`, and metadata_props describing it (see `read_metadata`).
    """
    import onnx

    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    if int(opset) < 17:
        raise OnnxMemoryAttentionError(f"opset {opset} < 17 is not supported (LayerNormalization "
                                       "and the exporter need 17+)")
    stock, owner = _stock_memory_attention(model_or_memory_attention)
    side = _grid_for(owner, image_size, grid)
    module = ExportableMemoryAttention.from_sam2(stock, side).float().cpu()
    if owner is not None and image_size is None:
        image_size = owner.image_size
    if image_size is None:
        image_size = side * 16

    batch, mem_len = torch.export.Dim("batch"), torch.export.Dim("memory_length")
    dyn = {"curr": {1: batch}, "memory": {0: mem_len, 1: batch}, "curr_pos": {1: batch},
           "memory_pos": {0: mem_len, 1: batch}, "num_obj_ptr_tokens": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target, then moved into place: a failed export leaves no file.
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    try:
        with torch.no_grad(), quiet_exporter():
            # torchlib implements opset 18 ops; the exporter converts the graph down to the
            # requested opset (checked below) and logs that it does.
            prog = torch.onnx.export(module, _example_inputs(module), dynamo=True,
                                     dynamic_shapes=dyn, input_names=list(INPUT_NAMES),
                                     output_names=list(OUTPUT_NAMES), opset_version=int(opset),
                                     external_data=False, verbose=False)
        proto = prog.model_proto
        got = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        if got != int(opset):
            raise OnnxMemoryAttentionError(f"the exporter produced opset {got}, not {opset}")
        meta = {
            "producer": "sam2rl_fast.export.memory_attention",
            "sam2_config": config_name or "unknown",
            "image_size": str(int(image_size)),
            "grid": str(side),
            "num_query_tokens": str(side * side),
            "d_model": str(module.d_model),
            "mem_dim": str(module.mem_dim),
            "tokens_per_obj_ptr": str(module.d_model // module.mem_dim),
            "num_layers": str(len(module.layers)),
            "opset": str(int(opset)),
            "input_names": json.dumps(list(INPUT_NAMES)),
            "output_names": json.dumps(list(OUTPUT_NAMES)),
            "inputs": json.dumps(INPUT_MEANINGS),
            "outputs": json.dumps(OUTPUT_MEANINGS),
        }
        del proto.metadata_props[:]
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(proto, full_check=True)
        onnx.save_model(proto, tmp)
        if path.exists() and not overwrite:  # created meanwhile by someone else
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---- runner ---------------------------------------------------------------------------------


# ---- CLI hooks ------------------------------------------------------------------------------


def add_export_memory_attention_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", metavar="CKPT", default=None,
                        help="Meta sam2 checkpoint (.pt) or a sam2 config name for random weights "
                             "(e.g. sam2.1_hiera_t); default: the bundled demo model")
    parser.add_argument("--config", default=None,
                        help="sam2 config of the checkpoint (default: inferred from its keys)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input resolution (default: the config's); sets the grid = size/16")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def _config_name(model) -> str | None:
    """The sam2 config `build_model` built `model` from, for the metadata: sam2's config path,
    or the file name of a YAML config outside sam2 (the bundled demo model's)."""
    from sam2rl_fast.model import loading as ml

    cfg = ml.built_config(model)
    if cfg is None:
        return None
    return Path(cfg).name if ml.is_file_config(cfg) else cfg


def export_memory_attention_cli(args: argparse.Namespace) -> int:
    """Build the model, export its memory attention; 0 on success, 2 on a user error."""
    import sys

    from sam2rl_fast.model.loading import ModelError, build_model

    try:
        from sam2rl_fast.outputs import check_out_file

        out = Path(args.output).expanduser()
        check_out_file(out, [args.model, args.config], "--output")
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        model = build_model(args.model, config=args.config, image_size=args.image_size,
                            device="cpu")
        config = _config_name(model)
        path = export_memory_attention(model, out, image_size=args.image_size, opset=args.opset,
                                       overwrite=args.overwrite, config_name=config)
    except (ModelError, OnnxMemoryAttentionError, FileExistsError, FileNotFoundError,
            ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = read_metadata(path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): config {meta['sam2_config']}, "
          f"image size {meta['image_size']}, grid {meta['grid']}x{meta['grid']}, "
          f"d_model {meta['d_model']}, mem_dim {meta['mem_dim']}, opset {meta['opset']}")
    return 0
