"""The networks of SAM 2's per-frame tracking step as exportable torch modules.

Each wraps the sam2 modules of one model (sharing their weights, no copy) and computes
exactly what `SAM2Base` computes for one frame, with the branches sam2 takes in Python
(prompt or not, one or three masks, object present or not) turned into tensor inputs and
`torch.where`, so that one ONNX graph serves every case:

- `ImageEncoderNet`: `forward_image` + `_prepare_backbone_features` (trunk, FPN neck, the
  mask decoder's `conv_s0` / `conv_s1` on the two high-resolution levels);
- `SamHeadsNet`: `_forward_sam_heads` (prompt encoder, mask decoder, mask choice, object
  pointer with the no-object pointer mixed in);
- `MemoryEncoderNet`: `_encode_new_memory` (mask for memory, memory encoder, the SAM 2.1
  no-object embedding).

Shapes: S = image size, g = S / 16 (the memory grid), B = objects, P = points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_INPUTS = ("image",)
IMAGE_OUTPUTS = ("vision_features", "vision_pos_enc", "high_res_feat_0", "high_res_feat_1")
HEADS_INPUTS = ("pix_feat", "high_res_feat_0", "high_res_feat_1", "point_coords", "point_labels",
                "mask_input", "use_mask_input", "multimask_output")
HEADS_OUTPUTS = ("multimasks", "multimask_ious", "multimask_obj_ptrs", "low_res_masks", "iou",
                 "obj_ptr", "object_score_logits")
MEMORY_INPUTS = ("pix_feat", "mask_logits", "object_score_logits", "is_mask_from_pts")
MEMORY_OUTPUTS = ("maskmem_features", "maskmem_pos_enc")


class UnsupportedModelError(ValueError):
    """A sam2 model whose per-frame step the tracker export does not reproduce."""


def check_exportable(model) -> None:
    """Refuse settings whose sam2 path these modules do not follow."""
    if not model.use_high_res_features_in_sam:
        raise UnsupportedModelError("the tracker export needs use_high_res_features_in_sam=True "
                                    "(every released SAM 2 / 2.1 config has it)")
    if model.num_maskmem < 1:
        raise UnsupportedModelError("num_maskmem=0 (SAM on images) has no memory to export")
    if model.non_overlap_masks_for_mem_enc:
        raise UnsupportedModelError("non_overlap_masks_for_mem_enc is not supported (it mixes "
                                    "objects in the memory encoder)")


class ImageEncoderNet(nn.Module):
    """image [1, 3, S, S] (normalised) -> vision_features [1, d, g, g], vision_pos_enc
    [1, d, g, g] (what memory attention and the memory encoder read), high_res_feat_0
    [1, d/8, 4g, 4g], high_res_feat_1 [1, d/4, 2g, 2g] (what the mask decoder reads)."""

    def __init__(self, model):
        super().__init__()
        check_exportable(model)
        self.image_encoder = model.image_encoder
        self.conv_s0 = model.sam_mask_decoder.conv_s0
        self.conv_s1 = model.sam_mask_decoder.conv_s1
        self.levels = model.num_feature_levels

    def forward(self, image):
        out = self.image_encoder(image)
        fpn, pos = list(out["backbone_fpn"])[-self.levels:], out["vision_pos_enc"][-self.levels:]
        return fpn[-1], pos[-1], self.conv_s0(fpn[0]), self.conv_s1(fpn[1])


class SamHeadsNet(nn.Module):
    """sam2's `_forward_sam_heads` for both mask counts at once.

    Inputs: pix_feat [B, d, g, g] (memory-conditioned features, or on a prompt frame the
    features plus `no_mem_embed`), the two high-resolution maps of the image encoder,
    point_coords [B, P, 2] (x, y in input pixels, 0..S) and point_labels [B, P] int32
    (1 positive, 0 negative, 2/3 box corners, -1 padding; no prompt = one point (0, 0)
    labelled -1, as sam2 passes), mask_input [B, 1, 4g, 4g] (a dense mask prompt at the
    prompt encoder's size, read when use_mask_input is true), use_mask_input and
    multimask_output (bool scalars).

    Outputs: multimasks [B, 3, 4g, 4g], multimask_ious [B, 3], multimask_obj_ptrs [B, 3, d]
    (the three candidates of multimask output and the pointer each would give), and sam2's
    choice for `multimask_output`: low_res_masks [B, 1, 4g, 4g], iou [B, 1], obj_ptr [B, d];
    object_score_logits [B, 1]. Masks are logits, NO_OBJ_SCORE where the object is absent.
    """

    def __init__(self, model):
        super().__init__()
        check_exportable(model)
        self.prompt_encoder = model.sam_prompt_encoder
        self.decoder = model.sam_mask_decoder
        self.obj_ptr_proj = model.obj_ptr_proj
        self.pred_obj_scores = model.pred_obj_scores
        self.soft_no_obj_ptr = model.soft_no_obj_ptr
        self.fixed_no_obj_ptr = model.fixed_no_obj_ptr
        self.no_obj_ptr = getattr(model, "no_obj_ptr", None)
        with torch.no_grad():
            self.register_buffer("image_pe", self.prompt_encoder.get_dense_pe().detach().clone(),
                                 persistent=False)

    def _single(self, masks, ious):
        """The one-mask output: token 0, or (stability fallback) the best multimask one."""
        d = self.decoder
        if d.dynamic_multimask_via_stability:
            return d._dynamic_multimask_via_stability(masks, ious)
        return masks[:, 0:1], ious[:, 0:1]

    def _pointer(self, token, lam):
        ptr = self.obj_ptr_proj(token)
        if self.pred_obj_scores:
            if self.fixed_no_obj_ptr:
                ptr = lam * ptr
            ptr = ptr + (1 - lam) * self.no_obj_ptr
        return ptr

    def forward(self, pix_feat, high_res_feat_0, high_res_feat_1, point_coords, point_labels,
                mask_input, use_mask_input, multimask_output):
        from sam2.modeling.sam2_base import NO_OBJ_SCORE

        pe = self.prompt_encoder
        sparse, no_mask = pe(points=(point_coords, point_labels), boxes=None, masks=None)
        dense = torch.where(use_mask_input, pe._embed_masks(mask_input), no_mask)
        masks, ious, tokens, scores = self.decoder.predict_masks(
            image_embeddings=pix_feat, image_pe=self.image_pe, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, repeat_image=False,
            high_res_features=[high_res_feat_0, high_res_feat_1])
        multi, multi_ious = masks[:, 1:], ious[:, 1:]
        single, single_iou = self._single(masks, ious)
        if self.pred_obj_scores:  # the masks' object/no-object choice is a hard one
            present = (scores > 0)[:, None, None]
            multi = torch.where(present, multi, NO_OBJ_SCORE)
            single = torch.where(present, single, NO_OBJ_SCORE)
            lam = scores.sigmoid() if self.soft_no_obj_ptr else (scores > 0).to(scores.dtype)
        else:
            lam = None
        multi_tokens = tokens[:, 1:] if self.decoder.use_multimask_token_for_obj_ptr \
            else tokens[:, 0:1].expand(-1, 3, -1)
        multi_ptrs = self._pointer(multi_tokens, None if lam is None else lam[:, None])
        single_ptr = self._pointer(tokens[:, 0], lam)
        best = torch.argmax(multi_ious, dim=-1)  # sam2's choice among the three
        rows = torch.arange(multi.shape[0], device=multi.device)
        low = torch.where(multimask_output, multi[rows, best].unsqueeze(1), single)
        iou = torch.where(multimask_output, multi_ious[rows, best].unsqueeze(1), single_iou)
        ptr = torch.where(multimask_output, multi_ptrs[rows, best], single_ptr)
        return multi, multi_ious, multi_ptrs, low, iou, ptr, scores


class MemoryEncoderNet(nn.Module):
    """sam2's `_encode_new_memory` from the chosen low-resolution mask.

    Inputs: pix_feat [B, d, g, g] (the image encoder's vision_features, not the
    memory-conditioned ones), mask_logits [B, 1, 4g, 4g] (the heads' low_res_masks: upsampled
    here to S x S as sam2 upsamples them, bilinear), object_score_logits [B, 1],
    is_mask_from_pts (bool scalar: the mask comes from a point/box prompt; binarised for the
    memory when the model says so). Outputs maskmem_features [B, C, g, g] (plus
    `no_obj_embed_spatial` where object_score_logits <= 0, SAM 2.1) and maskmem_pos_enc
    [B, C, g, g]."""

    def __init__(self, model):
        super().__init__()
        check_exportable(model)
        self.memory_encoder = model.memory_encoder
        self.image_size = int(model.image_size)
        self.binarize = bool(model.binarize_mask_from_pts_for_mem_enc)
        self.scale = float(model.sigmoid_scale_for_mem_enc)
        self.bias = float(model.sigmoid_bias_for_mem_enc)
        self.no_obj_embed = model.no_obj_embed_spatial

    def forward(self, pix_feat, mask_logits, object_score_logits, is_mask_from_pts):
        high = F.interpolate(mask_logits, size=(self.image_size, self.image_size),
                             mode="bilinear", align_corners=False)
        mask = torch.sigmoid(high)
        if self.binarize:
            mask = torch.where(is_mask_from_pts, (high > 0).to(high.dtype), mask)
        if self.scale != 1.0:
            mask = mask * self.scale
        if self.bias != 0.0:
            mask = mask + self.bias
        out = self.memory_encoder(pix_feat, mask, skip_mask_sigmoid=True)
        feats, pos = out["vision_features"], out["vision_pos_enc"][-1]
        if self.no_obj_embed is not None:
            absent = 1 - (object_score_logits > 0).to(feats.dtype)
            feats = feats + absent[..., None, None] * self.no_obj_embed[..., None, None]
        return feats, pos
