"""Kernel checks shared by the interpreter tests (test_kernels.py) and the GPU tests (test_gpu.py)."""

import torch

import kernels


def truncate_to_bf16(t: torch.Tensor) -> torch.Tensor:
    """fp32 -> bf16 rounding toward zero, as the Triton interpreter converts (the GPU rounds to nearest even)."""
    return (t.float().view(torch.int32) & -65536).view(torch.float32).bfloat16()


def check_backward_rounds_like_the_record(device: str, to_bf16) -> None:
    """Small integers: every dot product is exact in fp32 whatever the summation order, but has more bits
    than bf16 keeps, so rounding grad_out @ W_down before the product with f'(pre) (the record's order) and
    rounding only once (this kernel before 2026-11-26) give different bits. to_bf16: the device's rounding."""
    g = torch.Generator().manual_seed(0)
    m, d, hidden = 40, 32, 64
    grad_out = torch.randint(-40, 41, (m, d), generator=g).bfloat16().to(device)
    w_down_t = torch.randint(-40, 41, (hidden, d), generator=g).bfloat16().to(device)  # W_down^T, (H, D)
    pre = torch.randint(-200, 201, (m, hidden), generator=g).bfloat16().to(device)
    grad_pre = torch.empty_like(pre)
    kernels._launch_mm_leaky_sq(grad_out, w_down_t, pre, grad_pre, backward=True, slope=0.5)
    exact = grad_out.double() @ w_down_t.double().t()
    slope = torch.where(pre > 0, 2.0 * pre, 0.5 * pre).double()  # exact: a power of two times a bf16
    want = to_bf16(to_bf16(exact).double() * slope)  # a product of two bf16 values is exact in fp64
    assert not torch.equal(to_bf16(exact * slope), want)  # the two orders do differ on these numbers
    assert torch.equal(grad_pre, want)


def qkv_without_and_with_the_kernel(attn, x, tables, compile_qkv=None) -> list[tuple]:
    """Attention.qkv on x without FUSED_QK_ENABLED's kernel, then with it (compile_qkv(attn.qkv) if given), each
    backpropagated from random weights on q and k and the sum of v: (q, k, v, and the gradients of x, the query
    gain and c_q's and c_k's weights) for each."""
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(*x.shape[:-1], heads, attn.head_dim, generator=gen).to(x.device, x.dtype)
               for heads in (attn.num_heads, attn.num_kv_heads)]
    results = []
    for fused in (False, True):
        attn.use_fused_qk = fused
        leaf = x.clone().requires_grad_(True)
        q, k, v = (compile_qkv(attn.qkv) if compile_qkv else attn.qkv)(leaf, tables)
        ((q.float() * weights[0]).sum() + (k.float() * weights[1]).sum() + v.float().sum()).backward()
        results.append((q.detach(), k.detach(), v.detach(), leaf.grad, attn.q_gain.grad.clone(),
                        attn.c_q.weight.grad.clone(), attn.c_k.weight.grad.clone()))
        attn.zero_grad(set_to_none=True)
        if compile_qkv:
            torch._dynamo.reset()
    return results
