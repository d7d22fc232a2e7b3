"""The bank's gather reproduces, bit for bit, what stock sam2 feeds its memory attention.

Stock `SAM2VideoPredictor` (random weights) tracks a generated video; hooks capture every
memory-attention input and every memory-encoder output. Replaying the same history
through `MemoryBank` + `StockMemoryRule` must give identical tensors on every frame.
"""

import inspect

import pytest
import torch

from sam2rl_fast import MemoryBank, MemoryEncodings, StockMemoryRule
from tests.helpers import (
    build_random_predictor,
    moving_square_video,
    shift_object_scores,
    write_jpeg_folder,
)

T = 12


class StockCapture:
    """Records, per frame, sam2's memory-attention inputs and raw memory-encoder outputs."""

    def __init__(self, predictor):
        self.frame = None
        self.attn = {}  # frame -> [(memory, memory_pos, num_obj_ptr_tokens)] per object
        self.mem_raw = {}  # frame -> [[1, C, H, W]] per object (before no_obj_embed)
        for name in ("track_step", "_run_memory_encoder"):
            self._wrap(predictor, name)
        predictor.memory_encoder.register_forward_hook(self._on_mem)
        predictor.memory_attention.register_forward_pre_hook(self._on_attn, with_kwargs=True)

    def _wrap(self, predictor, name):
        fn = getattr(predictor, name)
        sig = inspect.signature(fn)

        def wrapped(*args, **kwargs):
            self.frame = sig.bind(*args, **kwargs).arguments["frame_idx"]
            return fn(*args, **kwargs)

        setattr(predictor, name, wrapped)

    def _on_mem(self, module, args, out):
        # sam2 adds no_obj_embed_spatial in place afterwards: keep a copy of the raw output.
        self.mem_raw.setdefault(self.frame, []).append(out["vision_features"].detach().clone())

    def _on_attn(self, module, args, kwargs):
        self.attn.setdefault(self.frame, []).append(
            (kwargs["memory"].clone(), kwargs["memory_pos"].clone(), kwargs["num_obj_ptr_tokens"]))


def run_stock(tmp_path, config, n_obj, prompt_frame, reverse, extra=(), occluded=False):
    predictor = build_random_predictor(config, 256, extra)
    if occluded:  # push object scores <= 0: sam2 then marks memories with no_obj_embed_spatial
        shift_object_scores(predictor, -100.0)
    frames, masks = moving_square_video(T, n_obj=n_obj, seed=n_obj + prompt_frame)
    state = predictor.init_state(write_jpeg_folder(frames, tmp_path / "video"))
    cap = StockCapture(predictor)
    for k in range(n_obj):
        predictor.add_new_mask(state, prompt_frame, k, masks[prompt_frame, k])
    order = [f for f, _, _ in predictor.propagate_in_video(
        state, start_frame_idx=prompt_frame, reverse=reverse)]
    return predictor, state, cap, order


def replay_and_compare(predictor, state, cap, order, n_obj, prompt_frame, reverse):
    enc = MemoryEncodings.from_sam2(predictor)
    rule = StockMemoryRule.from_sam2(predictor)
    bank = MemoryBank(n_obj, enc.num_tokens, capacity=7, ptr_capacity=16)
    outs = [state["output_dict_per_obj"][k] for k in range(n_obj)]
    compared = 0
    for f in order:
        is_cond = f == prompt_frame
        if not is_cond:  # an initial conditioning frame runs no memory attention
            memory, memory_pos, n_ptr = bank.gather(rule.select(bank, f, T, reverse), enc)
            for k, (ref_m, ref_p, ref_n) in enumerate(cap.attn[f]):
                assert n_ptr == ref_n, f"frame {f}: {n_ptr} pointer tokens, stock {ref_n}"
                assert memory.dtype == ref_m.dtype and memory.shape[0] == ref_m.shape[0], (
                    f"frame {f}: memory {memory.dtype} {tuple(memory.shape)}, "
                    f"stock {ref_m.dtype} {tuple(ref_m.shape)}")
                assert torch.equal(memory[:, k:k + 1], ref_m), f"frame {f} obj {k}: memory differs"
                assert torch.equal(memory_pos[:, k:k + 1], ref_p), f"frame {f} obj {k}: pos differs"
            compared += 1
        key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        stored = [o[key][f] for o in outs]
        slots, ptr_slots = rule.assign(bank, f, is_cond=is_cond, reverse=reverse)
        bank.append(torch.cat(cap.mem_raw[f][-n_obj:]), slots, frame_idx=f, is_cond=is_cond,
                    obj_score=torch.cat([s["object_score_logits"].reshape(1) for s in stored]),
                    no_obj_embed=enc.no_obj_embed)
        bank.append_ptr(torch.cat([s["obj_ptr"] for s in stored]), ptr_slots, frame_idx=f,
                        is_cond=is_cond)
        for k, s in enumerate(stored):  # append == sam2's no_obj add + bf16 cast
            ref = s["maskmem_features"].flatten(2)[0].t()
            assert torch.equal(bank.feats[k, slots[k]], ref), f"frame {f} obj {k}: append differs"
        assert len(bank.occupied(0)) <= bank.capacity
    assert compared == len(order) - 1
    return bank


CASES = [
    # (n_obj, prompt frame, reverse, hydra overrides): early frames, missing frames
    # (tracking starts mid-video), reverse tracking, stride > 1 and several objects.
    pytest.param(1, 0, False, (), id="forward"),
    pytest.param(2, 0, False, (), id="forward-2obj"),
    pytest.param(1, 4, False, (), id="from-mid"),
    pytest.param(1, T - 1, True, (), id="reverse"),
    pytest.param(1, 0, False, ("++model.memory_temporal_stride_for_eval=2",), id="stride2"),
    pytest.param(1, 9, True, ("++model.memory_temporal_stride_for_eval=3",), id="reverse-stride3"),
    pytest.param(2, 0, False, "occluded", id="occluded-2obj"),
]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["sam2.1", "sam2"])
@pytest.mark.parametrize("n_obj,prompt_frame,reverse,extra", CASES)
@torch.no_grad()
def test_gather_matches_stock_every_frame(tmp_path, config, n_obj, prompt_frame, reverse, extra):
    occluded = extra == "occluded"
    predictor, state, cap, order = run_stock(tmp_path, config, n_obj, prompt_frame, reverse,
                                             () if occluded else extra, occluded)
    if occluded:
        scores = [float(o["object_score_logits"]) for k in range(n_obj)
                  for o in state["output_dict_per_obj"][k]["non_cond_frame_outputs"].values()]
        assert max(scores) <= 0
    bank = replay_and_compare(predictor, state, cap, order, n_obj, prompt_frame, reverse)
    # Bounded: 1 conditioning + 6 recent slots, whatever the video length.
    assert bank.nbytes == 1 * 7 * 256 * 64 * 2 * n_obj + n_obj * 16 * 256 * 4
