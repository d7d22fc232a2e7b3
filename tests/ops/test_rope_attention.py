"""Fused RoPE attention op against its reference (fp64) and on bad input."""

import pytest
import torch

from sam2rl_fast.ops import rope_attention
from sam2rl_fast.ops.reference import rope_attention_ref
from tests.helpers import rel_err

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def inputs(B, side, n_mem, n_ptr, D=256, Dv=64, device="cpu", dtype=torch.float32):
    Nq, M = side * side, n_mem * side * side + n_ptr
    q = torch.randn(B, Nq, D, device=device, dtype=dtype)
    k = torch.randn(B, M, D, device=device, dtype=dtype)
    v = torch.randn(B, M, Dv, device=device, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("device", DEVICES)
# CPU tiles are 128 queries x 256 keys: side 12 (144 queries) and 7, 5 leave partial query
# tiles; B = 3 splits (batch, tile) jobs across threads mid-batch.
@pytest.mark.parametrize("B,side", [(1, 16), (3, 7), (2, 5), (3, 12)])
@pytest.mark.parametrize("n_mem,n_ptr", [(1, 0), (4, 8), (7, 64), (2, 3)])
def test_matches_reference_fp32(device, B, side, n_mem, n_ptr):
    q, k, v = inputs(B, side, n_mem, n_ptr, device=device)
    out, lse = rope_attention(q, k, v, side, n_ptr)
    ref, ref_lse = rope_attention_ref(q.double(), k.double(), v.double(), side, n_ptr)
    assert rel_err(out, ref) <= 1e-4 and rel_err(lse, ref_lse) <= 1e-4


def test_self_attention_shape_and_opcheck():
    q, k, v = inputs(2, 6, 1, 0, D=32, Dv=32)
    out, lse = rope_attention(q, k, v, 6)
    assert out.shape == (2, 36, 32) and lse.shape == (2, 36)
    torch.library.opcheck(torch.ops.sam2rl_fast.rope_attention.default,
                          (q, k, v, 6, 0, 32 ** -0.5, 10000.0))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fast_cpu_kernel_opcheck_and_uninitialised_memory(threads):
    # D = 256 with partial query tiles and key blocks (M = 296); outputs are allocated
    # with at::empty, which deterministic mode fills with NaN: any element the kernel
    # failed to write fails the comparison.
    q, k, v = inputs(3, 12, 2, 8)
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = True
        out, lse = rope_attention(q, k, v, 12, 8)
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
        torch.utils.deterministic.fill_uninitialized_memory = old_fill
    ref, ref_lse = rope_attention_ref(q.double(), k.double(), v.double(), 12, 8)
    assert rel_err(out, ref) <= 1e-4 and rel_err(lse, ref_lse) <= 1e-4
    torch.library.opcheck(torch.ops.sam2rl_fast.rope_attention.default,
                          (q, k, v, 12, 8, 256 ** -0.5, 10000.0))


@pytest.mark.parametrize("Dv", [64, 256, 20])  # 20: not a multiple of 8, portable path only
def test_portable_and_avx512_paths_agree(monkeypatch, Dv):
    # The CPU kernel picks AVX-512 micro-kernels at run time when the CPU has them and a
    # portable BLAS path otherwise; SAM2RL_FAST_CPU_ATTENTION=blas forces the latter, so
    # both are tested on an AVX-512 machine (elsewhere both runs take the portable path).
    q, k, v = inputs(2, 12, 3, 8, Dv=Dv)
    ref, ref_lse = rope_attention_ref(q.double(), k.double(), v.double(), 12, 8)
    out, lse = rope_attention(q, k, v, 12, 8)
    monkeypatch.setenv("SAM2RL_FAST_CPU_ATTENTION", "blas")
    out_b, lse_b = rope_attention(q, k, v, 12, 8)
    for o, l in ((out, lse), (out_b, lse_b)):
        assert rel_err(o, ref) <= 1e-4 and rel_err(l, ref_lse) <= 1e-4


@pytest.mark.parametrize("args,match", [
    (dict(side=5), "square grid"),
    (dict(n_ptr=3, drop_keys=1), "whole number of memory frames"),
    (dict(dv_batch=3), "shapes do not match"),
])
def test_bad_input(args, match):
    q, k, v = inputs(2, 4, 2, 3)
    if args.get("drop_keys"):
        k, v = k[:, 1:], v[:, 1:]
    if args.get("dv_batch"):
        v = torch.randn(3, v.shape[1], 64)
    with pytest.raises(RuntimeError, match=match):
        rope_attention(q, k, v, args.get("side", 4), args.get("n_ptr", 3))


def test_cpu_takes_fp32_or_bf16_only():
    q, k, v = inputs(1, 4, 1, 0, dtype=torch.float16)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        rope_attention(q, k, v, 4)


# bf16 on the CPU: the AVX512-BF16 kernels where the CPU has them ("auto"), the fp32 kernels
# on fp32 copies elsewhere (forced by SAM2RL_FAST_CPU_ATTENTION=fp32): both against fp64.
@pytest.mark.parametrize("path", ["auto", "fp32"])
@pytest.mark.parametrize("B,side,n_mem,n_ptr,D,Dv", [
    (2, 16, 3, 16, 256, 64), (1, 12, 1, 0, 256, 256), (3, 7, 2, 5, 64, 64), (1, 5, 7, 64, 256, 64)])
def test_cpu_bf16_vs_fp64(monkeypatch, path, B, side, n_mem, n_ptr, D, Dv):
    if path == "fp32":
        monkeypatch.setenv("SAM2RL_FAST_CPU_ATTENTION", "fp32")
    q, k, v = inputs(B, side, n_mem, n_ptr, D, Dv, dtype=torch.bfloat16)
    out, lse = rope_attention(q, k, v, side, n_ptr)
    assert out.dtype == torch.bfloat16 and lse.dtype == torch.float32
    ref, ref_lse = rope_attention_ref(q.double(), k.double(), v.double(), side, n_ptr)
    assert rel_err(out, ref) <= 1e-2 and rel_err(lse, ref_lse) <= 1e-3
    torch.library.opcheck(torch.ops.sam2rl_fast.rope_attention.default, (q, k, v, side, n_ptr, D ** -0.5, 10000.0))


def test_cpu_bf16_propagates_nan():
    q, k, v = inputs(1, 8, 2, 3, dtype=torch.bfloat16)
    q[0, 5, 7] = float("nan")
    v[0, 70, 1] = float("nan")  # a value every query reads
    out, _ = rope_attention(q, k, v, 8, 3)
    assert out[0, 5].isnan().all()  # the poisoned query's scores
    assert out[0, :, 1].isnan().all() and not out[0, 4, 0].isnan()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 1e-2), (torch.float16, 1e-2)])
@pytest.mark.parametrize("n_mem,n_ptr", [(1, 0), (7, 64)])
def test_cuda_low_precision_vs_fp64(dtype, tol, n_mem, n_ptr):
    q, k, v = inputs(3, 16, n_mem, n_ptr, device="cuda", dtype=dtype)
    out, lse = rope_attention(q, k, v, 16, n_ptr)
    ref, _ = rope_attention_ref(q.double().cpu(), k.double().cpu(), v.double().cpu(), 16, n_ptr)
    assert out.dtype == dtype and rel_err(out.cpu(), ref) <= tol


@pytest.mark.cuda
def test_cuda_equals_cpu_fp32():
    q, k, v = inputs(2, 8, 3, 8)
    out_cpu, lse_cpu = rope_attention(q, k, v, 8, 8)
    out, lse = rope_attention(q.cuda(), k.cuda(), v.cuda(), 8, 8)
    assert rel_err(out.cpu(), out_cpu) <= 1e-5 and rel_err(lse.cpu(), lse_cpu) <= 1e-5


def test_torch_compile_fullgraph():
    # The op traces as one node (fake registration, SymInt sizes) and runs the real kernel.
    q, k, v = inputs(2, 12, 3, 8)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def attend(q, k, v):
        out, lse = rope_attention(q, k, v, 12, 8)
        return out * 2.0, lse

    out, lse = attend(q, k, v)
    ref, ref_lse = rope_attention_ref(q.double(), k.double(), v.double(), 12, 8)
    assert rel_err(out, 2 * ref) <= 1e-4 and rel_err(lse, ref_lse) <= 1e-4


def _cpu_flags() -> set:
    try:
        return {f for line in open("/proc/cpuinfo") if line.startswith("flags") for f in line.split()}
    except OSError:
        return set()


@pytest.mark.skipif("avx512_bf16" not in _cpu_flags(), reason="the CPU has no AVX512-BF16")
def test_cpu_bf16_kernel_runs_where_the_cpu_has_it(monkeypatch):
    """Guards the test above: on an AVX512-BF16 CPU, "auto" is the bf16 kernel (its rounding
    differs from the fp32 kernels'), not a silent fallback."""
    q, k, v = inputs(1, 16, 2, 8, dtype=torch.bfloat16)
    auto = rope_attention(q, k, v, 16, 8)[0]
    monkeypatch.setenv("SAM2RL_FAST_CPU_ATTENTION", "fp32")
    fallback = rope_attention(q, k, v, 16, 8)[0]
    assert not torch.equal(auto, fallback) and rel_err(auto, fallback) <= 1e-2
