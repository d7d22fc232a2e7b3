"""SAM heads (prompt encoder + mask decoder) batched over objects, with a pluggable mask choice.

Stock `SAM2Base._forward_sam_heads` picks, among the decoder's 3 candidate masks, the one
with the highest predicted IoU. Memory policies such as SAMURAI re-rank the candidates
(e.g. with a motion score), and the object pointer must follow the chosen mask's token.
This is the same computation with the choice exposed; with ``choose=None`` (or a chooser returning None) it is stock's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import NO_OBJ_SCORE


@dataclass
class HeadOutput:
    multimasks: torch.Tensor  # [B, K, h, w] low-res candidate logits (K = 3 or 1)
    ious: torch.Tensor  # [B, K] predicted IoU per candidate
    choice: torch.Tensor  # [B] index of the chosen candidate
    low_res_masks: torch.Tensor  # [B, 1, h, w] chosen logits (h = image_size / 4)
    high_res_masks: torch.Tensor  # [B, 1, S, S] chosen logits at the model's input size
    obj_ptr: torch.Tensor  # [B, 256]
    object_score_logits: torch.Tensor  # [B, 1]

    @property
    def chosen_iou(self) -> torch.Tensor:  # [B]
        return self.ious.gather(1, self.choice[:, None])[:, 0]


Chooser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


def forward_sam_heads(model, backbone_features, point_inputs=None, mask_inputs=None,
                      high_res_features=None, multimask_output=False,
                      choose: Chooser | None = None) -> HeadOutput:
    """`model._forward_sam_heads` with `choose(multimasks, ious, obj_scores) -> [B]` picking the mask."""
    B, dev = backbone_features.size(0), backbone_features.device
    if point_inputs is not None:
        coords, labels = point_inputs["point_coords"], point_inputs["point_labels"]
    else:  # no prompt: one padding point (label -1), as stock
        coords = torch.zeros(B, 1, 2, device=dev)
        labels = -torch.ones(B, 1, dtype=torch.int32, device=dev)
    dense_mask = None
    if mask_inputs is not None:
        dense_mask = mask_inputs
        if mask_inputs.shape[-2:] != model.sam_prompt_encoder.mask_input_size:
            dense_mask = F.interpolate(mask_inputs.float(), size=model.sam_prompt_encoder.mask_input_size,
                                       align_corners=False, mode="bilinear", antialias=True)
    sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=dense_mask)
    low, ious, tokens, obj_scores = model.sam_mask_decoder(
        image_embeddings=backbone_features, image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        multimask_output=multimask_output, repeat_image=False, high_res_features=high_res_features)
    if model.pred_obj_scores:  # a hard object/no-object choice for the masks
        low = torch.where((obj_scores > 0)[:, None, None], low, NO_OBJ_SCORE)
    low = low.float()
    if multimask_output and low.size(1) > 1:
        choice = None if choose is None else choose(low, ious, obj_scores)
        if choice is None:  # stock: the highest predicted IoU
            choice = torch.argmax(ious, dim=-1)
    else:
        choice = torch.zeros(B, dtype=torch.long, device=dev)
    rows = torch.arange(B, device=dev)
    low_chosen = low[rows, choice].unsqueeze(1)
    high_chosen = F.interpolate(low_chosen, size=(model.image_size, model.image_size),
                                mode="bilinear", align_corners=False)
    token = tokens[rows, choice] if (multimask_output and tokens.size(1) > 1) else tokens[:, 0]
    obj_ptr = model.obj_ptr_proj(token)
    if model.pred_obj_scores:
        lam = obj_scores.sigmoid() if model.soft_no_obj_ptr else (obj_scores > 0).float()
        if model.fixed_no_obj_ptr:
            obj_ptr = lam * obj_ptr
        obj_ptr = obj_ptr + (1 - lam) * model.no_obj_ptr
    return HeadOutput(low, ious, choice, low_chosen, high_chosen, obj_ptr, obj_scores)
