"""Checks that need a CUDA GPU (run on the lent device: `python -m pytest tests/test_gpu.py`).
On a machine without CUDA they are skipped, and CI reports them as skipped."""

import pytest
import torch

import kernels
import train_gpt as tg
from kernel_checks import check_backward_rounds_like_the_record

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _random_layout(total, max_len, device):
    lengths, left = [], total
    gen = torch.Generator().manual_seed(0)
    while left > 0:
        n = min(left, int(torch.randint(1, max_len + 1, (1,), generator=gen)))
        lengths.append(n)
        left -= n
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    positions = torch.cat([torch.arange(n) for n in lengths])
    return dict(cu_seqlens=cu.to(device), max_seqlen=max_len, positions=positions.to(device))


@pytest.mark.parametrize("backend", ["torch_varlen", "fa3"])
def test_varlen_backends_match_padded_reference(backend):
    if backend == "torch_varlen" and tg.torch_varlen_attn is None:
        pytest.skip("torch has no varlen_attn")
    if backend == "fa3" and tg.fa3_varlen_func is None:
        pytest.skip("flash_attn_interface (FA3) not installed")
    torch.manual_seed(0)
    layout = _random_layout(8192, 2048, "cuda")
    q = torch.randn(8192, 8, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(8192, 4, 64, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(8192, 4, 64, device="cuda", dtype=torch.bfloat16)
    out = tg.varlen_attention(q, k, v, layout, backend).float()
    ref = tg.padded_sdpa_varlen(q.float(), k.float(), v.float(), layout)
    assert ((out - ref).norm() / ref.norm()).item() < 1e-2


def test_fused_ce_matches_reference_at_record_shape():
    torch.manual_seed(0)
    logits = (torch.randn(4096, 8192, device="cuda") * 6).bfloat16().requires_grad_(True)
    targets = torch.randint(0, 8192, (4096,), device="cuda")
    targets[::7] = -1
    loss = kernels.softcap_cross_entropy(logits, targets, 30.0)
    loss.backward()
    grad = logits.grad.clone()
    logits.grad = None
    ref = kernels.softcap_cross_entropy_reference(logits.double(), targets, 30.0)
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-4 * abs(ref.item())
    assert ((grad.double() - logits.grad).norm() / logits.grad.norm()).item() < 1e-2


@pytest.mark.parametrize("m, d, hidden", [(4096, 512, 2048), (4133, 520, 1064)])  # + partial tiles everywhere
def test_fused_mlp_matches_fp64_reference(m, d, hidden):
    torch.manual_seed(0)
    x = torch.randn(m, d, device="cuda").bfloat16().requires_grad_(True)
    w_up = (torch.randn(hidden, d, device="cuda") / d ** 0.5).bfloat16().requires_grad_(True)
    w_down = (torch.randn(d, hidden, device="cuda") / hidden ** 0.5).bfloat16().requires_grad_(True)
    g = torch.randn(m, d, device="cuda").bfloat16()
    out = kernels.fused_mlp(x, w_up, w_down)
    out.backward(g)
    fused = [out] + [t.grad.clone() for t in (x, w_up, w_down)]
    leaves = [t.detach().double().requires_grad_(True) for t in (x, w_up, w_down)]
    ref = kernels.fused_mlp_reference(*leaves)
    ref.backward(g.double())
    for a, b in zip(fused, [ref] + [t.grad for t in leaves]):
        assert ((a.double() - b).norm() / b.norm()).item() < 2e-2


def test_fused_mlp_backward_rounds_like_the_record_on_the_gpu():
    check_backward_rounds_like_the_record("cuda", lambda t: t.float().bfloat16())  # round to nearest even


def test_fused_mlp_refuses_fp32_on_the_gpu():
    # its tiles are sized for 16-bit inputs: fp32 ones would not fit in shared memory
    x, w_up, w_down = (torch.randn(*shape, device="cuda") for shape in ((64, 512), (2048, 512), (512, 2048)))
    with pytest.raises(ValueError, match="bf16 or fp16.*FUSED_MLP_ENABLED=0"):
        kernels.fused_mlp(x, w_up, w_down)
