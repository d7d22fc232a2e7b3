"""ONNX export of sam2's memory attention: parity with stock, dynamic axes, metadata, errors.

One file is exported per (config, image size) and reused for every memory-frame and
pointer count, so passing tests also prove the batch and memory axes are dynamic. The
stock modules are sharpened first (peaky, dominant cross-attention): with random init
the attention is near-uniform and RoPE or pointer mistakes would hide below 1e-4.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import pytest
import torch

from sam2rl_fast.export.memory_attention import (
    ExportableMemoryAttention,
    OnnxMemoryAttention,
    OnnxMemoryAttentionError,
    add_export_memory_attention_args,
    export_memory_attention,
    export_memory_attention_cli,
    read_metadata,
)
from sam2rl_fast.model.loading import build_model
from tests.helpers import memory_attention_inputs, rel_err, sharpened

TOL = 1e-4
CPU = ["CPUExecutionProvider"]
CONFIGS = {"tiny": "sam2.1_hiera_t", "b+": "sam2.1_hiera_b+"}
_cache: dict = {}


def exported(tmp_path_factory, cfg: str, size: int):
    """(stock sam2 model with a sharpened memory attention, runner of its export), cached."""
    if (cfg, size) not in _cache:
        torch.manual_seed(0)
        model = build_model(CONFIGS[cfg], image_size=size, device="cpu")
        model.memory_attention = sharpened(model.memory_attention).eval()
        path = tmp_path_factory.mktemp("onnx") / f"ma_{cfg}_{size}.onnx"
        export_memory_attention(model, path, config_name=CONFIGS[cfg])
        _cache[cfg, size] = (model, OnnxMemoryAttention(path, providers=CPU))
    return _cache[cfg, size]


def compare(model, runner, B, n_mem, n_ptr, gen_seed=0):
    side = model.image_size // model.backbone_stride
    inputs = memory_attention_inputs(side, B, n_mem, n_ptr,
                                     gen=torch.Generator().manual_seed(gen_seed))
    with torch.no_grad():
        ref = model.memory_attention(*inputs, num_obj_ptr_tokens=n_ptr)
    out = torch.from_numpy(runner(*inputs, num_obj_ptr_tokens=n_ptr))
    assert out.shape == ref.shape
    return out, ref, inputs


@pytest.mark.parametrize("cfg", ["tiny", "b+"])
def test_parity_256_dynamic_frames_and_pointers(tmp_path_factory, cfg):
    model, runner = exported(tmp_path_factory, cfg, 256)
    for B, n_mem, n_ptr in [(1, 1, 0), (2, 4, 8), (1, 7, 64), (3, 7, 0), (2, 1, 64)]:
        out, ref, _ = compare(model, runner, B, n_mem, n_ptr)
        err = rel_err(out, ref)
        assert err <= TOL, (cfg, B, n_mem, n_ptr, err)


@pytest.mark.parametrize("cfg", ["tiny", pytest.param("b+", marks=pytest.mark.slow)])
def test_parity_1024(tmp_path_factory, cfg):
    model, runner = exported(tmp_path_factory, cfg, 1024)
    for n_ptr in (0, 8):
        out, ref, _ = compare(model, runner, 1, 1, n_ptr)
        assert rel_err(out, ref) <= TOL, (cfg, n_ptr, rel_err(out, ref))


def test_torch_module_matches_stock():
    torch.manual_seed(0)
    ma = sharpened(build_model("sam2.1_hiera_t", image_size=256, device="cpu").memory_attention)
    mod = ExportableMemoryAttention.from_sam2(ma, grid=16)
    inputs = memory_attention_inputs(16, 2, 3, 12)
    with torch.no_grad():
        out = mod(*inputs, torch.tensor(12))
        ref = ma(*inputs, num_obj_ptr_tokens=12)
    assert rel_err(out, ref) <= TOL


def test_comparison_catches_wrong_outputs(tmp_path_factory):
    """The parity check fails on poisoned or NaN outputs, and on a wrong pointer count (the
    pointer input really changes which keys are rotated)."""
    model, runner = exported(tmp_path_factory, "tiny", 256)
    out, ref, inputs = compare(model, runner, 2, 4, 8)
    assert rel_err(out, ref) <= TOL
    poisoned = out.clone()
    poisoned[7, 1, :16] += 0.05 * ref.abs().max()
    assert rel_err(poisoned, ref) > TOL
    nan = out.clone()
    nan[0, 0, 0] = float("nan")
    assert rel_err(nan, ref) == float("inf")
    # NaN in the inputs comes out as NaN, which never passes.
    bad = [t.clone() for t in inputs]
    bad[1][3, 0, 5] = float("nan")
    assert rel_err(torch.from_numpy(runner(*bad, num_obj_ptr_tokens=8)), ref) == float("inf")
    # The pointer count is a live graph input: the same inputs with all 8 pointer tokens
    # rotated as if spatial (run on the session directly; the runner would refuse) differ.
    feed = dict(zip(runner.session.get_inputs(), [t.numpy() for t in inputs]))
    feed = {i.name: v for i, v in feed.items()}
    feed["num_obj_ptr_tokens"] = np.array(0, np.int64)
    rotated = torch.from_numpy(runner.session.run(None, feed)[0])
    assert rel_err(rotated, ref) > 100 * TOL


def test_metadata_and_checker(tmp_path_factory):
    _, runner = exported(tmp_path_factory, "tiny", 256)
    onnx.checker.check_model(str(runner.path), full_check=True)
    proto = onnx.load(str(runner.path))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}
    meta = read_metadata(runner.path)
    assert meta["sam2_config"] == "sam2.1_hiera_t"
    assert (meta["image_size"], meta["grid"], meta["num_query_tokens"]) == ("256", "16", "256")
    assert (meta["d_model"], meta["mem_dim"], meta["tokens_per_obj_ptr"]) == ("256", "64", "4")
    assert "num_obj_ptr_tokens" in meta["inputs"] and "pix_feat_with_mem" in meta["outputs"]
    # Dynamic batch and memory length, static query count.
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in proto.graph.input}
    assert dims["curr"] == [256, "batch", 256]
    assert dims["memory"] == ["memory_length", "batch", 64]
    assert dims["num_obj_ptr_tokens"] == []
    assert runner.provider == "CPUExecutionProvider"


def test_overwrite_refused_then_allowed(tmp_path_factory, tmp_path):
    model, runner = exported(tmp_path_factory, "tiny", 256)
    before = runner.path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        export_memory_attention(model, runner.path)
    assert runner.path.read_bytes() == before
    # overwrite=True replaces it (here with the 512 grid of the same weights).
    path = tmp_path / "ma.onnx"
    path.write_bytes(b"old")
    export_memory_attention(model.memory_attention, path, image_size=512, overwrite=True)
    assert read_metadata(path)["grid"] == "32"
    assert not [p for p in tmp_path.iterdir() if p.name != "ma.onnx"]  # no temp file left


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        OnnxMemoryAttention(tmp_path / "nope.onnx", providers=CPU)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(OnnxMemoryAttentionError, match="not a readable ONNX model"):
        OnnxMemoryAttention(corrupt, providers=CPU)
    other = tmp_path / "other.onnx"  # a valid ONNX model that is not ours
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), other)
    with pytest.raises(OnnxMemoryAttentionError, match="not a memory attention"):
        OnnxMemoryAttention(other, providers=CPU)


def test_export_rejects_bad_arguments(tmp_path):
    torch.manual_seed(0)
    model = build_model("sam2.1_hiera_t", image_size=256, device="cpu")
    out = tmp_path / "x.onnx"
    with pytest.raises(OnnxMemoryAttentionError, match="multiple of the backbone stride"):
        export_memory_attention(model, out, image_size=250)
    with pytest.raises(OnnxMemoryAttentionError, match="square"):
        export_memory_attention(model.memory_attention, out, grid=(16, 32))
    with pytest.raises(OnnxMemoryAttentionError, match="needs image_size"):
        export_memory_attention(model.memory_attention, out)
    with pytest.raises(OnnxMemoryAttentionError, match="opset"):
        export_memory_attention(model, out, opset=16)
    with pytest.raises(TypeError, match="MemoryAttention"):
        export_memory_attention(torch.nn.Linear(2, 2), out)
    assert not out.exists()


def test_run_rejects_bad_inputs(tmp_path_factory):
    _, runner = exported(tmp_path_factory, "tiny", 256)
    c, m, cp, mp = memory_attention_inputs(16, 2, 2, 8)
    cases = [
        ((c[:250], m, cp[:250], mp, 8), "not even a square grid"),  # 250 tokens
        ((c[:225], m, cp[:225], mp, 8), "16x16 grid"),  # square, but another grid
        ((c[..., :128], m, cp[..., :128], mp, 8), r"\[256, B, 256\]"),
        ((c, m[..., :32], cp, mp[..., :32], 8), "memory must be"),
        ((c, m, cp, mp[:-1], 8), "memory_pos"),
        ((c[0], m, cp[0], mp, 8), "3-D"),
        ((c, m, cp, mp, 6), "multiple of 4"),
        ((c, m, cp, mp, -4), "multiple of 4"),
        ((c, m[:4], cp, mp[:4], 8), "multiple of 4"),  # more pointers than memory
        ((c, m, cp, mp, 4), "whole number of memory frames"),
        ((c, m[:0], cp, mp[:0], 0), "M>0"),
    ]
    for args, msg in cases:
        with pytest.raises(OnnxMemoryAttentionError, match=msg):
            runner(*args)


def test_cli_exports_and_refuses_overwrite(tmp_path, capsys):
    parser = add_export_memory_attention_args(argparse.ArgumentParser())
    out = tmp_path / "cli.onnx"
    args = parser.parse_args(["--model", "sam2.1_hiera_t", "--image-size", "256", "-o", str(out)])
    assert export_memory_attention_cli(args) == 0
    meta = read_metadata(out)
    assert meta["sam2_config"] == "configs/sam2.1/sam2.1_hiera_t.yaml" and meta["grid"] == "16"
    assert "wrote" in capsys.readouterr().out
    before = out.read_bytes()
    assert export_memory_attention_cli(args) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    bad = parser.parse_args(["--model", "sam2.1_hiera_t", "--image-size", "250", "-o",
                             str(tmp_path / "bad.onnx")])
    assert export_memory_attention_cli(bad) == 2
    assert "multiple of 32" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # -o is required
        parser.parse_args(["--model", "sam2.1_hiera_t"])


def test_cli_reads_a_checkpoint_once_and_names_its_config(tmp_path, monkeypatch):
    """The model build and the metadata's config name share one read of the checkpoint
    (weights only)."""
    from sam2rl_fast.model.loading import bundled_checkpoint

    ckpt, _ = bundled_checkpoint()
    real, reads = torch.load, []

    def counted(*a, **k):
        reads.append(k.get("weights_only"))
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", counted)
    out = tmp_path / "bundled.onnx"
    args = add_export_memory_attention_args(argparse.ArgumentParser()).parse_args(
        ["--model", str(ckpt), "-o", str(out)])
    assert export_memory_attention_cli(args) == 0
    assert reads == [True]
    assert read_metadata(out)["sam2_config"] == "sam2rl_effnet256.yaml"
