"""Triton kernels for golfrun's train_gpt.py (their bytes count toward the artifact).

Public API (each traceable by torch.compile: torch.library custom ops with fake implementations and
registered autograd, all in the namespace NAMESPACE):
    softcap_cross_entropy(logits, targets, softcap, reduction="mean")
        logits (..., V) bf16/fp16/fp32, any V; targets (...) int64, < 0 = ignored. Returns fp32 loss
        ("mean" over non-ignored targets, "sum", or "none" per position). softcap 0 means no softcap.
    fused_mlp(x, w_up, w_down, slope=0.5)
        x (..., D); w_up (H, D); w_down (D, H); same float dtype. Returns LeakyReLU(slope)^2(x w_up^T) w_down^T.
    qk_norm_rope(q, k, rope, gain)
        q (..., T, Hq, D), k (..., T, Hk, D); rope = (cos, sin) (..., T, 1, P) fp32; gain (Hq,). Returns the
        attention's queries and keys: per-head RMSNorm, RoPE on the first 2P dims, the queries times gain.
Their plain-PyTorch maths, with the same signatures, is in kernels_reference.py (not shipped). Every kernel also
runs on the CPU under TRITON_INTERPRET=1 (that is how CI tests them against it).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

NAMESPACE = "golfrun"
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_device(t: torch.Tensor) -> None:
    if not (t.is_cuda or INTERPRETING):
        raise RuntimeError("golfrun Triton kernels need a CUDA tensor, or TRITON_INTERPRET=1 on the CPU")


LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * log2(e)); exp2 is one hardware instruction


@triton.jit
def _tanh(x):
    # tanh(x) = 1 - 2 / (exp(2x) + 1): one exp2 and one fast (non-IEEE, ~2 ulp) division. Portable across
    # backends and the interpreter; a precise divide here costs ~10% of the CE kernel's time on H100.
    return 1.0 - tl.fdiv(2.0, tl.exp2(x * (2.0 * LOG2E)) + 1.0)


# -----------------------------------------------------------------------------
# Fused softcapped cross-entropy
# Forward, per row:  z = c * tanh(x / c);  lse = log sum_j exp(z_j);  loss = lse - z_target.
# Backward:          dloss/dx_j = (softmax(z)_j - [j == target]) * (1 - tanh^2(x_j / c)) * grad_row,
# since dz/dx = 1 - tanh^2. The forward streams the row once with an online max/sum and saves only lse
# (one fp32 per row); the backward recomputes z from x. The N x V fp32 z is never materialised.
# -----------------------------------------------------------------------------

@triton.jit
def _softcap_ce_fwd_kernel(logits_ptr, targets_ptr, loss_ptr, lse_ptr, n_cols, stride_row, softcap,
                           HAS_SOFTCAP: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride overflows int32 at 98k x 8192
    row_ptr = logits_ptr + row * stride_row
    target = tl.load(targets_ptr + row)
    running_max = tl.full((), float("-inf"), tl.float32)
    running_sum = tl.zeros((), tl.float32)
    target_z = tl.zeros((), tl.float32)
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = cols < n_cols
        # 1. load a block of logits and apply the softcap in fp32
        z = tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_SOFTCAP:
            z = softcap * _tanh(z / softcap)
        z = tl.where(mask, z, float("-inf"))
        # 2. online log-sum-exp: rescale the running sum to the new max
        new_max = tl.maximum(running_max, tl.max(z, axis=0))
        running_sum = running_sum * tl.exp2((running_max - new_max) * LOG2E) + tl.sum(tl.exp2((z - new_max) * LOG2E), axis=0)
        running_max = new_max
        # 3. pick up the target's z when it is in this block
        target_z += tl.sum(tl.where(cols == target, z, 0.0), axis=0)
    lse = running_max + tl.log(running_sum)
    tl.store(lse_ptr + row, lse)
    tl.store(loss_ptr + row, tl.where(target >= 0, lse - target_z, 0.0))


@triton.jit
def _softcap_ce_bwd_kernel(logits_ptr, targets_ptr, lse_ptr, grad_loss_ptr, grad_logits_ptr, n_cols,
                           stride_row, stride_grad_row, softcap, HAS_SOFTCAP: tl.constexpr,
                           BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    grad_row_ptr = grad_logits_ptr + row * stride_grad_row
    target = tl.load(targets_ptr + row)
    lse = tl.load(lse_ptr + row)
    # ignored rows get a zero gradient
    grad_row = tl.where(target >= 0, tl.load(grad_loss_ptr + row), 0.0)
    for start in range(0, n_cols, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        mask = cols < n_cols
        # 1. recompute z (and tanh for the chain rule) from the logits
        x = tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_SOFTCAP:
            t = _tanh(x / softcap)
            z = softcap * t
            dz_dx = 1.0 - t * t
        else:
            z = x
            dz_dx = 1.0
        # 2. (softmax - onehot) * dz/dx * upstream gradient, written to a fresh buffer
        p = tl.exp2((z - lse) * LOG2E)
        grad = (p - tl.where(cols == target, 1.0, 0.0)) * dz_dx * grad_row
        tl.store(grad_row_ptr + cols, grad.to(grad_logits_ptr.dtype.element_ty), mask=mask)


CE_NUM_WARPS = 4  # for 8192-wide blocks; fastest of 4/8/16 on H100 (2.13 / 2.20 / 2.37 ms, 2026-11-24)


def _ce_launch_config(n_cols: int) -> dict:
    # The whole 8192-wide row in one block when it fits (one pass, no rescaling). Wider vocabularies loop
    # over 8192-wide blocks.
    block = min(triton.next_power_of_2(n_cols), 8192)
    return dict(BLOCK_V=block, num_warps=CE_NUM_WARPS if block >= 4096 else 4)


@torch.library.custom_op(f"{NAMESPACE}::softcap_ce_fwd", mutates_args=())
def _softcap_ce_fwd(logits: torch.Tensor, targets: torch.Tensor, softcap: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check_device(logits)
    n_rows, n_cols = logits.shape
    loss = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    lse = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    _softcap_ce_fwd_kernel[(n_rows,)](logits, targets, loss, lse, n_cols, logits.stride(0), float(softcap),
                                      HAS_SOFTCAP=softcap > 0, **_ce_launch_config(n_cols))
    return loss, lse


@_softcap_ce_fwd.register_fake
def _(logits, targets, softcap):
    n_rows = logits.shape[0]
    return logits.new_empty(n_rows, dtype=torch.float32), logits.new_empty(n_rows, dtype=torch.float32)


@torch.library.custom_op(f"{NAMESPACE}::softcap_ce_bwd", mutates_args=())
def _softcap_ce_bwd(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, grad_loss: torch.Tensor,
                    softcap: float) -> torch.Tensor:
    _check_device(logits)
    n_rows, n_cols = logits.shape
    grad_logits = torch.empty_like(logits)  # fresh buffer: the saved logits are never overwritten
    _softcap_ce_bwd_kernel[(n_rows,)](logits, targets, lse, grad_loss, grad_logits, n_cols, logits.stride(0),
                                      grad_logits.stride(0), float(softcap), HAS_SOFTCAP=softcap > 0,
                                      **_ce_launch_config(n_cols))
    return grad_logits


@_softcap_ce_bwd.register_fake
def _(logits, targets, lse, grad_loss, softcap):
    return torch.empty_like(logits)


def _softcap_ce_setup(ctx, inputs, output):
    logits, targets, softcap = inputs
    ctx.save_for_backward(logits, targets, output[1])
    ctx.softcap = softcap


def _softcap_ce_backward(ctx, grad_loss, _grad_lse):
    logits, targets, lse = ctx.saved_tensors
    return _softcap_ce_bwd(logits, targets, lse, grad_loss.contiguous(), ctx.softcap), None, None


_softcap_ce_fwd.register_autograd(_softcap_ce_backward, setup_context=_softcap_ce_setup)


def _reduce(losses: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return losses.view(targets.shape)
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.sum() / (targets >= 0).sum().clamp_min(1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def softcap_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, softcap: float,
                          reduction: str = "mean") -> torch.Tensor:
    """Fused kernel. logits (..., V), targets (...) with < 0 = ignored."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    flat = logits.reshape(-1, logits.size(-1))
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    losses, _ = _softcap_ce_fwd(flat, targets.reshape(-1).contiguous(), float(softcap))
    return _reduce(losses, targets, reduction)


# -----------------------------------------------------------------------------
# Fused MLP: up-projection with the LeakyReLU(s)^2 epilogue (parameter-golf PR #1530's idea; the records: s = 0.5)
# f(p) = p^2 for p > 0, (s p)^2 otherwise;  f'(p) = 2p for p > 0, 2 s^2 p otherwise (0.5 p at s = 0.5).
# Forward:  pre = x W_up^T and act = f(pre) in one kernel; out = act W_down^T (cuBLAS). pre and act are kept
#           for the backward.
# Backward: the same kernel computes grad_pre = (grad_out W_down) * f'(pre) from the saved pre, rounding
#           grad_out W_down to 16 bits before the product, as the record does; then dW_down = grad_out^T act,
#           dW_up = grad_pre^T x, dx = grad_pre W_up (cuBLAS). pre and act are outputs of the forward op
#           (so that autograd can save them) but not differentiable: no zero gradients are made for them.
# The kernel is persistent (one program per SM walks the output tiles) and moves every tile with TMA
# tensor descriptors; its epilogue works on two column halves of the tile, which keeps fewer registers live
# and gives two smaller TMA stores. Against torch.compile of the same maths it runs 1.01x (fwd+bwd) and 1.10x
# (forward) on an H100, where the plain tiled kernel before it ran 0.94x (docs/BENCHMARKS.md, 2026-11-26).
# -----------------------------------------------------------------------------

@triton.jit
def _leaky_sq_half(acc, pre_desc, out_desc, m0, n0, BACKWARD: tl.constexpr, SLOPE: tl.constexpr):
    """Epilogue of one column half: forward stores pre and f(pre), backward stores acc * f'(pre)."""
    if BACKWARD:
        # grad_out W_down rounded to 16 bits before the product with f'(pre), as the record's kernel rounds
        # (bit-identical grad_pre). The product of two 16-bit values is exact in fp32, so multiplying there
        # and rounding at the store equals a 16-bit multiply (which the interpreter gets wrong); exact for a
        # power-of-two 2 s^2 (s = 0.5), within one rounding for another slope.
        pre = pre_desc.load([m0, n0]).to(tl.float32)
        out = acc.to(pre_desc.dtype).to(tl.float32) * tl.where(pre > 0, 2.0 * pre, (2.0 * SLOPE * SLOPE) * pre)
    else:
        stored = acc.to(pre_desc.dtype)
        pre_desc.store([m0, n0], stored)
        pre = stored.to(tl.float32)  # f of the stored (rounded) pre, as the backward sees it
        leaky = tl.where(pre > 0, pre, SLOPE * pre)
        out = leaky * leaky
    out_desc.store([m0, n0], out.to(out_desc.dtype))


@triton.jit
def _mm_leaky_sq_kernel(a_desc, b_desc, pre_desc, out_desc, M, N, K, M_BUCKET,
                        BACKWARD: tl.constexpr, SLOPE: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PROGRAMS: tl.constexpr,
                        UPCAST_DOT: tl.constexpr):
    # a (M, K); b (N, K), read transposed; pre, out (M, N). TMA zero-fills and clips partial tiles.
    tiles_n = tl.cdiv(N, BLOCK_N)
    tiles = tl.cdiv(M, BLOCK_M) * tiles_n
    HALF: tl.constexpr = BLOCK_N // 2
    for tile in tl.range(tl.program_id(0), tiles, PROGRAMS, flatten=True):
        # 1. row-major tile order: the tiles of one row block run together and share its A in L2
        m0 = (tile // tiles_n) * BLOCK_M
        n0 = (tile % tiles_n) * BLOCK_N
        # 2. acc = A @ B over K, fp32 accumulation
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            a = a_desc.load([m0, k0])
            b = b_desc.load([n0, k0]).T
            if UPCAST_DOT:  # the Triton 3.9 interpreter computes bf16 tl.dot wrongly; fp32 is exact there
                a, b = a.to(tl.float32), b.to(tl.float32)
            acc = tl.dot(a, b, acc)
        # 3. epilogue, one column half at a time
        left, right = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, HALF)), (0, 2, 1)))
        _leaky_sq_half(left, pre_desc, out_desc, m0, n0, BACKWARD, SLOPE)
        _leaky_sq_half(right, pre_desc, out_desc, m0, n0 + HALF, BACKWARD, SLOPE)


def _set_block_shapes(args: dict) -> None:
    """Autotuner pre-hook: the TMA descriptors' block shapes follow the config being tried."""
    bm, bn, bk = args["BLOCK_M"], args["BLOCK_N"], args["BLOCK_K"]
    args["a_desc"].block_shape = [bm, bk]
    args["b_desc"].block_shape = [bn, bk]
    args["pre_desc"].block_shape = args["out_desc"].block_shape = [bm, bn // 2]


# H100 candidates at M ~ 1e5, N = 2048, K = 512, for 16-bit inputs (fp32 tiles would not fit in shared
# memory; _check_mlp_args refuses them on the GPU); the interpreter gets one small tile so CPU tests stay fast.
# The tuning key is M rounded up to a power of two (M_BUCKET, unused by the kernel), so a new M in the same
# bucket does not tune again. Configs with a pre-hook are not cached on disk: each process tunes once.
_MM_GPU_CONFIGS = [triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk), num_warps=w, num_stages=s,
                                 pre_hook=_set_block_shapes)
                   for bm, bn, bk, w, s in [(128, 256, 64, 8, 3), (128, 256, 64, 8, 4), (128, 128, 64, 4, 4),
                                            (128, 128, 64, 8, 4), (256, 128, 64, 8, 3)]]
_MM_CPU_CONFIG = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, num_warps=4, num_stages=1)
_mm_leaky_sq_autotuned = triton.autotune(configs=_MM_GPU_CONFIGS, key=["M_BUCKET", "N", "K", "BACKWARD"])(
    _mm_leaky_sq_kernel)
TMA_ALIGN_BYTES = 16  # a TMA descriptor needs 16-byte aligned base addresses and row strides


def _tma_ready(t: torch.Tensor) -> torch.Tensor:
    """t contiguous, at a 16-byte aligned address (a contiguous view can start anywhere: then a copy)."""
    t = t.contiguous()
    return t if t.data_ptr() % TMA_ALIGN_BYTES == 0 else t.clone()


def _launch_mm_leaky_sq(a, b, pre, out, backward: bool, slope: float) -> None:
    """a (M, K) @ b^T, b (N, K); pre, out (M, N), fresh. Every output is a pure function of the inputs, so
    the autotuner's repeated launches are harmless. M = 0 launches nothing (a descriptor needs rows)."""
    a, b = _tma_ready(a), _tma_ready(b)
    if a.shape[0] == 0:
        return
    M, K = a.shape
    N = b.shape[0]
    m_bucket = 1 << max(0, (M - 1).bit_length())
    cfg = _MM_GPU_CONFIGS[0].kwargs if a.is_cuda else _MM_CPU_CONFIG  # on the GPU the pre-hook resets the shapes
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    descs = (TensorDescriptor.from_tensor(a, [bm, bk]), TensorDescriptor.from_tensor(b, [bn, bk]),
             TensorDescriptor.from_tensor(pre, [bm, bn // 2]), TensorDescriptor.from_tensor(out, [bm, bn // 2]))
    args = (*descs, M, N, K, m_bucket)
    if a.is_cuda:
        sms = torch.cuda.get_device_properties(a.device).multi_processor_count
        grid = lambda meta: (min(sms, triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])),)  # noqa: E731
        _mm_leaky_sq_autotuned[grid](*args, BACKWARD=backward, SLOPE=slope, PROGRAMS=sms, UPCAST_DOT=False)
    else:
        programs = 3  # a few programs, each walking several tiles: the persistent loop is exercised on the CPU
        _mm_leaky_sq_kernel[(programs,)](*args, BACKWARD=backward, SLOPE=slope, PROGRAMS=programs,
                                         UPCAST_DOT=INTERPRETING, **cfg)


def _check_mlp_args(x2d, w_up, w_down) -> None:
    _check_device(x2d)
    if x2d.dim() != 2 or w_up.shape[1] != x2d.shape[1] or w_down.shape != (x2d.shape[1], w_up.shape[0]):
        raise ValueError(f"fused_mlp shapes: x {tuple(x2d.shape)}, w_up {tuple(w_up.shape)}, "
                         f"w_down {tuple(w_down.shape)}; need x (M, D), w_up (H, D), w_down (D, H)")
    if not (x2d.dtype == w_up.dtype == w_down.dtype):
        raise ValueError(f"fused_mlp dtypes differ: {x2d.dtype}, {w_up.dtype}, {w_down.dtype}")
    if x2d.is_cuda and x2d.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"fused_mlp on the GPU takes bf16 or fp16 (its tiles are sized for them), not "
                         f"{x2d.dtype}; set FUSED_MLP_ENABLED=0 for other dtypes")
    for name, size in (("model dim", x2d.shape[1]), ("hidden dim", w_up.shape[0])):
        if size * x2d.element_size() % TMA_ALIGN_BYTES:
            raise ValueError(f"fused_mlp: {name} {size} x {x2d.element_size()} bytes is not a multiple of "
                             f"{TMA_ALIGN_BYTES} bytes (TMA rows); use such a size or set FUSED_MLP_ENABLED=0")


@torch.library.custom_op(f"{NAMESPACE}::fused_mlp_fwd", mutates_args=())
def _fused_mlp_fwd(x2d: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor,
                   slope: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (out, pre, act); pre and act are kept for the backward."""
    _check_mlp_args(x2d, w_up, w_down)
    M, H = x2d.shape[0], w_up.shape[0]
    pre = torch.empty(M, H, dtype=x2d.dtype, device=x2d.device)
    act = torch.empty_like(pre)
    _launch_mm_leaky_sq(x2d, w_up, pre, act, backward=False, slope=slope)
    return act @ w_down.t(), pre, act


@_fused_mlp_fwd.register_fake
def _(x2d, w_up, w_down, slope):
    hidden = x2d.new_empty(x2d.shape[0], w_up.shape[0])
    return x2d.new_empty(x2d.shape[0], w_down.shape[0]), hidden, torch.empty_like(hidden)


@torch.library.custom_op(f"{NAMESPACE}::fused_mlp_bwd", mutates_args=())
def _fused_mlp_bwd(grad_out: torch.Tensor, x2d: torch.Tensor, pre: torch.Tensor, act: torch.Tensor, w_up: torch.Tensor,
                   w_down: torch.Tensor, slope: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_pre = torch.empty_like(pre)
    # W_down^T copied (2 MB at the record's size), as the record's backward does: both passes read B along K
    # in 64-wide (128-byte) tiles, one kernel layout for both
    _launch_mm_leaky_sq(grad_out, w_down.t(), pre, grad_pre, backward=True, slope=slope)
    grad_w_down = grad_out.t() @ act
    grad_w_up = grad_pre.t() @ x2d
    grad_x = grad_pre @ w_up
    return grad_x, grad_w_up, grad_w_down


@_fused_mlp_bwd.register_fake
def _(grad_out, x2d, pre, act, w_up, w_down, slope):
    return torch.empty_like(x2d), torch.empty_like(w_up), torch.empty_like(w_down)


def _fused_mlp_setup(ctx, inputs, output):
    x2d, w_up, w_down, ctx.slope = inputs
    # without this, eager autograd hands the backward two M x H zero tensors for outputs nobody
    # differentiates (at the record's size 2 x 98,304 x 2,048 x 2 bytes = 800 MB of memset a call, computed)
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.save_for_backward(x2d, output[1], output[2], w_up, w_down)


def _fused_mlp_backward(ctx, grad_out, _grad_pre, _grad_act):
    x2d, pre, act, w_up, w_down = ctx.saved_tensors
    return *_fused_mlp_bwd(grad_out, x2d, pre, act, w_up, w_down, ctx.slope), None


_fused_mlp_fwd.register_autograd(_fused_mlp_backward, setup_context=_fused_mlp_setup)


def fused_mlp(x: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, slope: float = 0.5) -> torch.Tensor:
    """LeakyReLU(slope)^2 MLP with the fused up-projection. x (..., D) -> (..., D)."""
    out, _, _ = _fused_mlp_fwd(x.reshape(-1, x.size(-1)), w_up, w_down, slope)
    return out.view(*x.shape[:-1], w_down.shape[0])


# -----------------------------------------------------------------------------
# Query/key RMSNorm + partial RoPE (+ the query gain), forward and backward each in one launch for q and k.
# Per head row x (D wide): n = x r with r = 1 / sqrt(mean(x^2) + eps); y = g R(n), g the head's gain (1 for
# keys) and R the rotation of each pair (d, d + P), d < P (2P = the rotary dims), by the position's angle in
# apply_rope's sense: y_d = n_d c + n_{d+P} s, y_{d+P} = n_{d+P} c - n_d s (c, s rounded to x's dtype first,
# as apply_rope casts them). fp32 inside, one rounding at each store.
# Backward from dy: m = R^T(g dy) (the rotation by the opposite angle), dx = r (m - n mean(m n)), and per head
# dg = the sum over its rows of dy . R(n), one partial sum per program, added up by the caller.
# -----------------------------------------------------------------------------

# tokens per program and its warps: 8 x 8 heads x 64 dims of q and 8 x 4 x 64 of k on 256 threads; for sm_90
# (Triton 3.9's ptxas) 66 registers forward and 107 backward a thread, no spills (16 tokens on 4 warps spill)
QK_BLOCK_TOKENS, QK_NUM_WARPS = 8, 8


@triton.jit
def _qk_rows(x_ptr, dst_ptr, dy_ptr, cos_ptr, sin_ptr, gain_ptr, dgain_ptr, n_tokens, cos_rows, eps,
             HEADS: tl.constexpr, HEADS_P: tl.constexpr, DIM: tl.constexpr, DIM_P: tl.constexpr,
             PAIRS: tl.constexpr, PAIRS_P: tl.constexpr, BLOCK_T: tl.constexpr, HAS_GAIN: tl.constexpr,
             BACKWARD: tl.constexpr):
    """One program's tokens of q or k (_P: the power of two at or above). dst: the forward's y, or the
    backward's dx from dy. Whole rows are read contiguously for the norm, the pairs' halves again as two tiles."""
    first = tl.program_id(0) * BLOCK_T
    base = first.to(tl.int64) * (HEADS * DIM)  # 64-bit once; 32-bit offsets within the program's tokens
    x_ptr += base
    dst_ptr += base
    dy_ptr += base
    t = tl.arange(0, BLOCK_T)[:, None, None]
    h = tl.arange(0, HEADS_P)[None, :, None]
    d = tl.arange(0, DIM_P)[None, None, :]
    rows = (first + t < n_tokens) & (h < HEADS)
    at = (t * HEADS + h) * DIM
    x = tl.load(x_ptr + at + d, mask=rows & (d < DIM), other=0.0).to(tl.float32)
    r = 1.0 / tl.sqrt(tl.sum(x * x, axis=2, keep_dims=True) / DIM + eps)
    n = x * r
    plain = rows & (d >= 2 * PAIRS) & (d < DIM)  # the dims RoPE leaves alone
    g = 1.0
    if HAS_GAIN:
        g = tl.load(gain_ptr + h, mask=h < HEADS, other=0.0).to(tl.float32)
    if BACKWARD:
        dy = tl.load(dy_ptr + at + d, mask=plain, other=0.0).to(tl.float32)
        m = dy * g
        dot = tl.sum(m * n, axis=2, keep_dims=True)  # sum(m n) over the row, the pairs added below
        if HAS_GAIN:
            dg = tl.sum(dy * n, axis=2)
    if PAIRS > 0:
        j = tl.arange(0, PAIRS_P)[None, None, :]
        pair = rows & (j < PAIRS)
        table = ((first + t) % cos_rows) * PAIRS + j
        c = tl.load(cos_ptr + table, mask=pair, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
        s = tl.load(sin_ptr + table, mask=pair, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
        n1 = tl.load(x_ptr + at + j, mask=pair, other=0.0).to(tl.float32) * r
        n2 = tl.load(x_ptr + at + PAIRS + j, mask=pair, other=0.0).to(tl.float32) * r
        rot1 = n1 * c + n2 * s
        rot2 = n2 * c - n1 * s
        if BACKWARD:
            dy1 = tl.load(dy_ptr + at + j, mask=pair, other=0.0).to(tl.float32)
            dy2 = tl.load(dy_ptr + at + PAIRS + j, mask=pair, other=0.0).to(tl.float32)
            m1 = (dy1 * c - dy2 * s) * g
            m2 = (dy1 * s + dy2 * c) * g
            dot += tl.sum(m1 * n1 + m2 * n2, axis=2, keep_dims=True)
            if HAS_GAIN:
                dg += tl.sum(dy1 * rot1 + dy2 * rot2, axis=2)
        else:
            tl.store(dst_ptr + at + j, (rot1 * g).to(dst_ptr.dtype.element_ty), mask=pair)
            tl.store(dst_ptr + at + PAIRS + j, (rot2 * g).to(dst_ptr.dtype.element_ty), mask=pair)
    if BACKWARD:
        mean = dot / DIM
        tl.store(dst_ptr + at + d, (r * (m - n * mean)).to(dst_ptr.dtype.element_ty), mask=plain)
        if PAIRS > 0:
            tl.store(dst_ptr + at + j, (r * (m1 - n1 * mean)).to(dst_ptr.dtype.element_ty), mask=pair)
            tl.store(dst_ptr + at + PAIRS + j, (r * (m2 - n2 * mean)).to(dst_ptr.dtype.element_ty), mask=pair)
        if HAS_GAIN:
            heads = tl.arange(0, HEADS_P)
            tl.store(dgain_ptr + tl.program_id(0) * HEADS + heads, tl.sum(dg, axis=0), mask=heads < HEADS)
    else:
        tl.store(dst_ptr + at + d, (n * g).to(dst_ptr.dtype.element_ty), mask=plain)


@triton.jit(do_not_specialize=["n_tokens", "cos_rows"])  # one compile for every token count
def _qk_norm_rope_kernel(q_ptr, k_ptr, q_dst_ptr, k_dst_ptr, dq_out_ptr, dk_out_ptr, cos_ptr, sin_ptr, gain_ptr,
                         dgain_ptr, n_tokens, cos_rows, eps, Q_HEADS: tl.constexpr, Q_HEADS_P: tl.constexpr,
                         K_HEADS: tl.constexpr, K_HEADS_P: tl.constexpr, DIM: tl.constexpr, DIM_P: tl.constexpr,
                         PAIRS: tl.constexpr, PAIRS_P: tl.constexpr, BLOCK_T: tl.constexpr, BACKWARD: tl.constexpr):
    """Forward: q_dst, k_dst are the outputs. Backward: dq, dk, from dq_out, dk_out (the outputs' gradients)."""
    _qk_rows(q_ptr, q_dst_ptr, dq_out_ptr, cos_ptr, sin_ptr, gain_ptr, dgain_ptr, n_tokens, cos_rows, eps,
             Q_HEADS, Q_HEADS_P, DIM, DIM_P, PAIRS, PAIRS_P, BLOCK_T, True, BACKWARD)
    _qk_rows(k_ptr, k_dst_ptr, dk_out_ptr, cos_ptr, sin_ptr, gain_ptr, dgain_ptr, n_tokens, cos_rows, eps,
             K_HEADS, K_HEADS_P, DIM, DIM_P, PAIRS, PAIRS_P, BLOCK_T, False, BACKWARD)


RMS_NORM_EPS = torch.finfo(torch.float32).eps  # F.rms_norm's default for fp32 and 16-bit inputs (its fp32 maths)


def _launch_qk(q, k, cos, sin, gain, grads=None):
    """q (N, Hq, D), k (N, Hk, D); cos, sin (C, P) with N a multiple of C (row i at token i % C). Returns
    (q_out, k_out), or with grads = (dq_out, dk_out) (dq, dk, the gain's gradient)."""
    _check_device(q)
    q, k, cos, sin, gain = (t.contiguous() for t in (q, k, cos, sin, gain))
    n_tokens, q_heads, dim = q.shape
    programs = triton.cdiv(n_tokens, QK_BLOCK_TOKENS)
    dst = torch.empty_like(q), torch.empty_like(k)
    if grads is None:
        dq_out, dk_out, dgain = q, k, gain  # unread in the forward
    else:
        dq_out, dk_out = (t.contiguous() for t in grads)
        dgain = torch.empty(programs, q_heads, dtype=torch.float32, device=q.device)  # one row a program
    if programs:
        sizes = dict(Q_HEADS=q_heads, K_HEADS=k.shape[1], DIM=dim, PAIRS=cos.shape[1])
        _qk_norm_rope_kernel[(programs,)](
            q, k, *dst, dq_out, dk_out, cos, sin, gain, dgain, n_tokens, cos.shape[0], RMS_NORM_EPS, **sizes,
            **{f"{key}_P": triton.next_power_of_2(v) for key, v in sizes.items()}, BLOCK_T=QK_BLOCK_TOKENS,
            BACKWARD=grads is not None, num_warps=QK_NUM_WARPS)
    return dst if grads is None else (*dst, dgain.sum(0).to(gain.dtype))


@torch.library.custom_op(f"{NAMESPACE}::qk_norm_rope_fwd", mutates_args=())
def _qk_norm_rope_fwd(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                      gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_qk(q, k, cos, sin, gain)


@_qk_norm_rope_fwd.register_fake
def _(q, k, cos, sin, gain):
    return q.new_empty(q.shape), k.new_empty(k.shape)  # contiguous, as _launch_qk makes them


@torch.library.custom_op(f"{NAMESPACE}::qk_norm_rope_bwd", mutates_args=())
def _qk_norm_rope_bwd(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, gain: torch.Tensor,
                      dq_out: torch.Tensor, dk_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _launch_qk(q, k, cos, sin, gain, (dq_out, dk_out))


@_qk_norm_rope_bwd.register_fake
def _(q, k, cos, sin, gain, dq_out, dk_out):
    return q.new_empty(q.shape), k.new_empty(k.shape), gain.new_empty(gain.shape)


def _qk_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _qk_backward(ctx, dq_out, dk_out):
    dq, dk, dgain = _qk_norm_rope_bwd(*ctx.saved_tensors, dq_out, dk_out)
    return dq, dk, None, None, dgain


_qk_norm_rope_fwd.register_autograd(_qk_backward, setup_context=_qk_setup)


def qk_norm_rope(q: torch.Tensor, k: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                 gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """apply_rope(rms_norm(q), rope) * gain[:, None] and apply_rope(rms_norm(k), rope), fused. q (..., T, Hq, D),
    k (..., T, Hk, D); rope = (cos, sin), fp32 (..., T, 1, P) with the leading dims of q's or their tail
    (broadcast over the rest); gain (Hq,) in q's dtype."""
    cos, sin = rope
    lead = q.shape[:-2]
    if (k.shape[:-2] != lead or cos.shape[:-2] != lead[len(lead) - (cos.dim() - 2):] or cos.shape[-2] != 1
            or sin.shape != cos.shape):
        raise ValueError(f"qk_norm_rope shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, rope {tuple(cos.shape)}; "
                         "need q (..., T, Hq, D), k (..., T, Hk, D), rope (..., T, 1, P)")
    if 2 * cos.size(-1) > q.size(-1) or q.size(-1) != k.size(-1) or gain.shape != q.shape[-2:-1]:
        raise ValueError(f"qk_norm_rope: head dims {q.size(-1)}, {k.size(-1)}, {cos.size(-1)} rotary pairs, "
                         f"gain {tuple(gain.shape)}")
    flat = [t.reshape(-1, *t.shape[-2:]) for t in (q, k)]
    tables = [t.reshape(t.shape[:-2].numel(), t.size(-1)).float() for t in (cos, sin)]
    q_out, k_out = _qk_norm_rope_fwd(*flat, *tables, gain)
    return q_out.view(q.shape), k_out.view(k.shape)
