"""Priors that make the memory path usable (training initialisations of a warm start).

Measured on the bundled model at step 1,414 (docs/demo-model.md): its cross-attention sent
92-96% (layer 0) and 60-77% (layer 1) of every query's weight to the object-pointer tokens,
which carry no position, and less than uniform weight to the same position in the spatial
memories; its masks were the same with the memories zeroed (IoU 0.96-0.98 between the
two), so it segmented every object that looked like the target. Learning RoPE attention
that matches positions starts from a near-uniform softmax over ~1,800 keys, where the
gradient each key receives is ~1/N.

`init_local_cross_attention` makes matching positions the starting point: with constant
query and key biases `b` (RoPE rotates both by their positions), a query's logit to a
spatial memory token at offset (dx, dy) is |b|²/sqrt(d) * mean(cos(w dx) + cos(w dy)),
which peaks at the same position in every memory frame; pointer keys, which RoPE does not
rotate, get a lower logit. At `bias` 1.5 on this 256-d, 1-head attention at 16x16 tokens:
same position 36.0, one token away 35.5, four away 31.7, across the image 25.7, pointers
~27 (nats). What is stored at and near a token's position (the mask a memory encodes there)
is then what the token reads, and training refines it.

What the memories hold at a position must also say whether the target was there. In the
same model the mask moved its memory features by 0.0% (a 14-px target) and 0.8% (a 96-px
square) against an empty mask: the image features dominate the memory encoder's sum
(`pix_feat_proj(image) + mask_downsampler(mask)`), as they already do at initialisation
(1.6% and 8.8%), and nothing had pushed the mask path up since nothing read it.
`amplify_mask_path` scales what the mask adds to the memory, relative to a frame without the
target, by `gain` (the downsampler's last convolution; its mean output on an empty mask kept):
at 100 the 96-px square moves its tokens by twice their norm, the 14-px target by 27%.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def init_local_cross_attention(model, bias: float, weight_scale: float = 0.5) -> int:
    """Set the query/key biases of every memory-attention cross-attention to `bias` and
    scale their query/key weights by `weight_scale`. Returns how many layers changed."""
    n = 0
    for layer in model.memory_attention.layers:
        att = layer.cross_attn_image
        for proj in (att.q_proj, att.k_proj):
            if proj.bias is None:
                raise ValueError("the memory attention's projections have no bias")
            proj.weight.mul_(weight_scale)
            proj.bias.fill_(bias)
        n += 1
    return n


@torch.no_grad()
def amplify_mask_path(model, gain: float) -> None:
    """Scale the memory encoder's mask contribution, relative to an empty mask, by `gain`
    (exactly: ds(x) - ds(empty) becomes `gain` times itself; ds(empty)'s mean per channel
    stays, its border pattern from the padding grows)."""
    ds = model.memory_encoder.mask_downsampler
    last = ds.encoder[-1]
    if not isinstance(last, torch.nn.Conv2d) or last.bias is None:
        raise ValueError("the mask downsampler does not end in a convolution with a bias")
    p = next(model.parameters())
    S = model.image_size
    empty = torch.full((1, 1, S, S), model.sigmoid_bias_for_mem_enc, device=p.device, dtype=p.dtype)
    offset = ds(empty).mean((0, 2, 3))  # the last convolution's output on an empty mask
    last.weight.mul_(gain)
    last.bias.mul_(gain).sub_((gain - 1) * offset)


@torch.no_grad()
def cross_attention_mass(model, frames, masks) -> list[dict]:
    """Where the cross-attention's weight goes on one clip (batch of 1): for each layer and
    tracked frame, the share on object pointers and on the same position in the spatial
    memories (uniform: memories / keys). The diagnostic behind this module's docstring."""
    import math

    from sam2.modeling.position_encoding import apply_rotary_enc

    from .forward import forward_clips

    stats, restore = [], []
    for li, layer in enumerate(model.memory_attention.layers):
        att = layer.cross_attn_image
        orig = att.forward

        def fwd(q, k, v, num_k_exclude_rope=0, att=att, orig=orig, li=li):
            qq = att._separate_heads(att.q_proj(q), att.num_heads)
            kk = att._separate_heads(att.k_proj(k), att.num_heads)
            n = kk.size(-2) - num_k_exclude_rope
            side = int(math.isqrt(qq.shape[-2]))
            fc = att.compute_cis(end_x=side, end_y=side).to(qq.device)
            qq, kr = apply_rotary_enc(qq, kk[:, :, :n].clone(), freqs_cis=fc, repeat_freqs_k=True)
            kk = torch.cat([kr, kk[:, :, n:]], 2)
            w = torch.softmax(qq.float() @ kk.float().transpose(-1, -2) / math.sqrt(qq.shape[-1]), -1)
            w = w[0].mean(0)  # [HW, M] averaged over heads
            hw = w.shape[0]
            same = sum(w[torch.arange(hw), m * hw + torch.arange(hw)] for m in range(n // hw))
            stats.append({"layer": li, "memories": n // hw, "pointer_mass": float(w[:, n:].sum(-1).mean()),
                          "same_position_mass": float(same.mean()), "uniform": (n // hw) / w.shape[1]})
            return orig(q, k, v, num_k_exclude_rope)

        att.forward = fwd
        restore.append((att, orig))
    try:
        forward_clips(model, frames, masks, None, None)
    finally:
        for att, orig in restore:
            att.forward = orig
    return stats
