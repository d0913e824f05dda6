"""Checks that need a CUDA GPU (run on the lent device: `python -m pytest tests/test_gpu.py`).
On a machine without CUDA they are skipped, and CI reports them as skipped.

The FlashAttention 3 branch (the `fa3` tests) needs `flash_attn_interface` importable as well; install the
wheel into its own folder, never into the environment the training runs use (the registry's `tokenspeed-fa3`
build is forward-only, so a training run that picks it up fails at its first backward):
    python3 -m pip install -q --no-deps --no-index --target /tmp/fa3site .whl/fa3/tokenspeed_fa3-*.whl
    PYTHONPATH=/tmp/fa3site python3 -m pytest -q tests/test_gpu.py -k fa3
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

import kernels
import kernels_reference
import train_gpt as tg
from conftest import REPO, clean_env, run_train
from kernel_checks import check_backward_rounds_like_the_record, qkv_without_and_with_the_kernel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_fa3 = pytest.mark.skipif(tg.fa3_varlen_func is None, reason="flash_attn_interface (FA3) does not import: "
                               "put its folder on PYTHONPATH (see this file's docstring)")


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
    ref = kernels_reference.softcap_cross_entropy(logits.double(), targets, 30.0)
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-4 * abs(ref.item())
    assert ((grad.double() - logits.grad).norm() / logits.grad.norm()).item() < 1e-2


@pytest.mark.parametrize("m, d, hidden, slope", [(4096, 512, 2048, 0.5), (4133, 520, 1064, 0.5),  # + partial tiles
                                                 (4096, 512, 2048, 0.3)])  # LEAKY_RELU_SLOPE
def test_fused_mlp_matches_fp64_reference(m, d, hidden, slope):
    torch.manual_seed(0)
    x = torch.randn(m, d, device="cuda").bfloat16().requires_grad_(True)
    w_up = (torch.randn(hidden, d, device="cuda") / d ** 0.5).bfloat16().requires_grad_(True)
    w_down = (torch.randn(d, hidden, device="cuda") / hidden ** 0.5).bfloat16().requires_grad_(True)
    g = torch.randn(m, d, device="cuda").bfloat16()
    out = kernels.fused_mlp(x, w_up, w_down, slope)
    out.backward(g)
    fused = [out] + [t.grad.clone() for t in (x, w_up, w_down)]
    leaves = [t.detach().double().requires_grad_(True) for t in (x, w_up, w_down)]
    ref = kernels_reference.fused_mlp(*leaves, slope)
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



@pytest.mark.parametrize("shape, dynamic", [((16384,), False), ((4, 600), True)])  # packed tokens; (B, T) rows
def test_fused_qk_is_the_compiled_attention_input(shape, dynamic):
    """FUSED_QK_ENABLED: Attention.qkv compiled (dynamic shapes as TTT compiles) with the Triton kernel and
    with Inductor's own kernels: the same q, k and gradients (x, the projections, the query gain) in bf16."""
    h = tg.load_hyperparameters({})
    torch.manual_seed(0)
    attn = tg.Attention(h, use_xsa=False).cuda()
    torch.nn.init.uniform_(attn.q_gain, 1.0, 6.0)
    positions = torch.arange(shape[-1], device="cuda") % 2048
    tables = tg.Rotary(h.rope_dims, h.rope_base, 2048).cuda()(positions)
    x = torch.randn(*shape, h.model_dim, device="cuda").bfloat16()
    results = qkv_without_and_with_the_kernel(attn, x, tables, lambda qkv: torch.compile(qkv, dynamic=dynamic))
    for inductor, kernel in zip(*results):
        assert ((kernel.double() - inductor.double()).norm() / inductor.double().norm()).item() < 1e-2


# ---- GPTQ Hessians ----

def test_muon_bank_update_is_the_per_matrix_update_to_the_bit():
    """Muon._apply's multi-tensor kernels (cast once, _foreach_mul_, _foreach_add_ with alpha) give each matrix
    exactly what a cast, mul_ and add_ per matrix gave: same bits on the GPU, where the kernels differ."""
    h = tg.load_hyperparameters({})
    gen = torch.Generator(device="cuda").manual_seed(0)
    bank = [torch.nn.Parameter(torch.randn(512, 2048, device="cuda", generator=gen)) for _ in range(3)]
    alone = [p.detach().clone() for p in bank]
    update = torch.randn(4, 512, 2048, device="cuda", generator=gen).bfloat16()  # padded to 4
    muon = tg.Muon(bank, h, tg.DistContext(device=torch.device("cuda")))
    with torch.no_grad():
        muon._apply(bank, lambda: update.unsqueeze(0), 0.022 * 2 ** 0.5, 0.022)
    for p, q, u in zip(bank, alone, update):
        q.mul_(1.0 - 0.022 * h.muon_wd)
        q.add_(u.to(q.dtype), alpha=-0.022 * 2 ** 0.5)
        assert torch.equal(p.detach(), q)


class _NcclOfOne(tg.DistContext):
    """A world of one rank that takes the distributed code path: NCCL's collectives, not the local shortcuts."""

    @property
    def distributed(self) -> bool:
        return True


@pytest.fixture
def world_of_one(tmp_path):
    """init_distributed's process group (GPU_BACKENDS) in a world of one rank on this GPU: its device."""
    import torch.distributed as dist
    device = torch.device("cuda", torch.cuda.current_device())
    dist.init_process_group(tg.GPU_BACKENDS, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1,
                            device_id=device)
    yield device
    dist.destroy_process_group()


def test_the_nccl_step_of_one_rank_is_the_local_step(world_of_one):
    """Optimizers.step through NCCL (Adam's all-reduce, Muon's asynchronous reduce-scatter and all-gather, each
    waited for later) in a world of one rank moves every weight as the local step does, to the bit. The gloo
    tests on the CPU check the arithmetic on two ranks; this runs the NCCL branch's own calls and shapes, which
    no other test reaches (NCCL cannot put two ranks on one GPU)."""
    device = world_of_one
    h = tg.load_hyperparameters({"SMOKE": "1", "RECIPE": "2135"})
    assert _NcclOfOne(device=device).nccl  # the branch under test
    stepped = []
    for ctx in (tg.DistContext(device=device), _NcclOfOne(device=device)):
        torch.manual_seed(0)
        model = tg.build_model(h, device, for_training=False)
        opt = tg.Optimizers(model, h, ctx)
        trained = opt.adam_params + [p for bank in opt.muon.banks for p in bank]
        start = [p.detach().clone() for p in trained]
        for step in range(2):
            gen = torch.Generator(device=device).manual_seed(step)
            for p in model.parameters():
                p.grad = torch.randn(p.shape, device=device, generator=gen).to(p.dtype)
            opt.step(1.0, 0.9)
        assert all(not torch.equal(p, s) for p, s in zip(trained, start))
        stepped.append([p.detach() for p in model.parameters()])
    for local, nccl in zip(*stepped):
        assert torch.equal(local, nccl)


def test_the_agreed_clock_waits_for_no_gpu_work(world_of_one):
    """init_distributed's process group (GPU_BACKENDS, here a world of one rank on the distributed path): the
    agreed clock's reading makes no host-GPU sync (CUDA's sync debug mode raises on one: a GPU tensor's .item()),
    so on several GPUs the host keeps queueing the next step while the last one runs."""
    ctx = _NcclOfOne(device=world_of_one)
    assert ctx.nccl
    torch.cuda.set_sync_debug_mode("error")
    try:
        assert tg.agreed_seconds(ctx, 1.5) == 1.5
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_the_timed_loop_waits_for_no_gpu_work_between_its_syncs(world_of_one, monkeypatch):
    """train()'s loop on the distributed path (NCCL's optimizer step, the gloo clock; one rank), once compiled:
    from its third step to the loop's end it makes no host-GPU sync but the closing one, so the host can queue
    the next step while the GPU runs this one (issue 26; TRAIN_LOG_EVERY=0: no log point's read, and 6 steps
    reach no NaN check). CUDA's sync debug mode raises on a .item() or a blocking copy; it lets
    torch.cuda.synchronize() through, so that raises here too, and train_gpt.synchronize() is counted."""
    device = world_of_one
    h = tg.load_hyperparameters({"SMOKE": "1", "RECIPE": "2135", "COMPILE": "1", "ITERATIONS": "6",
                                 "TRAIN_LOG_EVERY": "0", "MAX_WALLCLOCK_SECONDS": "0"})
    real_step, real_sync, real_cuda_sync = tg.train_step, tg.synchronize, torch.cuda.synchronize
    steps, syncs_in_error_mode = [], []

    def step_then_watch(*args):  # from the loop's third step on (after the compile warm-up's), a sync raises
        steps.append(args[4])
        if len(steps) > h.warmup_steps + 2:
            torch.cuda.set_sync_debug_mode("error")
        return real_step(*args)

    def allowed_sync(ctx):  # the loop's own synchronize() calls are meant: counted, then let through
        if torch.cuda.get_sync_debug_mode():
            syncs_in_error_mode.append(len(steps))
        torch.cuda.set_sync_debug_mode("default")
        real_sync(ctx)

    def watched_cuda_sync(device=None):  # the debug mode does not flag a device-wide synchronize
        if torch.cuda.get_sync_debug_mode():
            raise RuntimeError("torch.cuda.synchronize() inside the loop's steps")
        real_cuda_sync(device)

    monkeypatch.setattr(tg, "train_step", step_then_watch)
    monkeypatch.setattr(tg, "synchronize", allowed_sync)
    monkeypatch.setattr(torch.cuda, "synchronize", watched_cuda_sync)
    try:
        torch.manual_seed(0)
        model = tg.build_model(h, device, for_training=True)
        tg.train(model, h, _NcclOfOne(device=device), 8, lambda line, **kw: None)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert steps == list(range(h.warmup_steps)) + list(range(6))  # the warm-up's steps, then the loop's six
    assert syncs_in_error_mode == [len(steps)]  # only the one closing the loop, after its last step


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_gpus_run_the_pipeline_through_nccl_and_gloo(tmp_path):
    """torchrun on two GPUs: init_distributed's group (NCCL for the GPUs' collectives, gloo for the agreed clock
    and the start-up broadcasts) starts, Muon's NCCL branch trains two ranks in step, and rank 1's quantized
    model is rank 0's artifact bit for bit (the run's roundtrip check), and TTT spreads its batches and global
    SGD over both (SMOKE's val: 4 batches); steps bound the run, not the clock. Cold, it compiles for minutes."""
    log = run_train(tmp_path, nproc=2, SMOKE=1, ITERATIONS=6, MAX_WALLCLOCK_SECONDS=100000, RUN_ID="gpu2")
    assert "world_size:2 device:cuda:0" in log
    assert "roundtrip_check: artifact == in-memory quantized model (bit for bit)" in log
    assert "final_ttt_exact" in log


def test_hessian_products_in_bf16_are_the_fp32_products():
    """bf16 activations: the bf16 tensor-core product with fp32 output is the fp64 product of the same numbers to
    fp32 accuracy, as the records' TF32 product of them is (a bf16 output would be ~1e-3 off)."""
    torch.manual_seed(0)
    x = torch.randn(16384, 2048, device="cuda").bfloat16()
    exact = x.double().T @ x.double()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # the records' setting
    try:
        record = x.float().T @ x.float()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    for name, H in (("ours", tg.gram(x)), ("record", record)):
        assert H.dtype == torch.float32
        assert ((H.double() - exact).norm() / exact.norm()).item() < 1e-6, name


def test_hessians_on_the_gpu_are_the_fp32_collection(monkeypatch):
    """The whole collection on the GPU (dense rows, the shared q/k/v product, bf16 tensor cores) against the same
    collection with every product made from fp32 copies."""
    h = tg.load_hyperparameters({"SMOKE": "1", "RECIPE": "2135"})
    torch.manual_seed(0)
    model = tg.build_model(h, torch.device("cuda"), for_training=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.looping = True
    rows = [torch.randint(0, h.vocab_size, (4, h.train_seq_len), device="cuda") for _ in range(2)]
    ours = tg.collect_hessians(model, rows, tg.DistContext(device=torch.device("cuda")))
    monkeypatch.setattr(tg, "gram", lambda x: x.T.double().matmul(x.double()).float())
    reference = tg.collect_hessians(model, rows, tg.DistContext(device=torch.device("cuda")))
    assert set(ours) == set(reference)
    for key, H in ours.items():
        assert ((H - reference[key]).norm() / reference[key].norm()).item() < 1e-5, key
    assert all(b.mlp.use_fused for b in model.blocks)  # the fused MLP is back for training

# ---- FlashAttention 3 ----

FA3_MAX_REL = 2e-2  # of max(1, |reference|): ~2 bf16 ulps; the two kernels round their bf16 outputs differently
FA3_MEAN_ABS = 1e-3
FA3_FP32_ERR_FACTOR, FA3_FP32_ERR_SLACK = 2.0, 2e-3  # fa3's error against fp32 vs torch_varlen's
FA3_LOSS_TOL = 5e-3  # nats, on a loss of ~9 (random weights): bf16 rounding through 11 layers
FA3_SEQ_LEN, FA3_HEADS, FA3_KV_HEADS, FA3_HEAD_DIM, BOS = 2048, 8, 4, 64, 1
FINEWEB_MICRO_BATCH = 98_304  # tokens of one rank's micro-batch at the record's batch size


def _doc_stream(lengths, rng, vocab: int = 8192) -> np.ndarray:
    """A token stream of documents of the given lengths, each starting with BOS."""
    tokens = rng.integers(4, vocab, size=int(sum(lengths)) + 1)
    tokens[np.cumsum([0] + list(lengths[:-1]))] = BOS
    return tokens


def _fineweb_like(rng, count: int = 400) -> list[int]:
    lengths = np.maximum(1, rng.lognormal(np.log(800) - 0.5, 1.0, count)).astype(int)
    kept = list(lengths[np.cumsum(lengths) <= FINEWEB_MICRO_BATCH])
    return kept + [FINEWEB_MICRO_BATCH - sum(kept)]


FA3_LAYOUTS = {  # document lengths of each tested window (tokens before cutting at FA3_SEQ_LEN)
    "one document of 2048": lambda rng: [2048],
    "one document of 5000 (cut into 2048+2048+904)": lambda rng: [5000],
    "8 x 2048": lambda rng: [2048] * 8,
    "ragged 1..3000, with 1-token documents": lambda rng: [1, 3000, 1, 17, 2047, 2049, 1, 777, 4096, 500, 2857],
    "200 short documents (1..64)": lambda rng: list(rng.integers(1, 65, 200)),
    "FineWeb-like micro-batch of 98,304 tokens": _fineweb_like,
}


@needs_fa3
@pytest.mark.parametrize("layout_name", list(FA3_LAYOUTS))
def test_fa3_matches_torch_varlen_on_packed_gqa_batches(layout_name):
    """train_gpt.varlen_attention with "fa3" against "torch_varlen" (the path the benchmarks run) on packed
    multi-document GQA batches cut by train_gpt's own packing; both also against an fp32 reference (exact
    per-piece padded SDPA): fa3's error at most about torch_varlen's."""
    rng = np.random.default_rng(0)
    batch = tg.pack_window(_doc_stream(FA3_LAYOUTS[layout_name](rng), rng), BOS, FA3_SEQ_LEN).to("cuda")
    layout = dict(cu_seqlens=batch.cu_seqlens, max_seqlen=batch.max_seqlen, positions=batch.positions)
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = ((FA3_HEADS, FA3_HEAD_DIM), (FA3_KV_HEADS, FA3_HEAD_DIM), (FA3_KV_HEADS, FA3_HEAD_DIM))
    q, k, v = (torch.randn(batch.inputs.numel(), *shape, device="cuda", generator=gen).bfloat16()
               for shape in shapes)
    fa3 = tg.varlen_attention(q, k, v, layout, "fa3").float()
    varlen = tg.varlen_attention(q, k, v, layout, "torch_varlen").float()
    group = FA3_HEADS // FA3_KV_HEADS  # kv heads expanded so that SDPA takes its memory-efficient kernel
    ref = tg.padded_sdpa_varlen(q.float(), k.float().repeat_interleave(group, 1),
                                v.float().repeat_interleave(group, 1), layout)
    diff = (fa3 - varlen).abs()
    assert fa3.shape == varlen.shape
    assert (diff / ref.abs().clamp_min(1.0)).max().item() <= FA3_MAX_REL
    assert diff.mean().item() <= FA3_MEAN_ABS
    err_fa3, err_varlen = (fa3 - ref).abs().max().item(), (varlen - ref).abs().max().item()
    assert err_fa3 <= FA3_FP32_ERR_FACTOR * err_varlen + FA3_FP32_ERR_SLACK, (err_fa3, err_varlen)


def _fa3_model_loss(h, backend: str, compiled: bool) -> float:
    torch.manual_seed(0)
    model = tg.GPT(h).to("cuda")
    model.configure_kernels(torch.device("cuda"), h.fused_ce_enabled, h.fused_mlp_enabled,
                            h.fused_qk_enabled)
    assert model.attn_backend == "fa3"  # chosen by itself where FA3 imports
    model.attn_backend = backend
    rng = np.random.default_rng(1)
    lengths = list(np.maximum(1, rng.lognormal(np.log(800) - 0.5, 1.0, 40)).astype(int))
    batch = tg.pack_window(_doc_stream(lengths, rng), BOS, h.train_seq_len).to("cuda")
    fn = tg.compile_for_training(model, h, torch.device("cuda")) if compiled else model  # as training compiles
    with torch.no_grad():
        return fn(batch.inputs, batch.targets, batch.positions, batch.cu_seqlens, batch.max_seqlen).item()


@needs_fa3
def test_fa3_model_forward_matches_torch_varlen():
    """One forward of the full-size GPT (record config), eager: fa3 against torch_varlen; and the same model
    with fa3 under torch.compile against eager (4 layers, to keep the compile short)."""
    h = tg.load_hyperparameters({})
    assert abs(_fa3_model_loss(h, "fa3", False) - _fa3_model_loss(h, "torch_varlen", False)) <= FA3_LOSS_TOL
    small = tg.load_hyperparameters(dict(NUM_LAYERS="4", LOOP_START="1", LOOP_END="2", NUM_LOOPS="1",
                                         PARALLEL_START_LAYER="3", XSA_LAST_N="4"))
    assert abs(_fa3_model_loss(small, "fa3", True) - _fa3_model_loss(small, "fa3", False)) <= FA3_LOSS_TOL


@needs_fa3
def test_fa3_is_chosen_and_logged(tmp_path):
    """attention_backend() picks fa3, and train_gpt.py itself (SMOKE sizes on this GPU) logs
    `attention_backend:fa3` on its model_params line; the run is stopped after that line."""
    assert tg.attention_backend(torch.device("cuda")) == "fa3"
    proc = subprocess.Popen([sys.executable, str(REPO / "train_gpt.py")], cwd=tmp_path, text=True,
                            env=clean_env(SMOKE=1, RUN_ID="fa3_log"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    seen = []
    for line in proc.stdout:
        seen.append(line.rstrip())
        if line.startswith("model_params:"):
            break
    proc.kill()
    proc.wait()
    assert seen and seen[-1].startswith("model_params:"), "\n".join(seen[-10:])
    assert "attention_backend:fa3" in seen[-1].split()
