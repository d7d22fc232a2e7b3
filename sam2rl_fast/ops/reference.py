"""Pure-PyTorch references of the compiled ops: the definition every kernel is tested against."""

from __future__ import annotations

import torch

from sam2rl_fast.ops.rope import apply_rope, rope_tables


def memory_append_ref(
    bank: torch.Tensor,  # [B, S, HW, C]
    mem: torch.Tensor,  # [B, C, H, W]
    slots: torch.Tensor,  # [B]
    obj_score: torch.Tensor,  # [B]
    no_obj_embed: torch.Tensor | None = None,  # [C]
) -> None:
    B, C = mem.shape[:2]
    for b in range(B):
        s = int(slots[b])
        if s < 0:
            continue
        x = mem[b].reshape(C, -1).t().float()  # [HW, C]
        if no_obj_embed is not None:
            w = 1.0 - float(obj_score[b] > 0)
            x = x + w * no_obj_embed.reshape(-1).float()
        bank[b, s] = x.to(bank.dtype)


def memory_gather_ref(
    bank: torch.Tensor,  # [B, S, HW, C]
    spatial_pos: torch.Tensor,  # [HW, C]
    temporal_pos: torch.Tensor,  # [T, C]
    slots: torch.Tensor,  # [B, N]
    tslots: torch.Tensor,  # [B, N]
    ptrs: torch.Tensor,  # [B, R, D]
    ptr_idx: torch.Tensor,  # [B, P]
    ptr_pos: torch.Tensor,  # [B, P, C]
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    B, _, HW, C = bank.shape
    N, P, D = slots.shape[1], ptr_idx.shape[1], ptrs.shape[2]
    split = D // C
    rows = torch.arange(B, device=bank.device)[:, None]
    feats = bank[rows, slots]  # [B, N, HW, C]
    memory_sp = feats.permute(1, 2, 0, 3).reshape(N * HW, B, C).to(out_dtype)
    pos_sp = spatial_pos[None, None] + temporal_pos[tslots][:, :, None]  # [B, N, HW, C]
    pos_sp = pos_sp.permute(1, 2, 0, 3).reshape(N * HW, B, C)
    p = ptrs[rows, ptr_idx].to(out_dtype)  # [B, P, D]
    memory_ptr = p.reshape(B, P, split, C).permute(1, 2, 0, 3).reshape(P * split, B, C)
    pos_ptr = ptr_pos.repeat_interleave(split, dim=1).permute(1, 0, 2)  # [P*split, B, C]
    memory = torch.cat([memory_sp, memory_ptr], dim=0)
    memory_pos = torch.cat([pos_sp, pos_ptr.to(pos_sp.dtype)], dim=0)
    return memory, memory_pos


def memory_gather_varlen_ref(
    bank: torch.Tensor,  # [B, S, HW, C]
    spatial_pos: torch.Tensor,  # [HW, C]
    temporal_pos: torch.Tensor,  # [T, C]
    slots: torch.Tensor,  # [Nt]
    tslots: torch.Tensor,  # [Nt]
    cu_mems: torch.Tensor,  # [L+1]
    ptrs: torch.Tensor,  # [B, R, D]
    ptr_idx: torch.Tensor,  # [Pt]
    ptr_pos: torch.Tensor,  # [Pt, C]
    cu_ptrs: torch.Tensor,  # [L+1]
    objects: torch.Tensor | None,  # [L] or None (sequence l reads object l)
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sequence gathered alone by `memory_gather_ref` ([M_l, 1, C]), concatenated."""
    HW, C = bank.shape[2], bank.shape[3]
    split = ptrs.shape[2] // C
    cm, cp = cu_mems.tolist(), cu_ptrs.tolist()
    L = len(cm) - 1
    obj = list(range(L)) if objects is None else objects.tolist()
    mems, poss = [bank.new_empty(0, C, dtype=out_dtype)], [spatial_pos.new_empty(0, C)]
    for lane in range(L):
        b, m, p = obj[lane], slice(cm[lane], cm[lane + 1]), slice(cp[lane], cp[lane + 1])
        mem, pos = memory_gather_ref(bank[b:b + 1], spatial_pos, temporal_pos, slots[None, m],
                                     tslots[None, m], ptrs[b:b + 1], ptr_idx[None, p],
                                     ptr_pos[None, p], out_dtype)
        mems.append(mem[:, 0])
        poss.append(pos[:, 0])
    cu_seqlens = cu_mems * HW + cu_ptrs * split
    return torch.cat(mems), torch.cat(poss), cu_seqlens


def rope_attention_ref(q, k, v, side, num_k_exclude_rope=0, scale=None, theta=10000.0):
    """Reference of the fused op: (out [B, Nq, Dv], lse [B, Nq]) in the inputs' precision."""
    cos, sin = rope_tables(side, q.shape[-1], theta, device=q.device, dtype=q.dtype)
    n_rope = k.shape[1] - num_k_exclude_rope
    reps = n_rope // q.shape[1]
    qr = apply_rope(q, cos, sin)
    kr = torch.cat([apply_rope(k[:, :n_rope], cos.repeat(reps, 1), sin.repeat(reps, 1)),
                    k[:, n_rope:]], dim=1)
    s = (qr @ kr.transpose(1, 2)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)
