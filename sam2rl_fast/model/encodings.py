"""The positional encodings and embeddings a sam2 model adds to its memories.

They depend only on the model's weights and the feature-map size, so they are computed
once per model and shared by every frame and object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sam2.modeling.sam2_utils import get_1d_sine_pe


@dataclass
class MemoryEncodings:
    spatial_pos: torch.Tensor  # [HW, C] float32: the memory encoder's sine map, token-major
    temporal_pos: torch.Tensor  # [T, C] float32: maskmem_tpos_enc
    no_obj_embed: torch.Tensor | None  # [C] float32 (SAM 2.1) or None
    model: object = None  # for the pointer encoding (SAM 2.1 projects it with a Linear)

    @classmethod
    @torch.no_grad()
    def from_sam2(cls, model, feat_size: int | None = None) -> "MemoryEncodings":
        """Encodings of a sam2 model (`SAM2Base` or `SAM2VideoPredictor`).

        `feat_size` is the side of the memory grid; default ``image_size // 16``.
        """
        side = feat_size or model.image_size // model.backbone_stride
        dev = model.maskmem_tpos_enc.device
        mem_dim = model.mem_dim
        probe = torch.empty(1, mem_dim, side, side, device=dev)
        spos = model.memory_encoder.position_encoding(probe).to(probe.dtype)  # [1, C, H, W]
        spos = spos.flatten(2)[0].t().contiguous()  # [HW, C]
        tpos = model.maskmem_tpos_enc.detach().reshape(model.num_maskmem, mem_dim).float()
        emb = model.no_obj_embed_spatial
        emb = None if emb is None else emb.detach().reshape(-1).float()
        return cls(spos, tpos.contiguous(), emb, model)

    @property
    def num_tokens(self) -> int:
        return self.spatial_pos.shape[0]

    @torch.no_grad()
    def pointer_pos(self, dists: list[list[int]], max_ptrs: int, num_objects: int) -> torch.Tensor:
        """[B, P, C] encodings of pointers at the given temporal distances, as sam2 computes them."""
        return self.pointer_pos_with_grad(dists, max_ptrs, num_objects)

    def pointer_pos_with_grad(self, dists: list[list[int]], max_ptrs: int,
                              num_objects: int) -> torch.Tensor:
        """`pointer_pos` inside autograd: training reads it (SAM 2.1's `obj_ptr_tpos_proj` learns)."""
        C = self.spatial_pos.shape[1]
        P = len(dists[0]) if dists else 0
        dev = self.spatial_pos.device
        m = self.model
        if P == 0 or m is None or not m.add_tpos_enc_to_obj_ptrs:
            return torch.zeros(num_objects, P, C, device=dev)
        rows = []
        cache: dict[tuple[int, ...], torch.Tensor] = {}
        for d in dists:
            key = tuple(d)
            if key not in cache:
                # Same ops, shapes and order as sam2 so the values are bit-identical.
                t_diff_max = max_ptrs - 1
                tpos_dim = m.hidden_dim if m.proj_tpos_enc_in_obj_ptrs else m.mem_dim
                pos = torch.tensor(list(d)).to(device=dev)
                pos = get_1d_sine_pe(pos / t_diff_max, dim=tpos_dim)
                cache[key] = m.obj_ptr_tpos_proj(pos).float()
            rows.append(cache[key])
        return torch.stack(rows, 0)
