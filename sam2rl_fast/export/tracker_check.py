"""Checks of the exported tracker networks against sam2's own code on fresh random inputs.

The reference of each network is the sam2 method the tracker calls (not the wrapper that
was exported): `forward_image` + `_prepare_backbone_features`, `_forward_sam_heads`
(`sam2rl_fast.model.sam_heads.forward_sam_heads` for the pointer of every candidate),
`_encode_new_memory`. `export_tracker` runs them on the fp32 graphs before it writes the
folder; the tests run them with more shapes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def rel_err(out, ref) -> float:
    """Norm-wise relative error in float64; NaN or inf anywhere is an infinite error."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"shape {out.shape} != reference {ref.shape}")
    if not (np.isfinite(out).all() and np.isfinite(ref).all()):
        return float("inf")
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def _grid(model) -> int:
    return int(model.image_size) // int(model.backbone_stride)


def _high_res_channels(model) -> tuple[int, int]:
    d = model.sam_mask_decoder
    return d.conv_s0.out_channels, d.conv_s1.out_channels


def image_inputs(model, rng: np.random.Generator) -> dict:
    S = int(model.image_size)
    return {"image": rng.standard_normal((1, 3, S, S), dtype=np.float32)}


def heads_inputs(model, rng: np.random.Generator, B: int = 2, P: int = 2, use_mask=False,
                 multimask=True) -> dict:
    """Random heads inputs: points anywhere in the image, labels 0/1 with the last point
    of the first object a padding point when P > 1."""
    g, S, d = _grid(model), int(model.image_size), int(model.hidden_dim)
    c0, c1 = _high_res_channels(model)
    labels = rng.integers(0, 2, (B, P)).astype(np.int32)
    if P > 1:
        labels[0, -1] = -1
    return {
        "pix_feat": rng.standard_normal((B, d, g, g), dtype=np.float32),
        "high_res_feat_0": rng.standard_normal((B, c0, 4 * g, 4 * g), dtype=np.float32),
        "high_res_feat_1": rng.standard_normal((B, c1, 2 * g, 2 * g), dtype=np.float32),
        "point_coords": (rng.random((B, P, 2)) * S).astype(np.float32),
        "point_labels": labels,
        "mask_input": (rng.standard_normal((B, 1, 4 * g, 4 * g)) * 4).astype(np.float32),
        "use_mask_input": np.array(bool(use_mask)),
        "multimask_output": np.array(bool(multimask)),
    }


def memory_inputs(model, rng: np.random.Generator, B: int = 2, present=(True, False),
                  from_pts=False) -> dict:
    g, d = _grid(model), int(model.hidden_dim)
    scores = np.array([[2.5] if p else [-3.0] for p in (list(present) * B)[:B]], np.float32)
    return {
        "pix_feat": rng.standard_normal((B, d, g, g), dtype=np.float32),
        "mask_logits": (rng.standard_normal((B, 1, 4 * g, 4 * g)) * 8).astype(np.float32),
        "object_score_logits": scores,
        "is_mask_from_pts": np.array(bool(from_pts)),
    }


def _t(x):
    return torch.from_numpy(np.asarray(x))


@torch.no_grad()
def image_reference(model, inputs: dict) -> dict:
    _, vf, vp, sizes = model._prepare_backbone_features(model.forward_image(_t(inputs["image"])))
    maps = [x.permute(1, 2, 0).reshape(x.shape[1], x.shape[2], *s) for x, s in zip(vf, sizes)]
    pos = vp[-1].permute(1, 2, 0).reshape(vp[-1].shape[1], vp[-1].shape[2], *sizes[-1])
    return {"vision_features": maps[-1], "vision_pos_enc": pos, "high_res_feat_0": maps[0],
            "high_res_feat_1": maps[1]}


@torch.no_grad()
def heads_reference(model, inputs: dict, candidates: bool = True) -> dict:
    """sam2's `_forward_sam_heads` on the same inputs, under the graph's output names.
    With `candidates`, also the pointer of each multimask candidate (one heads run each)."""
    from sam2rl_fast.model.sam_heads import forward_sam_heads

    pix = _t(inputs["pix_feat"])
    high = [_t(inputs["high_res_feat_0"]), _t(inputs["high_res_feat_1"])]
    pts = {"point_coords": _t(inputs["point_coords"]), "point_labels": _t(inputs["point_labels"])}
    mask = _t(inputs["mask_input"]) if bool(inputs["use_mask_input"]) else None
    multi = bool(inputs["multimask_output"])
    lows, _, ious, low, _, ptr, score = model._forward_sam_heads(pix, pts, mask, high, multi)
    rows = torch.arange(pix.shape[0])
    best = ious.argmax(-1) if multi else torch.zeros(pix.shape[0], dtype=torch.long)
    out = {"low_res_masks": low, "iou": ious[rows, best][:, None], "obj_ptr": ptr,
           "object_score_logits": score}
    if multi:
        out["multimasks"], out["multimask_ious"] = lows, ious
        if candidates:
            out["multimask_obj_ptrs"] = torch.stack([
                forward_sam_heads(model, pix, pts, mask, high, True,
                                  choose=lambda m, i, s, k=k: torch.full_like(s[:, 0], k).long()).obj_ptr
                for k in range(lows.shape[1])], dim=1)
    return out


@torch.no_grad()
def memory_reference(model, inputs: dict) -> dict:
    pix = _t(inputs["pix_feat"])
    B, d, g, _ = pix.shape
    high = F.interpolate(_t(inputs["mask_logits"]), size=(model.image_size, model.image_size),
                         mode="bilinear", align_corners=False)
    feats, pos = model._encode_new_memory([pix.flatten(2).permute(2, 0, 1)], [(g, g)], high,
                                          _t(inputs["object_score_logits"]),
                                          bool(inputs["is_mask_from_pts"]))
    return {"maskmem_features": feats, "maskmem_pos_enc": pos[-1]}


@torch.no_grad()
def memory_attention_check(model, session, rng: np.random.Generator, B=2, frames=2, ptrs=2,
                           dtype=np.float32):
    """Relative error of the memory attention graph on `frames` memory frames and `ptrs`
    object pointers (4 tokens each at d=256, C=64)."""
    g, d, C = _grid(model), int(model.hidden_dim), int(model.mem_dim)
    n_ptr = ptrs * (d // C)
    M = frames * g * g + n_ptr
    x = {"curr": rng.standard_normal((g * g, B, d), dtype=np.float32),
         "memory": rng.standard_normal((M, B, C), dtype=np.float32),
         "curr_pos": rng.standard_normal((g * g, B, d), dtype=np.float32),
         "memory_pos": rng.standard_normal((M, B, C), dtype=np.float32),
         "num_obj_ptr_tokens": np.array(n_ptr, np.int64)}
    ref = model.memory_attention(curr=[_t(x["curr"])], curr_pos=[_t(x["curr_pos"])],
                                 memory=_t(x["memory"]), memory_pos=_t(x["memory_pos"]),
                                 num_obj_ptr_tokens=n_ptr)
    return compare(session, x, {"pix_feat_with_mem": ref}, dtype)


def compare(session, inputs: dict, reference: dict, dtype=np.float32) -> dict[str, float]:
    """Relative error of each reference output of an onnxruntime session (float inputs
    given to it as `dtype`: float16 for a float16 graph)."""
    names = list(reference)
    feed = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in inputs.items()}
    outs = session.run(names, feed)
    return {n: rel_err(o, reference[n].float().numpy()) for n, o in zip(names, outs)}


def check_networks(model, sessions: dict, seed: int = 0, dtype=np.float32) -> dict[str, float]:
    """Worst relative error of each network (memory attention, image encoder, heads in both mask modes
    with and without a mask prompt, memory encoder with the object present and absent)."""
    rng = np.random.default_rng(seed)
    worst: dict[str, float] = {}

    def keep(name, errs):
        worst[name] = max([worst.get(name, 0.0), *errs.values()])

    keep("memory_attention", memory_attention_check(model, sessions["memory_attention"], rng,
                                                    dtype=dtype))
    x = image_inputs(model, rng)
    keep("image_encoder", compare(sessions["image_encoder"], x, image_reference(model, x), dtype))
    for multi, use_mask, P in ((True, False, 1), (False, True, 3)):
        x = heads_inputs(model, rng, B=2, P=P, use_mask=use_mask, multimask=multi)
        keep("sam_heads", compare(sessions["sam_heads"], x,
                                  heads_reference(model, x, candidates=False), dtype))
    for from_pts in (False, True):
        x = memory_inputs(model, rng, B=2, from_pts=from_pts)
        keep("memory_encoder", compare(sessions["memory_encoder"], x, memory_reference(model, x), dtype))
    return worst
