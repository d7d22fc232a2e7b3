"""`sam2rl-fast export-tracker`: SAM 2's per-frame networks as one folder of ONNX files.

The folder (read back by `sam2rl_fast.export.tracker_folder.load_tracker_folder`, which
needs numpy and onnxruntime only) holds everything a tracker without torch runs per frame:

    image_encoder -> (memory attention on memories from the bank) -> sam_heads
        -> memory_encoder -> bank

plus `tensors.npz` (the small learned tensors the bank and tracker read) and
`manifest.json` (format, version, the model's signature and settings, the image
normalisation, every file with its SHA-256, and the error of each network against torch
measured when the folder was written). See docs/deployment.md, "Exporting the tracker".

The image encoder, heads and memory encoder are traced with torch.onnx's TorchScript
exporter (`dynamo=False`: it exports the Hiera and EfficientNet trunks 3-8x faster than the
dynamo exporter and gives the same graphs); memory attention is
`export_memory_attention`'s file. Every fp32 graph is run in onnxruntime against sam2's own
code on random inputs before the folder is moved into place; `fp16=True` then converts the
checked graphs to float16 (onnxconverter-common; inputs and outputs float16 too).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

from sam2rl_fast.export import tracker_check as tc
from sam2rl_fast.export import tracker_nets as tn
from sam2rl_fast.export.onnx_common import quiet_exporter
from sam2rl_fast.export.tracker_folder import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    TENSORS_NAME,
    sha256_of,
)

TOLERANCE = 1e-4  # norm-wise relative error of each fp32 graph against torch
FILE_NAMES = {"image_encoder": "image_encoder.onnx", "memory_attention": "memory_attention.onnx",
              "sam_heads": "sam_heads.onnx", "memory_encoder": "memory_encoder.onnx"}
# sam2 settings the tracker's control flow reads (the graphs hold the rest)
SETTINGS = ("image_size", "backbone_stride", "hidden_dim", "mem_dim", "num_maskmem",
            "max_obj_ptrs_in_encoder", "memory_temporal_stride_for_eval", "max_cond_frames_in_attn",
            "directly_add_no_mem_embed", "use_obj_ptrs_in_encoder", "add_tpos_enc_to_obj_ptrs",
            "proj_tpos_enc_in_obj_ptrs", "use_signed_tpos_enc_to_obj_ptrs",
            "only_obj_ptrs_in_the_past_for_eval", "pred_obj_scores", "soft_no_obj_ptr",
            "fixed_no_obj_ptr", "multimask_output_in_sam", "multimask_min_pt_num",
            "multimask_max_pt_num", "multimask_output_for_tracking",
            "use_multimask_token_for_obj_ptr", "use_mask_input_as_output_without_sam",
            "binarize_mask_from_pts_for_mem_enc", "sigmoid_scale_for_mem_enc",
            "sigmoid_bias_for_mem_enc", "iou_prediction_use_sigmoid")


class TrackerExportError(ValueError):
    """A tracker export that cannot be made or did not reproduce torch."""


# ---- networks -------------------------------------------------------------------------------


def _networks(model) -> dict:
    """name -> (module, example inputs, output names, dynamic axes)."""
    rng = np.random.default_rng(0)
    objects = {0: "objects"}
    heads_x = tc.heads_inputs(model, rng, B=2, P=2)  # not 1: keeps both axes symbolic
    heads_axes = {n: dict(objects) for n in ("pix_feat", "high_res_feat_0", "high_res_feat_1",
                                             "mask_input", *tn.HEADS_OUTPUTS)}
    heads_axes.update(point_coords={0: "objects", 1: "points"},
                      point_labels={0: "objects", 1: "points"})
    mem_x = tc.memory_inputs(model, rng, B=2)
    mem_axes = {n: dict(objects) for n in ("pix_feat", "mask_logits", "object_score_logits",
                                           *tn.MEMORY_OUTPUTS)}
    return {
        "image_encoder": (tn.ImageEncoderNet(model), tc.image_inputs(model, rng),
                          tn.IMAGE_OUTPUTS, {}),
        "sam_heads": (tn.SamHeadsNet(model), heads_x, tn.HEADS_OUTPUTS, heads_axes),
        "memory_encoder": (tn.MemoryEncoderNet(model), mem_x, tn.MEMORY_OUTPUTS, mem_axes),
    }


def _add_metadata(proto, meta: dict) -> None:
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=str(v))


def _export_network(name, net, example: dict, outputs, axes, path: Path, opset: int, meta) -> None:
    import onnx

    args = tuple(torch.from_numpy(np.asarray(v)) for v in example.values())
    with torch.no_grad(), quiet_exporter():
        shapes = [tuple(o.shape) for o in net.eval()(*args)]
        torch.onnx.export(net.eval(), args, str(path), input_names=list(example),
                          output_names=list(outputs), dynamic_axes=axes, opset_version=int(opset),
                          do_constant_folding=True, dynamo=False)
    proto = onnx.load_model(str(path))
    for value, shape in zip(proto.graph.output, shapes):  # the tracer names fixed sizes too
        dims = value.type.tensor_type.shape.dim
        for i, (dim, n) in enumerate(zip(dims, shape)):
            dim.Clear()
            if i in axes.get(value.name, {}):
                dim.dim_param = axes[value.name][i]
            else:
                dim.dim_value = n
    proto.doc_string = f"sam2rl-fast tracker: {name}"
    _add_metadata(proto, {**meta, "network": name})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path))


def export_networks(model, folder: Path, names, opset: int = 17) -> None:
    """Write the fp32 graphs `names` (of image_encoder, sam_heads, memory_encoder) into `folder`."""
    meta = {"format": f"{FORMAT}/{FORMAT_VERSION}", "producer": "sam2rl_fast.export.tracker",
            "dtype": "float32"}
    for name, (net, example, outputs, axes) in _networks(model).items():
        if name in names:
            _export_network(name, net, example, outputs, axes, Path(folder) / FILE_NAMES[name],
                            opset, meta)


def _to_fp16(path: Path) -> None:
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise TrackerExportError("--fp16 needs onnxconverter-common (pip install "
                                 "onnxconverter-common)") from e
    proto = onnx.load_model(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    # sam2 computes some values in float32 on purpose (`.float()`): in a float16 graph they
    # are float16 like the rest (the converter keeps its own float32 islands around the ops
    # that need them, e.g. Resize, Range, CumSum)
    kept = {i for n in proto.graph.node if n.op_type in float16.DEFAULT_OP_BLOCK_LIST for i in n.input}
    for node in proto.graph.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == onnx.TensorProto.FLOAT \
                    and node.output[0] not in kept:
                a.i = onnx.TensorProto.FLOAT16
    del proto.graph.value_info[:]
    with quiet_exporter():
        half = float16.convert_float_to_float16(proto, keep_io_types=False, check_fp16_ready=False)
    del half.graph.value_info[:]  # stale where a float32 island was kept; the checker infers them
    _add_metadata(half, {**meta, "dtype": "float16"})
    onnx.checker.check_model(half, full_check=True)
    onnx.save_model(half, str(path))


def _io(path: Path) -> dict:
    """{"inputs": {name: [type, dims]}, "outputs": ...} of an ONNX file (dims: ints or names)."""
    import onnx

    graph = onnx.load_model(str(path), load_external_data=False).graph

    def desc(values):
        out = {}
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out[v.name] = [onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, dims]
        return out

    return {"inputs": desc(graph.input), "outputs": desc(graph.output)}


# ---- tensors and manifest -------------------------------------------------------------------


def learned_tensors(model) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (float32 array, meaning): what the bank and tracker read besides the graphs."""
    from sam2rl_fast.model.encodings import MemoryEncodings

    d, C, T = int(model.hidden_dim), int(model.mem_dim), int(model.num_maskmem)

    def arr(t, *shape):
        return t.detach().float().cpu().reshape(*shape).numpy().copy()

    out = {
        "maskmem_tpos_enc": (arr(model.maskmem_tpos_enc, T, C),
                             "[num_maskmem, mem_dim] temporal encoding added to a memory's "
                             "position encoding: row num_maskmem-1-t_pos (conditioning frames "
                             "t_pos 0, the newest non-conditioning frame row 0)"),
        "maskmem_pos_enc": (MemoryEncodings.from_sam2(model).spatial_pos.numpy().copy(),
                            "[grid*grid, mem_dim] the memory encoder's sine position encoding, "
                            "token-major (y*grid + x): the same for every memory"),
        "no_mem_embed": (arr(model.no_mem_embed, d), "[hidden_dim] added to the features of a "
                         "frame that reads no memory (directly_add_no_mem_embed), or its dummy memory"),
        "no_mem_pos_enc": (arr(model.no_mem_pos_enc, d), "[hidden_dim] position of that dummy memory"),
    }
    if getattr(model, "no_obj_ptr", None) is not None:
        out["no_obj_ptr"] = (arr(model.no_obj_ptr, d), "[hidden_dim] the no-object pointer "
                             "(already mixed into the heads' obj_ptr)")
    if model.no_obj_embed_spatial is not None:
        out["no_obj_embed_spatial"] = (arr(model.no_obj_embed_spatial, C), "[mem_dim] added to a "
                                       "memory whose object is absent (already added by memory_encoder)")
    if model.proj_tpos_enc_in_obj_ptrs:
        lin = model.obj_ptr_tpos_proj
        out["obj_ptr_tpos_proj.weight"] = (arr(lin.weight, C, d), "[mem_dim, hidden_dim] "
                                           "Linear on the 1-D sine encoding of a pointer's "
                                           "temporal distance (sam2 get_1d_sine_pe, dim hidden_dim)")
        out["obj_ptr_tpos_proj.bias"] = (arr(lin.bias, C), "[mem_dim] its bias")
    if model.use_obj_ptrs_in_encoder:
        conv = model.mask_downsample
        out["mask_downsample.weight"] = (arr(conv.weight, 1, 1, 4, 4), "[1, 1, 4, 4] stride-4 conv "
                                         "turning a full-size mask prompt into the heads' mask_input "
                                         "(sam2's mask-as-output path)")
        out["mask_downsample.bias"] = (arr(conv.bias, 1), "[1] its bias")
    return out


def _settings(model) -> dict:
    out = {k: getattr(model, k) for k in SETTINGS}
    out = {k: (v if isinstance(v, (bool, str)) else float(v) if isinstance(v, float) else int(v))
           for k, v in out.items()}
    g = int(model.image_size) // int(model.backbone_stride)
    out.update(grid=g, mask_size=4 * g, tokens_per_obj_ptr=int(model.hidden_dim) // int(model.mem_dim),
               dynamic_multimask_via_stability=bool(model.sam_mask_decoder.dynamic_multimask_via_stability),
               dynamic_multimask_stability_delta=float(model.sam_mask_decoder.dynamic_multimask_stability_delta),
               dynamic_multimask_stability_thresh=float(model.sam_mask_decoder.dynamic_multimask_stability_thresh))
    return out


def _image_spec(model) -> dict:
    from sam2rl_fast.tracking.video import IMG_MEAN, IMG_STD

    S = int(model.image_size)
    return {"shape": [1, 3, S, S], "layout": "NCHW, RGB", "normalised_in_graph": False,
            "resize": f"to {S}x{S} (PIL bicubic, aspect ratio not kept), as sam2's frame loader",
            "normalisation": "x = (rgb / 255 - mean) / std", "mean": list(IMG_MEAN),
            "std": list(IMG_STD)}


# ---- the folder -----------------------------------------------------------------------------


def _cpu_sessions(folder: Path) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return {n: ort.InferenceSession(str(folder / f), opts, providers=["CPUExecutionProvider"])
            for n, f in FILE_NAMES.items()}


def write_tracker(model, folder, *, fp16: bool = False, opset: int = 17,
                  config_name: str | None = None, source: str | None = None,
                  verify: bool = True) -> dict:
    """Write the tracker files into the (new or empty) `folder`; returns the manifest."""
    from sam2rl_fast import __version__
    from sam2rl_fast.export.memory_attention import export_memory_attention
    from sam2rl_fast.policies.agent_file import model_signature

    if int(opset) < 17:
        raise TrackerExportError(f"opset {opset} < 17 is not supported")
    tn.check_exportable(model)
    if model.device.type != "cpu" or model.maskmem_tpos_enc.dtype != torch.float32:
        model = copy.deepcopy(model).cpu().float()  # the export traces fp32 on the CPU
    model = model.eval()
    folder = Path(folder)
    dtype = "float16" if fp16 else "float32"
    export_networks(model, folder, tuple(n for n in FILE_NAMES if n != "memory_attention"), opset)
    export_memory_attention(model, folder / FILE_NAMES["memory_attention"], opset=opset,
                            config_name=config_name)
    errors = errors16 = None
    if verify:
        errors = tc.check_networks(model, _cpu_sessions(folder))
        bad = {n: e for n, e in errors.items() if not e <= TOLERANCE}
        if bad:
            raise TrackerExportError(f"the exported graphs disagree with torch (relative errors "
                                     f"{bad} > {TOLERANCE}); nothing written")
    if fp16:
        for f in FILE_NAMES.values():
            _to_fp16(folder / f)
        if verify:  # reported, not enforced: float16 error is the GPU's business
            try:
                errors16 = tc.check_networks(model, _cpu_sessions(folder), dtype=np.float16)
            except Exception as e:  # onnxruntime's CPU provider lacks a float16 kernel
                errors16 = f"not run on the CPU: {str(e).splitlines()[0][:200]}"
    tensors = learned_tensors(model)
    np.savez(folder / TENSORS_NAME, **{k: a for k, (a, _) in tensors.items()})
    files = {n: {"name": f, "sha256": sha256_of(folder / f), "bytes": (folder / f).stat().st_size,
                 **_io(folder / f)} for n, f in FILE_NAMES.items()}
    files["tensors"] = {"name": TENSORS_NAME, "sha256": sha256_of(folder / TENSORS_NAME),
                        "bytes": (folder / TENSORS_NAME).stat().st_size}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "producer": f"sam2rl-fast {__version__}",
        "model": {"signature": model_signature(model), "sam2_config": config_name or "unknown",
                  "source": source or "unknown", "settings": _settings(model)},
        "dtype": dtype, "opset": int(opset), "image": _image_spec(model),
        "files": files,
        "tensors": {k: {"shape": list(a.shape), "dtype": "float32", "meaning": m}
                    for k, (a, m) in tensors.items()},
        "check": {"max_relative_error_fp32": errors, "tolerance": TOLERANCE,
                  **({"max_relative_error_fp16": errors16} if fp16 else {}),
                  "against": "sam2's own torch code, random inputs, onnxruntime CPU"},
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return manifest


def export_tracker(model, out, *, fp16: bool = False, overwrite: bool = False, opset: int = 17,
                   config_name: str | None = None, source: str | None = None,
                   inputs=(), option: str = "--output", log=print) -> dict:
    """Export `model` (a sam2 model, e.g. from `build_model`) as a tracker folder `out`.

    The folder's rules are every command's (`sam2rl_fast.outputs`): new or empty, or with
    `overwrite` only the files sam2rl-fast wrote there are replaced; it is written in a
    staging folder and moved in once every graph passed its check, so a failure leaves
    `out` as it was. Returns the manifest.
    """
    from sam2rl_fast.outputs import staged_output

    with staged_output(out, overwrite, inputs, "export-tracker", option=option, log=log) as stage:
        manifest = write_tracker(model, stage, fp16=fp16, opset=opset, config_name=config_name,
                                 source=source)
    return manifest


# ---- CLI hooks ------------------------------------------------------------------------------


def add_export_tracker_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", metavar="CKPT", default=None,
                        help="SAM 2 checkpoint (.pt), Hugging Face id (facebook/sam2.1-hiera-tiny, from "
                             "the HF cache) or config name for random weights (e.g. sam2.1_hiera_t); "
                             "default: the bundled demo model")
    parser.add_argument("--config", default=None,
                        help="sam2 config of the checkpoint (default: inferred from its keys)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input resolution (default: the config's); a multiple of 32")
    parser.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--fp16", action="store_true",
                        help="float16 networks (for GPUs; onnxruntime's CPU provider lacks some "
                             "float16 kernels)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what sam2rl-fast wrote in an existing folder (nothing else)")
    return parser


def export_tracker_cli(args: argparse.Namespace) -> int:
    """Build the model, export the tracker folder; 0 on success, 2 on a user error."""
    from sam2rl_fast.export.memory_attention import _config_name
    from sam2rl_fast.export.memory_attention_runtime import OnnxMemoryAttentionError
    from sam2rl_fast.model.loading import ModelError, build_model
    from sam2rl_fast.outputs import OutputDirError, staged_output

    inputs = [args.model, args.config]
    try:
        with staged_output(args.output, args.overwrite, inputs, "export-tracker",
                           option="--output") as stage:
            model = build_model(args.model, config=args.config, image_size=args.image_size,
                                device="cpu")
            manifest = write_tracker(model, stage, fp16=args.fp16, opset=args.opset,
                                     config_name=_config_name(model),
                                     source=str(args.model) if args.model else "bundled")
    except (ModelError, OutputDirError, TrackerExportError, tn.UnsupportedModelError,
            OnnxMemoryAttentionError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(f["bytes"] for f in manifest["files"].values()) / 2 ** 20
    errs = manifest["check"]["max_relative_error_fp32"] or {}
    worst = max(errs.values()) if errs else float("nan")
    print(f"wrote {args.output} ({size:.1f} MiB, {manifest['dtype']}): config "
          f"{manifest['model']['sam2_config']}, image size {manifest['image']['shape'][-1]}, "
          f"grid {manifest['model']['settings']['grid']}; fp32 graphs within {worst:.1e} of torch")
    return 0
