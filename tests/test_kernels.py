"""Triton kernels vs their plain-PyTorch references, under TRITON_INTERPRET=1 on the CPU (conftest sets it).
Tolerances: fp32 inputs agree with an fp64 reference to 1e-5 relative; bf16 inputs to bf16 rounding (2e-2
relative on gradients, whose reference is computed in fp64 from the same bf16 values)."""

import pytest
import torch

import kernels
import kernels_reference
import train_gpt as tg
from kernel_checks import check_backward_rounds_like_the_record, truncate_to_bf16

# CPU tensors through the interpreter; on a GPU machine tests/test_gpu.py checks the compiled kernels
pytestmark = pytest.mark.skipif(not kernels.INTERPRETING, reason="Triton interpreter tests (CPU tensors)")


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


CE_CASES = [(37, 1000, torch.float32, 30.0), (19, 1000, torch.float32, 0.0), (9, 8192, torch.bfloat16, 30.0),
            (9, 8192, torch.float32, 30.0), (5, 8192, torch.bfloat16, 0.0)]


@pytest.mark.parametrize("rows, vocab, dtype, softcap", CE_CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softcap_ce_matches_reference(rows, vocab, dtype, softcap, reduction):
    torch.manual_seed(rows + vocab)
    logits = (torch.randn(rows, vocab) * 12).to(dtype).requires_grad_(True)
    targets = torch.randint(0, vocab, (rows,))
    targets[::4] = -1  # masked targets
    weights = torch.randn(rows) if reduction == "none" else None
    loss = kernels.softcap_cross_entropy(logits, targets, softcap, reduction)
    (loss * weights).sum().backward() if weights is not None else loss.backward()
    grad = logits.grad.clone()
    ref_leaf = logits.detach().double().requires_grad_(True)
    ref = kernels_reference.softcap_cross_entropy(ref_leaf, targets, softcap, reduction)
    (ref * weights.double()).sum().backward() if weights is not None else ref.backward()
    assert grad.dtype == dtype and grad.data_ptr() != logits.data_ptr()  # a fresh buffer
    assert rel(loss.detach(), ref.detach()) < 1e-5
    assert rel(grad, ref_leaf.grad) < (1e-5 if dtype == torch.float32 else 1e-2)
    assert torch.all(grad[targets < 0] == 0)


def test_ce_with_3d_input_and_all_masked():
    logits = torch.randn(2, 3, 50, requires_grad=True)
    targets = torch.full((2, 3), -1)
    loss = kernels.softcap_cross_entropy(logits, targets, 30.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_training_kernel_agrees_with_eval_formula():
    """The training path (kernel) and train_gpt's eager eval formula agree to bf16 tolerance."""
    torch.manual_seed(3)
    logits = (torch.randn(16, 8192) * 10).bfloat16()
    targets = torch.randint(0, 8192, (16,))
    fused = kernels.softcap_cross_entropy(logits, targets, 30.0, "none")
    eager = tg.softcap_cross_entropy(logits, targets, 30.0, "none")
    assert torch.allclose(fused, eager, rtol=1e-3, atol=1e-3)


def test_ce_op_registration():
    logits = torch.randn(4, 40)
    targets = torch.randint(0, 40, (4,))
    torch.library.opcheck(torch.ops.golfrun.softcap_ce_fwd.default, (logits, targets, 30.0),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("m, d, hidden, dtype, slope", [(70, 64, 256, torch.float32, 0.5),
                                                        (33, 48, 160, torch.float32, 0.5),
                                                        (33, 48, 168, torch.float32, 0.5),  # a partial column tile
                                                        (70, 64, 256, torch.bfloat16, 0.5),
                                                        (33, 48, 160, torch.float32, 0.3),  # LEAKY_RELU_SLOPE
                                                        (70, 64, 256, torch.bfloat16, 0.3)])
def test_fused_mlp_matches_reference(m, d, hidden, dtype, slope):
    torch.manual_seed(m)
    x = torch.randn(m, d).to(dtype).requires_grad_(True)
    w_up = (torch.randn(hidden, d) / d ** 0.5).to(dtype).requires_grad_(True)
    w_down = (torch.randn(d, hidden) / hidden ** 0.5).to(dtype).requires_grad_(True)
    g = torch.randn(m, d).to(dtype)
    out = kernels.fused_mlp(x, w_up, w_down, slope)
    out.backward(g)
    leaves = [t.detach().double().requires_grad_(True) for t in (x, w_up, w_down)]
    ref = kernels_reference.fused_mlp(*leaves, slope)
    ref.backward(g.double())
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert rel(out.detach(), ref.detach()) < tol
    for got, want in zip((x.grad, w_up.grad, w_down.grad), (t.grad for t in leaves)):
        assert rel(got, want) < tol


def test_fused_mlp_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shapes"):
        kernels.fused_mlp(torch.randn(4, 8), torch.randn(16, 8), torch.randn(16, 8))


def test_fused_mlp_takes_no_rows_and_misaligned_views():
    torch.manual_seed(0)
    w_up, w_down = torch.randn(32, 16) / 4, torch.randn(16, 32) / 6
    assert kernels.fused_mlp(torch.randn(0, 16), w_up, w_down).shape == (0, 16)
    buf = torch.randn(5 * 16 + 1)
    x = buf[1:].view(5, 16)  # contiguous, but 4 bytes past a 16-byte boundary: TMA needs a copy
    assert x.data_ptr() % kernels.TMA_ALIGN_BYTES
    assert rel(kernels.fused_mlp(x, w_up, w_down), kernels_reference.fused_mlp(x, w_up, w_down)) < 1e-5


def test_fused_mlp_op_registration():
    x, w_up, w_down = torch.randn(6, 16), torch.randn(32, 16), torch.randn(16, 32)
    torch.library.opcheck(torch.ops.golfrun.fused_mlp_fwd.default, (x, w_up, w_down, 0.3),
                          test_utils=("test_schema", "test_faketensor"))


def test_fused_mlp_refuses_rows_tma_cannot_address():
    # 6 bf16 = 12 bytes per row: a TMA descriptor needs rows of a multiple of 16 bytes
    x, w_up, w_down = torch.randn(4, 6).bfloat16(), torch.randn(16, 6).bfloat16(), torch.randn(6, 16).bfloat16()
    with pytest.raises(ValueError, match="FUSED_MLP_ENABLED=0"):
        kernels.fused_mlp(x, w_up, w_down)


def test_fused_mlp_keeps_pre_and_act_out_of_autograd():
    # Fails without mark_non_differentiable: eager backward then builds two M x H zero gradients for them.
    x, w_up, w_down = (torch.randn(6, 16, requires_grad=True), torch.randn(32, 16, requires_grad=True),
                       torch.randn(16, 32, requires_grad=True))
    out, pre, act = torch.ops.golfrun.fused_mlp_fwd(x, w_up, w_down, 0.5)
    assert out.requires_grad and not pre.requires_grad and not act.requires_grad


def test_fused_mlp_backward_rounds_like_the_record():
    check_backward_rounds_like_the_record("cpu", truncate_to_bf16)  # the interpreter truncates to bf16


@pytest.mark.parametrize("slope", [0.5, 0.3])
def test_leaky_relu_slope_reaches_the_fused_and_the_eager_mlp(slope):
    """LEAKY_RELU_SLOPE: the model's MLP, fused and eager, computes down(where(p > 0, p, s p)^2), p = up(x):
    same output and gradients (fails if either path keeps 0.5)."""
    h = tg.load_hyperparameters({"MODEL_DIM": "32", "MLP_MULT": "2", "LEAKY_RELU_SLOPE": str(slope)})
    torch.manual_seed(0)
    mlp = tg.MLP(h)
    torch.nn.init.normal_(mlp.down.weight, std=0.2)  # zero-initialised: the output would not see the slope
    x = torch.randn(37, 32)
    p = x @ mlp.up.weight.detach().T
    want = torch.where(p > 0, p, slope * p).square() @ mlp.down.weight.detach().T
    results = []
    for fused in (False, True):
        mlp.use_fused = fused
        leaf = x.clone().requires_grad_(True)
        out = mlp(leaf)
        out.square().sum().backward()
        results.append((out.detach(), leaf.grad, mlp.up.weight.grad.clone(), mlp.down.weight.grad.clone()))
        mlp.zero_grad(set_to_none=True)
    (eager, *eager_grads), (fused, *fused_grads) = results
    assert rel(eager, want) < 1e-5 and rel(fused, want) < 1e-5
    for a, b in zip(eager_grads, fused_grads):
        assert rel(a, b) < 1e-5
