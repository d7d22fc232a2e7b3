"""Memory-bank gather/append vs stock sam2's per-frame concatenation, in one process.

Stock sam2 builds memory attention's inputs each frame by flattening, permuting and
concatenating the stored bf16 maps (and adding the temporal encodings) frame by frame;
`memory_gather` writes the same [M, B, 64] sequences in one pass. Both are memory-bound,
so we report GB/s (bytes read once + written once) and the speed-up. The `varlen` row
(B >= 2) is a ragged frame, half the objects reading 3 memories and 8 pointers: one
`memory_gather_varlen` against the path it replaced (per group of equal counts, a copy
of the group's bank rows, then `memory_gather`).

    python benchmarks/bench_memory_bank.py [--device cuda] [--sizes 256 512 1024]
"""

from __future__ import annotations

import argparse

import torch

from _timing import device_name, median_time
from sam2rl_fast.ops import memory_append, memory_gather, memory_gather_varlen
from sam2rl_fast.testing import random_bank_inputs


def stock_concat(maps, spos_map, tpos, tslots, obj_ptrs, obj_pos):
    """sam2_base._prepare_memory_conditioned_features' concatenation, verbatim in effect.

    maps: N tensors [B, C, H, W] bf16; spos_map [B, C, H, W]; tpos [T, 1, 1, C];
    obj_ptrs [P, B, D]; obj_pos [P, B, C].
    """
    to_cat, to_cat_pos = [], []
    for feats, ts in zip(maps, tslots):
        to_cat.append(feats.flatten(2).permute(2, 0, 1))
        enc = spos_map.flatten(2).permute(2, 0, 1)
        to_cat_pos.append(enc + tpos[ts])
    C = maps[0].shape[1]
    P, B, D = obj_ptrs.shape
    ptrs = obj_ptrs.reshape(-1, B, D // C, C).permute(0, 2, 1, 3).flatten(0, 1)
    to_cat.append(ptrs)
    to_cat_pos.append(obj_pos.repeat_interleave(D // C, dim=0))
    return torch.cat(to_cat, 0), torch.cat(to_cat_pos, 0)


def ragged_row(bank, spos, tpos, ptrs, ptr_pos, size, dev, reps):
    """Objects 0, 2, ... read 7 memories and 16 pointers, objects 1, 3, ... 3 and 8."""
    B, C = bank.shape[0], bank.shape[3]
    counts = [(7, 16) if b % 2 == 0 else (3, 8) for b in range(B)]
    groups = [list(range(0, B, 2)), list(range(1, B, 2))]
    order = groups[0] + groups[1]
    sel = {b: (torch.arange(n), torch.arange(n).flip(0), torch.arange(p)) for b, (n, p) in enumerate(counts)}
    pos = {b: ptr_pos[0, :p] for b, (_, p) in enumerate(counts)}
    cat = lambda i: torch.cat([sel[b][i] for b in order]).to(dev)  # noqa: E731
    cu = lambda i: torch.tensor([0] + [counts[b][i] for b in order]).cumsum(0).to(dev)  # noqa: E731
    packed = (cat(0), cat(1), cu(0), ptrs, cat(2), torch.cat([pos[b] for b in order]), cu(1))
    objects = torch.tensor(order, device=dev)
    ours = lambda: memory_gather_varlen(bank, spos, tpos, *packed, objects=objects, validate=False)  # noqa: E731

    def grouped():  # the replaced path: MemoryBank.subset (a copy) + memory_gather per group
        outs = []
        for objs in groups:
            idx = torch.tensor(objs, device=dev)
            st = lambda i: torch.stack([sel[b][i] for b in objs]).to(dev)  # noqa: E731
            outs.append(memory_gather(bank[idx], spos, tpos, st(0), st(1), ptrs[idx], st(2),
                                      torch.stack([pos[b] for b in objs]), validate=False))
        return outs

    m_o, _, cu_rows = ours()
    rows = cu_rows.tolist()
    for g, (m_g, _, _) in zip(groups, grouped()):
        k0 = order.index(g[0])
        block = m_o[rows[k0]:rows[k0 + len(g)]].view(len(g), -1, C).transpose(0, 1)
        assert torch.equal(block, m_g), "varlen gather differs from the grouped gathers"
    t_o, t_s = median_time(ours, dev, reps), median_time(grouped, dev, reps)
    M = m_o.shape[0]
    nbytes = M * C * (2 + 4 + 4)  # read bf16 once, write fp32 memory and memory_pos
    print(f"{'varlen':<8}{size:>6}{B:>4}{M:>8}{t_s * 1e3:>11.3f}{t_o * 1e3:>10.3f}"
          f"{nbytes / t_o / 1e9:>8.1f}{t_s / t_o:>9.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--objects", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    dev = args.device
    name = device_name(dev)
    print(f"# device: {dev} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'op':<8}{'img':>6}{'B':>4}{'M':>8}{'stock ms':>11}{'ours ms':>10}{'GB/s':>8}{'speed-up':>10}")
    N, P, C = 7, 16, 64
    for size in args.sizes:
        side = size // 16
        for B in args.objects:
            inp = random_bank_inputs(B=B, S=N, side=side, N=N, P=P, R=P, device=dev)
            bank, spos, tpos, slots, tslots, ptrs, ptr_idx, ptr_pos = inp
            slots = torch.arange(N, device=dev).expand(B, N).contiguous()
            tslots = torch.tensor([6, 5, 4, 3, 2, 1, 0], device=dev).expand(B, N).contiguous()
            ptr_idx = torch.arange(P, device=dev).expand(B, P).contiguous()
            # Stock layout of the same data.
            maps = [bank[:, i].transpose(1, 2).reshape(B, C, side, side).contiguous() for i in range(N)]
            spos_map = spos.t().reshape(1, C, side, side).expand(B, -1, -1, -1)
            tpos4 = tpos.reshape(-1, 1, 1, C)
            obj_ptrs = ptrs.transpose(0, 1).contiguous()
            obj_pos = ptr_pos[:1].transpose(0, 1).expand(P, B, C).contiguous()
            ptr_pos_b = ptr_pos[:1].expand(B, P, C).contiguous()
            tl = tslots[0].tolist()
            ours = lambda: memory_gather(bank, spos, tpos, slots, tslots, ptrs, ptr_idx, ptr_pos_b,
                                         validate=False)
            stock = lambda: stock_concat(maps, spos_map, tpos4, tl, obj_ptrs, obj_pos)
            m_o, p_o, _ = ours()
            m_s, p_s = stock()
            assert torch.equal(m_o, m_s) and torch.equal(p_o, p_s), "gather differs from stock"
            t_o, t_s = median_time(ours, dev, args.reps), median_time(stock, dev, args.reps)
            M = m_o.shape[0]
            nbytes = bank.numel() * 2 + spos.numel() * 4 + M * B * C * (4 + 4)
            print(f"{'gather':<8}{size:>6}{B:>4}{M:>8}{t_s * 1e3:>11.3f}{t_o * 1e3:>10.3f}"
                  f"{nbytes / t_o / 1e9:>8.1f}{t_s / t_o:>9.2f}x")
            if B >= 2:
                ragged_row(bank, spos, tpos, ptrs, ptr_pos, size, dev, args.reps)
            # append: stock = in-place no-obj add + .to(bf16) (kept [B, C, H, W]).
            mem = torch.randn(B, C, side, side, device=dev)
            score = torch.randn(B, device=dev)
            emb = torch.randn(C, device=dev)
            sl = torch.zeros(B, dtype=torch.long, device=dev)

            def stock_append():
                x = mem.clone()
                x += (1 - (score > 0).float()[:, None, None, None]) * emb[None, :, None, None]
                return x.to(torch.bfloat16)

            t_o = median_time(lambda: memory_append(bank, mem, sl, score, emb), dev, args.reps)
            t_s = median_time(stock_append, dev, args.reps)
            nbytes = mem.numel() * (4 + 2)
            print(f"{'append':<8}{size:>6}{B:>4}{side * side:>8}{t_s * 1e3:>11.3f}{t_o * 1e3:>10.3f}"
                  f"{nbytes / t_o / 1e9:>8.1f}{t_s / t_o:>9.2f}x")


if __name__ == "__main__":
    main()
