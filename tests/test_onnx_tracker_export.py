"""`sam2rl-fast export-tracker`: each network of the folder against sam2's torch code, the
manifest round trip, the loader's refusals, the command line.

One folder is exported (a random-weight reduced SAM 2.1 on a Hiera trunk, 128 px, one
fuser block in its memory encoder) and reused by the parity tests, on fresh random inputs
per test, with object and point counts other than the export's examples (so passing also
proves the axes are dynamic).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2rl_fast.export import tracker_check as tc
from sam2rl_fast.export.tracker import (
    FILE_NAMES,
    export_networks,
    export_tracker,
    learned_tensors,
)
from sam2rl_fast.export.tracker_folder import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    TrackerFolderError,
    load_tracker_folder,
    sha256_of,
)
from sam2rl_fast.model import bundled
from sam2rl_fast.model.loading import RandomWeightsWarning, build_model
from sam2rl_fast.outputs import OutputDirError

TOL = 1e-4
SIZE = 128
CPU = ["CPUExecutionProvider"]
CONFIG = bundled.LEGACY_CONFIG  # SAM 2.1 on a Hiera of width 24 (7 blocks): quick to trace
_cache: dict = {}


def _model():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        return build_model(CONFIG, image_size=SIZE, device="cpu",
                           overrides=("++model.memory_encoder.fuser.num_layers=1",))


@pytest.fixture
def exported(tmp_path_factory):
    """(model, folder, TrackerFolder on the CPU), exported and opened once for the module."""
    if "folder" not in _cache:
        model = _model()
        folder = tmp_path_factory.mktemp("onnx") / "tracker"
        manifest = export_tracker(model, folder, config_name="demo_sam2.1_tiny256.yaml",
                                  source=CONFIG, log=lambda *_: None)
        _cache.update(model=model, folder=folder, manifest=manifest,
                      opened=load_tracker_folder(folder, providers=CPU))
    return _cache["model"], _cache["folder"], _cache["opened"]


def _rng():
    return np.random.default_rng(torch.initial_seed())  # per test (conftest seeds torch)


def _check(folder, name, inputs, reference):
    errs = tc.compare(folder.sessions[name], inputs, reference)
    assert errs and all(e <= TOL for e in errs.values()), errs  # NaN/inf is an infinite error
    return errs


def test_image_encoder_matches_torch(exported):
    model, _, folder = exported
    x = tc.image_inputs(model, _rng())
    errs = _check(folder, "image_encoder", x, tc.image_reference(model, x))
    assert set(errs) == {"vision_features", "vision_pos_enc", "high_res_feat_0", "high_res_feat_1"}


@pytest.mark.parametrize("points,multimask,use_mask", [
    (1, True, False),   # one click: three candidates
    (3, False, False),  # three points: one mask (stability fallback included)
    (3, True, True),    # with a dense mask prompt
    (1, False, True),
])
def test_heads_match_torch(exported, points, multimask, use_mask):
    model, _, folder = exported
    x = tc.heads_inputs(model, _rng(), B=3, P=points, use_mask=use_mask, multimask=multimask)
    errs = _check(folder, "sam_heads", x, tc.heads_reference(model, x))
    if multimask:  # the candidates and the pointer each gives
        assert {"multimasks", "multimask_ious", "multimask_obj_ptrs"} <= set(errs)


def test_heads_tracking_frame_matches_torch(exported):
    """No prompt (one padding point, as sam2 passes) and sam2's multimask rule for tracking."""
    model, _, folder = exported
    x = tc.heads_inputs(model, _rng(), B=1, P=1, multimask=model._use_multimask(False, None))
    x["point_coords"][:] = 0
    x["point_labels"][:] = -1
    _check(folder, "sam_heads", x, tc.heads_reference(model, x))


@pytest.mark.parametrize("from_pts", [False, True])
def test_memory_encoder_matches_torch(exported, from_pts):
    model, _, folder = exported
    x = tc.memory_inputs(model, _rng(), B=3, present=(True, False, True), from_pts=from_pts)
    _check(folder, "memory_encoder", x, tc.memory_reference(model, x))
    # the object's absence is what changes the memory (SAM 2.1's no-object embedding)
    y = dict(x, object_score_logits=-x["object_score_logits"])
    a, b = (folder.run("memory_encoder", z)["maskmem_features"] for z in (x, y))
    emb = folder.tensors["no_obj_embed_spatial"][None, :, None, None]
    sign = np.where(x["object_score_logits"] > 0, 1.0, -1.0)[:, :, None, None]
    np.testing.assert_allclose(b - a, sign * emb * np.ones_like(a), atol=1e-5)


@pytest.mark.parametrize("frames,ptrs", [(1, 0), (3, 2)])
def test_memory_attention_matches_torch(exported, frames, ptrs):
    model, _, folder = exported
    errs = tc.memory_attention_check(model, folder.sessions["memory_attention"], _rng(), B=3,
                                     frames=frames, ptrs=ptrs)
    assert all(e <= TOL for e in errs.values()), errs


def test_manifest_round_trip(exported):
    from sam2rl_fast.policies.agent_file import model_signature

    model, path, folder = exported
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert folder.manifest == manifest == _cache["manifest"]
    assert manifest["format_version"] == FORMAT_VERSION and manifest["dtype"] == "float32"
    assert manifest["model"]["signature"] == model_signature(model)
    assert manifest["model"]["settings"]["grid"] == SIZE // 16
    assert manifest["image"]["shape"] == [1, 3, SIZE, SIZE] and len(manifest["image"]["std"]) == 3
    for role, entry in manifest["files"].items():
        assert sha256_of(path / entry["name"]) == entry["sha256"], role
    for name, sess in folder.sessions.items():
        io = manifest["files"][name]
        assert [i.name for i in sess.get_inputs()] == list(io["inputs"])
        assert [o.name for o in sess.get_outputs()] == list(io["outputs"])
    want = learned_tensors(model)
    assert set(folder.tensors) == set(want) == set(manifest["tensors"])
    for k, (a, _) in want.items():
        assert folder.tensors[k].dtype == np.float32 and np.array_equal(folder.tensors[k], a), k
    assert all(e <= TOL for e in manifest["check"]["max_relative_error_fp32"].values())


def _copy(path, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


@pytest.mark.parametrize("how", ["tampered", "missing", "swapped", "version", "foreign"])
def test_loader_refuses_folders_that_do_not_belong_together(exported, tmp_path, how):
    _, path, _ = exported
    d = _copy(path, tmp_path)
    m = json.loads((d / MANIFEST_NAME).read_text())
    if how == "tampered":
        with open(d / "sam_heads.onnx", "ab") as fh:
            fh.write(b"\0")
        match = "sam_heads.onnx does not belong"
    elif how == "missing":
        (d / "memory_encoder.onnx").unlink()
        match = "memory_encoder.onnx is missing"
    elif how == "swapped":  # another export's tensors
        np.savez(d / "tensors.npz", **{k: v + 1 for k, v in np.load(d / "tensors.npz").items()})
        match = "tensors.npz does not belong"
    elif how == "version":
        m["format_version"] = FORMAT_VERSION + 1
        (d / MANIFEST_NAME).write_text(json.dumps(m))
        match = f"format version {FORMAT_VERSION + 1}"
    else:
        m["format"] = "something-else"
        (d / MANIFEST_NAME).write_text(json.dumps(m))
        match = "not an exported tracker folder"
    with pytest.raises(TrackerFolderError, match=match):
        load_tracker_folder(d, providers=CPU)


def test_loader_runs_without_torch_or_sam2rl_fast(exported):
    """The loader module, on its own file, with torch and sam2rl_fast unimportable."""
    _, path, _ = exported
    loader = Path(__file__).resolve().parents[1] / "sam2rl_fast" / "export" / "tracker_folder.py"
    code = f"""
import importlib.util, sys
sys.modules["torch"] = None
sys.modules["sam2rl_fast"] = None
spec = importlib.util.spec_from_file_location("tracker_folder", {str(loader)!r})
tf = sys.modules["tracker_folder"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tf)
import numpy as np
folder = tf.load_tracker_folder({str(path)!r}, providers=["CPUExecutionProvider"], threads=1)
out = folder.run("image_encoder", {{"image": np.zeros((1, 3, {SIZE}, {SIZE}), np.float32)}})
print(sorted(out), out["vision_features"].shape, "torch" in sys.modules and sys.modules["torch"] is not None)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(f"(1, 256, {SIZE // 16}, {SIZE // 16}) False"), r.stdout


def test_cli_writes_a_fp16_folder_and_refuses_to_overwrite(tmp_path, capsys):
    import onnx

    from sam2rl_fast.cli import main

    out = tmp_path / "trk"
    args = ["export-tracker", "--model", CONFIG, "--image-size", str(SIZE), "-o", str(out), "--fp16"]
    assert main(args) == 0, capsys.readouterr().err
    assert "float16" in capsys.readouterr().out
    m = json.loads((out / MANIFEST_NAME).read_text())
    assert m["dtype"] == "float16" and m["model"]["source"] == CONFIG
    e16 = m["check"]["max_relative_error_fp16"]  # against torch fp32, where the CPU runs fp16
    assert isinstance(e16, str) or all(e <= 1e-2 for e in e16.values()), e16
    for name, f in FILE_NAMES.items():
        g = onnx.load_model(str(out / f)).graph
        assert g.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16, name
        assert m["files"][name]["inputs"][g.input[0].name][0] == "float16"
    before = {p.name: sha256_of(p) for p in out.iterdir() if p.is_file()}
    assert main(args) == 2  # an existing folder without --overwrite: refused before any work
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: sha256_of(p) for p in out.iterdir() if p.is_file()} == before
    (out / "notes.txt").write_text("mine")  # a user's file is never the tool's to replace
    with pytest.raises(OutputDirError):
        export_tracker(None, out)
    try:  # onnxruntime's CPU provider has no float16 kernel for some operators
        folder = load_tracker_folder(out, providers=CPU)
    except TrackerFolderError as e:
        assert "onnxruntime cannot load" in str(e)
        return
    img = np.zeros((1, 3, SIZE, SIZE), np.float16)
    assert np.isfinite(folder.run("image_encoder", {"image": img})["vision_features"]).all()


def test_bundled_model_masks_match_torch(tmp_path):
    """The shipped model at 256 px: image encoder + heads on a synthetic frame with a box
    prompt give torch's masks (the prompt frame: features + no_mem_embed, no memory)."""
    import onnxruntime as ort

    from sam2rl_fast.tracking.video import preprocess_frame
    from tests.helpers import moving_square_video

    model = build_model(None, device="cpu")
    S = model.image_size
    export_networks(model, tmp_path, ("image_encoder", "sam_heads"))
    sess = {n: ort.InferenceSession(str(tmp_path / FILE_NAMES[n]), providers=CPU)
            for n in ("image_encoder", "sam_heads")}
    frames, masks = moving_square_video(T=1, H=96, W=128)
    ys, xs = np.nonzero(masks[0, 0])
    box = np.array([[xs.min(), ys.min()], [xs.max(), ys.max()]], np.float32)
    coords = (box * np.array([S / 128, S / 96], np.float32))[None]
    labels = np.array([[2, 3]], np.int32)
    img = preprocess_frame(frames[0], S)[None]
    feats = dict(zip([o.name for o in sess["image_encoder"].get_outputs()],
                     sess["image_encoder"].run(None, {"image": img.numpy()})))
    pix = feats["vision_features"] + np.asarray(learned_tensors(model)["no_mem_embed"][0])[None, :, None, None]
    multimask = model._use_multimask(True, {"point_labels": torch.from_numpy(labels)})
    g = S // 16
    x = {"pix_feat": pix, "high_res_feat_0": feats["high_res_feat_0"],
         "high_res_feat_1": feats["high_res_feat_1"], "point_coords": coords, "point_labels": labels,
         "mask_input": np.zeros((1, 1, 4 * g, 4 * g), np.float32),
         "use_mask_input": np.array(False), "multimask_output": np.array(multimask)}
    low = sess["sam_heads"].run(["low_res_masks"], x)[0]
    with torch.no_grad():  # torch: the tracker's prompt-frame path
        _, vf, vp, sizes = model._prepare_backbone_features(model.forward_image(img))
        pix_t = model._prepare_memory_conditioned_features(
            frame_idx=0, is_init_cond_frame=True, current_vision_feats=vf[-1:],
            current_vision_pos_embeds=vp[-1:], feat_sizes=sizes[-1:], output_dict={}, num_frames=1)
        high = [x.permute(1, 2, 0).view(1, x.size(2), *s) for x, s in zip(vf[:-1], sizes[:-1])]
        pts = {"point_coords": torch.from_numpy(coords), "point_labels": torch.from_numpy(labels)}
        ref = model._forward_sam_heads(pix_t, pts, None, high, multimask)[3]
    assert tc.rel_err(low, ref.numpy()) <= TOL
    up = lambda m: torch.nn.functional.interpolate(torch.as_tensor(m), size=(96, 128), mode="bilinear",
                                                   align_corners=False)[0, 0].numpy() > 0
    ours, theirs = up(low), up(ref)
    assert theirs.any() and (ours != theirs).mean() <= 1e-3
    assert os.path.getsize(tmp_path / "sam_heads.onnx") > 0
