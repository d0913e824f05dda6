"""Triton kernels vs their plain-PyTorch references, under TRITON_INTERPRET=1 on the CPU (conftest sets it).
Tolerances: fp32 inputs agree with an fp64 reference to 1e-5 relative; bf16 inputs to bf16 rounding (2e-2
relative on gradients, whose reference is computed in fp64 from the same bf16 values)."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import triton

import kernels
import kernels_reference
import train_gpt as tg
from conftest import REPO, clean_env
from kernel_checks import check_backward_rounds_like_the_record, qkv_without_and_with_the_kernel, truncate_to_bf16

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


QK_CASES = [((37,), (37,), 8, 4, 64, 8),  # the records' heads, packed tokens (T,) with their tables
            ((3, 11), (11,), 4, 2, 48, 6),  # TTT's rows (B, T) over one table of positions (T,); D not 2^k
            ((2, 5), (2, 5), 3, 1, 16, 0),  # no rotary dims; 3 heads (not 2^k)
            ((13,), (13,), 6, 3, 32, 4),  # rotary dims with 6 and 3 heads (padded to 8 and 4)
            ((21,), (21,), 2, 2, 8, 4)]  # every dim rotated


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1.0), (torch.bfloat16, 1.0),
                                          (torch.float32, 1e-3)])  # rows where eps weighs ~10%
@pytest.mark.parametrize("lead, table_lead, heads, kv_heads, dim, pairs", QK_CASES)
def test_qk_norm_rope_matches_reference(dtype, scale, lead, table_lead, heads, kv_heads, dim, pairs):
    """bf16 within bf16's rounding: the interpreter truncates where the GPU rounds to nearest, so whether the
    tables are rounded to bf16 before use (as apply_rope casts them) is within the tolerance, not tested here."""
    torch.manual_seed(dim + heads)
    q = (torch.randn(*lead, heads, dim) * scale).to(dtype).requires_grad_(True)
    k = (torch.randn(*lead, kv_heads, dim) * scale).to(dtype).requires_grad_(True)
    angles = torch.rand(*table_lead, 1, pairs) * 7
    rope = (angles.cos(), angles.sin())
    gain = (torch.rand(heads) + 4.5).to(dtype).requires_grad_(True)
    outs = kernels.qk_norm_rope(q, k, rope, gain)
    # the outputs' gradients not contiguous, as autograd hands them over where the keys are concatenated to a
    # prefix's (WindowKV, TTT_GRAD_CHUNK_ONLY)
    grads = [torch.randn(t.shape[::-1]).to(dtype).permute(*reversed(range(t.dim()))) for t in outs]
    assert not any(g.is_contiguous() for g in grads)
    torch.autograd.backward(outs, grads)
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, gain)]
    want = kernels_reference.qk_norm_rope(leaves[0], leaves[1], tuple(t.double() for t in rope), leaves[2])
    torch.autograd.backward(want, [g.double() for g in grads])
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for got, ref in zip((*outs, q.grad, k.grad, gain.grad), (*want, *(t.grad for t in leaves))):
        assert got.dtype == dtype and got.shape == ref.shape
        assert rel(got.detach(), ref.detach()) < tol


def test_qk_norm_rope_is_the_models_attention_input():
    """Attention.qkv with the kernel (use_fused_qk) and without: same q, k, v and the same gradients for x, the
    projections and the query gain, packed (T,) and as TTT's rows (B, T) over positions (T,)."""
    h = tg.load_hyperparameters({"SMOKE": "1"})
    torch.manual_seed(0)
    attn = tg.Attention(h, use_xsa=False)
    torch.nn.init.uniform_(attn.q_gain, 1.0, 6.0)
    rotary = tg.Rotary(h.rope_dims, h.rope_base, 64)
    for shape, positions in (((40,), torch.arange(40) % 17), ((3, 13), torch.arange(13))):
        x = torch.randn(*shape, h.model_dim)
        for eager, kernel in zip(*qkv_without_and_with_the_kernel(attn, x, rotary(positions))):
            assert rel(kernel, eager) < 1e-5


def test_qk_norm_rope_op_registration():
    q, k, gain = torch.randn(6, 4, 16), torch.randn(6, 2, 16), torch.rand(4) + 1
    cos, sin = torch.rand(6, 4), torch.rand(6, 4)
    for op, args in ((torch.ops.golfrun.qk_norm_rope_fwd.default, (q, k, cos, sin, gain)),
                     (torch.ops.golfrun.qk_norm_rope_bwd.default, (q, k, cos, sin, gain, q.clone(), k.clone()))):
        torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("q_shape, k_shape, table_shape, gain_heads", [
    ((5, 4, 16), (6, 2, 16), (5, 1, 4), 4),  # q and k at different tokens
    ((5, 4, 16), (5, 2, 16), (4, 1, 4), 4),  # a table for other positions
    ((5, 4, 16), (5, 2, 8), (5, 1, 4), 4),  # q and k of different head dims
    ((5, 4, 16), (5, 2, 16), (5, 1, 9), 4),  # more rotary pairs than half the head dim
    ((5, 4, 16), (5, 2, 16), (5, 1, 4), 3)])  # a gain per head of another head count
def test_qk_norm_rope_rejects_bad_shapes(q_shape, k_shape, table_shape, gain_heads):
    with pytest.raises(ValueError, match="qk_norm_rope"):
        kernels.qk_norm_rope(torch.randn(q_shape), torch.randn(k_shape),
                             (torch.rand(table_shape), torch.rand(table_shape)), torch.rand(gain_heads))


HOPPER_COMPILE = textwrap.dedent("""
    import inspect, re, subprocess, sys
    from pathlib import Path
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import kernels
    fn = kernels._qk_norm_rope_kernel
    params = list(inspect.signature(fn.fn).parameters)
    sizes = dict(Q_HEADS=8, K_HEADS=4, DIM=64, PAIRS=8)
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    for backward in (False, True):
        constants = dict(**sizes, **{f"{k}_P": triton.next_power_of_2(v) for k, v in sizes.items()},
                         BLOCK_T=kernels.QK_BLOCK_TOKENS, BACKWARD=backward)
        types = {"cos_ptr": "*fp32", "sin_ptr": "*fp32", "dgain_ptr": "*fp32", "eps": "fp32"}
        signature = {name: "constexpr" if name in constants else
                     types.get(name, "*bf16" if name.endswith("_ptr") else "i32") for name in params}
        source = ASTSource(fn=fn, signature=signature,
                           constexprs={(params.index(k),): v for k, v in constants.items()})
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                                  options=dict(num_warps=kernels.QK_NUM_WARPS))
        cubin = Path(sys.argv[1]) / f"qk_{int(backward)}.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True).stdout
        print("backward" if backward else "forward", *re.findall(r"(?:REG|STACK):\\d+", usage))
""")


def test_qk_kernel_compiles_for_hopper_without_spills(tmp_path):
    """The interpreter runs any Python; Triton's compiler does not. The kernel as launched on the records' model
    (bf16, 8 and 4 heads of 64, 8 rotary pairs) goes through Triton's code generation and ptxas for sm_90 on this
    CPU (a process without the interpreter), forward and backward, and keeps every value in registers (no stack:
    spilling would slow a kernel that only moves memory)."""
    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").exists():
        pytest.skip("this Triton install has no NVIDIA backend tools")
    proc = subprocess.run([sys.executable, "-c", HOPPER_COMPILE, str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, env=clean_env(TRITON_INTERPRET=0), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("forward", "backward"):
        assert re.search(rf"^{line} REG:\d+ STACK:0$", proc.stdout, re.M), proc.stdout


@pytest.mark.parametrize("device, fused_qk", [("cuda", True), ("cuda", False), ("cpu", True)])
def test_fused_qk_reaches_every_attention_where_asked(device, fused_qk):
    """configure_kernels (no GPU needed: it sets flags) puts FUSED_QK_ENABLED's kernel in every block's attention
    on a GPU, and only there; build_model asks for it for training, never for evaluation (eval_model)."""
    h = tg.load_hyperparameters({"SMOKE": "1", "FUSED_QK_ENABLED": "1"})
    model = tg.GPT(h)
    model.configure_kernels(torch.device(device), h.fused_ce_enabled, False, fused_qk)
    assert [b.attn.use_fused_qk for b in model.blocks] == [device == "cuda" and fused_qk] * len(model.blocks)
    asked = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tg.GPT, "configure_kernels", lambda self, device, ce, mlp, qk: asked.append((mlp, qk)))
        for training in (True, False):
            tg.build_model(h, torch.device("cpu"), training)
    assert asked == [(h.fused_mlp_enabled, True), (False, False)]


def test_fused_qk_is_one_graph_with_the_whole_model():
    """The training loss as torch.compile traces it (fullgraph: a graph break fails), with the q/k kernel in every
    layer (recurrence on, XSA's layers, two packed documents): the same loss and gradients as the plain model
    run eagerly."""
    h = tg.load_hyperparameters({"SMOKE": "1", "RECIPE": "2135"})
    torch.manual_seed(0)
    model = tg.GPT(h)
    model.looping = True
    ids, targets = torch.randint(0, h.vocab_size, (2, 64))
    positions = torch.cat([torch.arange(40), torch.arange(24)])
    cu_seqlens = torch.tensor([0, 40, 64], dtype=torch.int32)
    loss_fn = lambda: model.packed_loss(ids, targets, model.rotary(positions), positions, cu_seqlens, 40)  # noqa: E731
    results = []
    for fused in (False, True):
        for block in model.blocks:
            block.attn.use_fused_qk = fused
        model.zero_grad(set_to_none=True)
        loss = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)() if fused else loss_fn()
        loss.backward()
        grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        results.append((loss.detach(), torch.cat(grads)))
        torch._dynamo.reset()
    (eager_loss, eager_grads), (fused_loss, fused_grads) = results
    assert rel(fused_loss, eager_loss) < 1e-6 and rel(fused_grads, eager_grads) < 1e-5
