"""Model structure, the parameter partition, Muon/Polar Express, and the schedule."""

import math

import numpy as np
import pytest
import torch

import train_gpt as tg


def test_record_parameter_count():
    assert sum(p.numel() for p in tg.GPT(tg.load_hyperparameters({})).parameters()) == 35_989_658


# #2135's model settings (RECIPE=2135): SmearGate, the sparse attention gate in place of the dense one, AsymLogit
MODEL_2135 = dict(SMEAR_GATE_ENABLED="1", SPARSE_ATTN_GATE_ENABLED="1", GATED_ATTN_ENABLED="0", ASYM_LOGIT_RESCALE="1")


def test_record_2135_parameter_count():
    """#2135's log: model_params:35945673 (#1886's less 11 dense gates, plus 11 sparse ones, the smear's 13 and
    the two softcaps)."""
    assert sum(p.numel() for p in tg.GPT(tg.load_hyperparameters(MODEL_2135)).parameters()) == 35_945_673


def test_virtual_layer_order_matches_the_record():
    h = tg.load_hyperparameters({})
    assert tg.virtual_layer_order(h, True) == ([0, 1, 2, 3, 4, 5, 3, 4], [5, 3, 4, 5, 6, 7, 8, 9, 10])
    assert tg.virtual_layer_order(h, False) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10])


def test_every_parameter_in_exactly_one_group():
    model = tg.GPT(tg.load_hyperparameters({}))
    groups = tg.partition_parameters(model)
    assert all(p.ndim == 2 for p in groups["muon"]) and len(groups["muon"]) == 11 * 6
    assert groups["embed"] == [model.tok_emb.weight]
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_2135_parameters_go_to_scalar_adam_and_the_softcaps_to_none():
    """As #2135's Optimizers: SmearGate and the sparse gates in scalar Adam; AsymLogit's softcaps in no
    optimizer (nothing trains them in the record's run)."""
    h = tg.load_hyperparameters({**MODEL_2135, "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4",
                                 "NUM_KV_HEADS": "2", "XSA_LAST_N": "2", "ROPE_DIMS": "8", "NUM_LOOPS": "0",
                                 "PARALLEL_START_LAYER": "1"})
    model = tg.GPT(h)
    groups = tg.partition_parameters(model)
    scalars = {id(p) for p in groups["scalars"]}
    assert {id(model.smear_gate), id(model.smear_lambda), id(model.blocks[1].attn.gate_weight)} <= scalars
    assert groups["fixed"] == [model.softcap_pos, model.softcap_neg]
    opt = tg.Optimizers(model, h, tg.DistContext())
    adam = {id(p) for g in opt.adam.param_groups for p in g["params"]}
    assert id(model.softcap_pos) not in adam and id(model.smear_gate) in adam


def test_global_sgd_leaves_the_asymmetric_softcaps():
    """The record's global TTT SGD scores with the scalar softcap, so AsymLogit's pair never moves; ours must
    not train them either (they would, through the eval softcap)."""
    h = tg.load_hyperparameters({**MODEL_2135, "SMOKE": "1", "GLOBAL_TTT_CHUNK_TOKENS": "512",
                                 "GLOBAL_TTT_LR": "0.1"})
    torch.manual_seed(0)
    model = tg.GPT(h)
    with torch.no_grad():  # logits of a few units: a softcap in the loss would get a visible gradient
        model.tok_emb.weight.normal_(std=1.0)
    stream = np.random.default_rng(0).integers(2, h.vocab_size, 3 * 512 + 1)
    stream[::200] = h.bos_id
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert tg.global_sgd(model, stream, h, tg.DistContext()) == 2
    moved = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert "smear_lambda" in moved and not moved & {"softcap_pos", "softcap_neg"}


def _singular_values(X):
    return torch.linalg.svdvals(X.double())


def _with_spectrum(rows, cols, low, seed):
    gen = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(rows, rows, generator=gen))
    V, _ = torch.linalg.qr(torch.randn(cols, cols, generator=gen))
    r = min(rows, cols)
    return U[:, :r] @ torch.diag(torch.logspace(math.log10(low), 0, r)) @ V[:, :r].T


def test_polar_express_orthogonalizes():
    for i, (rows, cols) in enumerate(((256, 64), (64, 256), (128, 128))):
        s = _singular_values(tg.orthogonalize(_with_spectrum(rows, cols, 0.1, i), 5, polar_express=True))
        # the schedule aims singular values at a band around 1 (~0.86-1.14 measured), not exactly 1
        assert s.max() < 1.2 and s.min() > 0.7, ((rows, cols), s.min(), s.max())


def test_polar_express_beats_classic_coefficients():
    """On a spread of singular values, 5 Polar Express steps land closer to 1 than the fixed quintic."""
    G = _with_spectrum(128, 128, 1e-3, 7)
    err = {pe: (_singular_values(tg.orthogonalize(G, 5, pe)) - 1).abs().max().item() for pe in (True, False)}
    assert err[True] < err[False]
    assert len(tg.POLAR_EXPRESS_COEFFS) == 5 and tg.POLAR_EXPRESS_COEFFS[0][0] > 8  # first step is aggressive


def test_muon_first_update_is_near_orthogonal():
    h = tg.load_hyperparameters({"GRAD_CLIP_NORM": "0", "MUON_WD": "0"})
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(64, 32))
    p.grad = _with_spectrum(64, 32, 0.1, 3)
    muon = tg.Muon([p], h, tg.DistContext())
    muon.reduce_gradients()
    muon.step(lr=1.0, momentum=0.0)
    update = -p.detach() / math.sqrt(64 / 32)
    s = _singular_values(update)
    assert s.max() < 1.2 and s.min() > 0.7


def test_lr_schedule_shape():
    h = tg.load_hyperparameters({})
    assert tg.lr_multiplier(0.0, h) == 1.0 and tg.lr_multiplier(0.25, h) == 1.0
    assert abs(tg.lr_multiplier(1.0, h) - h.min_lr) < 1e-12
    assert abs(tg.lr_multiplier(0.625, h) - 0.5) < 1e-9  # (1 - 0.625) / 0.75
    assert tg.lr_multiplier(0.925, h) == tg.lr_multiplier(0.99, h) == h.min_lr  # flat for the last 7.5%
    assert tg.muon_momentum_at(0, h) == 0.92 and tg.muon_momentum_at(10_000, h) == 0.97


def test_progress_is_time_under_a_cap_else_steps():
    capped = tg.load_hyperparameters({"MAX_WALLCLOCK_SECONDS": "100.5", "GPTQ_RESERVE_SECONDS": "0.5"})
    assert tg.training_progress(step=10, elapsed_seconds=25.0, h=capped) == 0.25
    uncapped = tg.load_hyperparameters({"MAX_WALLCLOCK_SECONDS": "0", "ITERATIONS": "40"})
    assert tg.training_progress(step=10, elapsed_seconds=25.0, h=uncapped) == 0.25


def test_training_steps_reduce_the_loss():
    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(__import__("conftest").PROXY_DATA)})
    torch.manual_seed(0)
    model = tg.GPT(h)
    loader = tg.TrainLoader(h, tg.DistContext(), 8)
    opt = tg.Optimizers(model, h, tg.DistContext())
    fixed = loader.batch(0, 0)
    with torch.no_grad():
        before = model(fixed.inputs, fixed.targets, fixed.positions, fixed.cu_seqlens, fixed.max_seqlen).item()
    for step in range(8):
        tg.train_step(model, model, loader, opt, step, 1.0)
    with torch.no_grad():
        after = model(fixed.inputs, fixed.targets, fixed.positions, fixed.cu_seqlens, fixed.max_seqlen).item()
    assert after < before - 1.0


def test_batched_orthogonalize_matches_one_matrix_at_a_time():
    stack = torch.stack([_with_spectrum(48, 96, 0.1, i) for i in range(3)] + [torch.zeros(48, 96)])
    batched = tg.orthogonalize(stack, 5, polar_express=True)
    for i in range(3):
        assert torch.allclose(batched[i], tg.orthogonalize(stack[i], 5, polar_express=True), atol=1e-5)
    assert torch.equal(batched[3], torch.zeros(48, 96))  # a padding slot stays zero, not NaN


def test_muon_bank_step_equals_separate_steps():
    """A bank of 3 same-shaped matrices (padded to the world size, orthogonalised as one batch) moves each
    matrix exactly as a Muon holding that matrix alone."""
    h = tg.load_hyperparameters({"GRAD_CLIP_NORM": "0"})
    grads = [_with_spectrum(32, 64, 0.1, 10 + i) for i in range(3)]
    bank = [torch.nn.Parameter(torch.ones(32, 64)) for _ in range(3)]
    alone = [torch.nn.Parameter(torch.ones(32, 64)) for _ in range(3)]
    together, single = tg.Muon(bank, h, tg.DistContext()), [tg.Muon([p], h, tg.DistContext()) for p in alone]
    for step in range(2):
        for p, q, g in zip(bank, alone, grads):
            p.grad, q.grad = g * (step + 1), g * (step + 1)
        together.reduce_gradients()
        together.step(0.05, 0.9)
        for m in single:
            m.reduce_gradients()
            m.step(0.05, 0.9)
    for p, q in zip(bank, alone):
        assert torch.allclose(p, q, atol=1e-6) and not torch.equal(p, torch.ones(32, 64))


RECORD_LAYOUT = {"NUM_LAYERS": "11", "LOOP_START": "3", "LOOP_END": "5", "NUM_LOOPS": "2",
                 "PARALLEL_START_LAYER": "8", "XSA_LAST_N": "11"}  # the record's layers at toy width
SMALL_LAYOUT = {"NUM_LAYERS": "4", "LOOP_START": "1", "LOOP_END": "2", "NUM_LOOPS": "1",
                "PARALLEL_START_LAYER": "3", "XSA_LAST_N": "4"}  # every kind of layer, fewer of them


def _model_and_batch(layout: dict):
    """A toy-width model with the given layers, every block live, and a 5-document packed batch."""
    h = tg.load_hyperparameters({"SMOKE": "1", "TRAIN_SEQ_LEN": "64", **layout})
    torch.manual_seed(0)
    model = tg.GPT(h)
    with torch.no_grad():  # zero-initialised projections would hide the blocks from the gradients
        for block in model.blocks:
            block.attn.proj.weight.normal_(std=0.05)
            block.mlp.down.weight.normal_(std=0.05)
    ids, targets = torch.randint(0, 8192, (2, 256))
    cu = torch.tensor([0, 50, 100, 150, 200, 256], dtype=torch.int32)
    positions = torch.cat([torch.arange(b - a) for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())])
    return model, (ids, targets, positions, cu)


def _loss_and_grads(fn, model, batch):
    """fn's loss on the batch and the model's gradients from it; the gradients are cleared after."""
    ids, targets, positions, cu = batch
    torch._dynamo.mark_dynamic(cu, 0)
    loss = fn(ids, targets, positions, cu, 64)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def _assert_same_loss_and_grads(eager, compiled):
    (eager_loss, eager_grads), (loss, grads) = eager, compiled
    assert torch.allclose(loss, eager_loss, rtol=1e-6)
    assert eager_grads.keys() == grads.keys()
    for name, g in grads.items():
        assert torch.allclose(g, eager_grads[name], rtol=1e-5, atol=1e-7), name


def test_compiled_loss_matches_eager_with_one_graph_per_recurrence_state():
    """COMPILE_SCOPE=model: CompiledLoss compiles packed_loss with the RoPE tables as inputs: the eager loss
    and gradients, one graph for each recurrence state, no graph break."""
    model, batch = _model_and_batch(SMALL_LAYOUT)  # one whole-model graph: keep it small
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = tg.CompiledLoss(model, backend="aot_eager")  # Dynamo + AOTAutograd, as Inductor sees them
    for looping in (False, True):
        model.looping = looping
        _assert_same_loss_and_grads(_loss_and_grads(model, model, batch), _loss_and_grads(compiled, model, batch))
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] == 2 and not counters["graph_break"]


def test_compiled_layer_regions_match_eager_with_one_graph_per_kind_of_layer():
    """COMPILE_SCOPE=layers: the record's 11-layer structure (at toy width) runs through the compiled
    embedding, layer and loss regions with the eager loss and gradients, recurrence off and on. The layer
    graphs are shared by every block: one per kind of layer (encoder; decoder with a skip; the split into
    two lanes; two lanes with and without a skip), none per block and none more for recurrence."""
    model, batch = _model_and_batch(RECORD_LAYOUT)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for looping in (False, True):
        model.looping = looping
        model.regions = None
        eager = _loss_and_grads(model, model, batch)
        model.compile_regions(backend="aot_eager")  # Dynamo + AOTAutograd, as Inductor sees them
        _assert_same_loss_and_grads(eager, _loss_and_grads(model, model, batch))
        assert eager[1]["blocks.10.mlp.up.weight"].abs().sum() > 0
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] == 2 + 5  # embed, loss, five kinds of layer
    assert counters["frames"]["ok"] == counters["frames"]["total"] == 7
    model.regions = None


def test_foreach_by_dtype_calls_once_per_dtype_with_the_per_tensor_result():
    # on the GPU the tied embedding is bf16 and the other weights fp32: one mixed foreach call launched a
    # kernel per tensor; split by dtype, each call can take the multi-tensor kernels
    torch.manual_seed(0)
    ts = [torch.randn(3), torch.randn(2).bfloat16(), torch.randn(4), torch.randn(5).bfloat16()]
    others = [torch.randn_like(t) for t in ts]
    want = [(t + o) * 0.5 for t, o in zip(ts, others)]
    calls = []

    def add(a, b):
        calls.append({t.dtype for t in a} | {t.dtype for t in b})
        torch._foreach_add_(a, b)
    tg.foreach_by_dtype(add, ts, others)
    tg.foreach_by_dtype(torch._foreach_mul_, ts, torch.tensor(0.5))  # a tensor scalar goes to every call
    assert calls == [{torch.float32}, {torch.bfloat16}]
    assert all(torch.equal(t, w) for t, w in zip(ts, want))


def test_accumulate_gradients_clips_mixed_dtype_gradients_like_clip_grad_norm():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5).bfloat16())]
    grads = [torch.randn(4, 3) * 3, (torch.randn(5) * 3).bfloat16()]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    total = tg.accumulate_gradients(params, None, max_norm=1.0)
    assert all(p.grad is None for p in params)  # cleared for the next micro-batch
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
    assert all(torch.equal(t, p.grad) for t, p in zip(total, params))


def test_total_norm_is_torchs_to_the_bit_and_never_cats_mixed_dtypes():
    """total_norm against torch's get_total_norm over many tensors of both dtypes in random order (to the bit:
    fails when its groups are taken in the tensors' order, not torch's), and no cat of mixed dtypes, which the
    GPU runs as one copy per input (fails with get_total_norm itself)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CatDtypes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.cat, torch.ops.aten.stack):
                self.seen.append({t.dtype for t in args[0]})
            return func(*args, **(kwargs or {}))

    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        tensors = [(torch.randn(int(torch.randint(1, 300, (1,), generator=gen)), generator=gen)
                    * float(torch.rand(1, generator=gen) * 10)).to((torch.float32, torch.bfloat16)[int(k)])
                   for k in torch.randint(2, (60,), generator=gen)]
        with CatDtypes() as mode:
            norm = tg.total_norm(tensors)
        want = torch.nn.utils.get_total_norm(tensors, foreach=True)
        assert norm.dtype == want.dtype and torch.equal(norm, want)
        assert mode.seen and all(len(dtypes) == 1 for dtypes in mode.seen), mode.seen
    one_dtype = [t.bfloat16() for t in tensors]
    assert torch.equal(tg.total_norm(one_dtype), torch.nn.utils.get_total_norm(one_dtype, foreach=True))


@pytest.mark.parametrize("dense", [False, True])
def test_xsa_in_kv_groups_equals_value_repeated_per_query_head(dense):
    # query head h reads kv head h // 2 (8 heads on 4); dense: (B, T, H, D) as attention's transposed output
    torch.manual_seed(0)
    v = torch.randn(2, 5, 4, 16) if dense else torch.randn(5, 4, 16)
    y = torch.randn(2, 8, 5, 16).transpose(1, 2) if dense else torch.randn(5, 8, 16)
    per_head = v.repeat_interleave(2, dim=-2)
    coef = (y * per_head).sum(-1, keepdim=True) / per_head.square().sum(-1, keepdim=True)
    assert torch.allclose(tg.exclude_self_value(y, v), y - coef * per_head, atol=1e-5)
    out = tg.exclude_self_value(y, v)  # what is left is orthogonal to the token's own value vector
    assert (out * per_head).sum(-1).abs().max() < 1e-4


def test_rope_tables_rotate_by_position_inside_the_document():
    # the same document at two offsets of a packed batch gets the same rotation: tables are by in-doc position
    rotary = tg.Rotary(8, 10_000.0, 64)
    x = torch.randn(6, 2, 16)
    positions = torch.tensor([0, 1, 2, 0, 1, 2])
    out = tg.apply_rope(x[[0, 1, 2, 0, 1, 2]], rotary(positions))
    assert torch.equal(out[:3], out[3:])
    assert torch.equal(out[..., 8:], x[[0, 1, 2, 0, 1, 2]][..., 8:])  # dims past rope_dims untouched
    assert torch.allclose(out.norm(dim=-1), x[[0, 1, 2, 0, 1, 2]].norm(dim=-1), atol=1e-5)  # a rotation


def test_rope_rotates_by_minus_the_angle_of_each_frequency():
    # a unit vector on dim i (< half) at position p: out[i] = cos(p w_i), out[i + half] = -sin(p w_i)
    dims, base, half = 8, 10_000.0, 4
    rotary = tg.Rotary(dims, base, 64)
    positions = torch.tensor([0, 1, 5, 63])
    for i in range(half):
        x = torch.zeros(len(positions), 1, 16)
        x[..., i] = 1.0
        out = tg.apply_rope(x, rotary(positions))[:, 0]
        angle = positions * base ** (-2 * i / dims)
        assert torch.allclose(out[:, i], angle.cos(), atol=1e-6)
        assert torch.allclose(out[:, i + half], -angle.sin(), atol=1e-6)
        assert out.abs().sum() == pytest.approx((angle.cos().abs() + angle.sin().abs()).sum().item(), abs=1e-5)


# ---- the MLP output gate (#1941, MLP_GATE_ENABLED) ----

TINY_GATED = {"SMOKE": "1", "MLP_GATE_ENABLED": "1", "DATA_PATH": str(__import__("conftest").PROXY_DATA)}


def test_mlp_gate_adds_its_143_parameters_to_the_record_model():
    """#1941: 11 x (12 + 1) = 143 parameters on #1886's model, each block's in the scalar Adam group."""
    model = tg.GPT(tg.load_hyperparameters({"MLP_GATE_ENABLED": "1"}))
    assert sum(p.numel() for p in model.parameters()) == 35_989_658 + 143
    scalars = {id(p) for p in tg.partition_parameters(model)["scalars"]}
    assert all({id(b.mlp_gate), id(b.mlp_gate_bias)} <= scalars for b in model.blocks)


def test_mlp_gate_starts_nearly_open_and_reads_the_unnormed_mlp_input():
    """At init the gated block's MLP output is sigmoid(5) times the ungated one's (fails with another bias
    init); with a trained gate it is sigmoid(w . x[:12] + b) of the MLP's input before its norm, per token."""
    h = tg.load_hyperparameters(TINY_GATED)
    torch.manual_seed(0)
    gated = tg.Block(h, 1)
    plain = tg.Block(tg.load_hyperparameters({**TINY_GATED, "MLP_GATE_ENABLED": "0"}), 1)
    torch.nn.init.normal_(gated.mlp.down.weight, std=0.1)
    plain.load_state_dict(gated.state_dict(), strict=False)
    x = torch.randn(2, 5, h.model_dim) * 3
    ungated = plain.mlp_out(x, None)
    assert torch.allclose(gated.mlp_out(x, None), torch.sigmoid(torch.tensor(5.0)) * ungated, rtol=1e-6)
    with torch.no_grad():
        gated.mlp_gate.normal_(std=0.5)
    gate = torch.sigmoid(x[..., :h.gate_window] @ gated.mlp_gate.detach().T + gated.mlp_gate_bias.detach())
    assert torch.allclose(gated.mlp_out(x, None), gate * ungated, rtol=1e-5, atol=1e-6)


def test_mlp_gate_trains():
    """Two training steps move every gate weight off zero (the first step's MLP outputs are zero: the down
    projections start at zero) and each bias off 5 (Adam holds them)."""
    h = tg.load_hyperparameters(TINY_GATED)
    torch.manual_seed(0)
    model = tg.GPT(h)
    loader = tg.TrainLoader(h, tg.DistContext(), 8)
    opt = tg.Optimizers(model, h, tg.DistContext())
    for step in range(2):
        tg.train_step(model, model, loader, opt, step, 1.0)
    for block in model.blocks:
        assert block.mlp_gate.abs().min() > 0 and block.mlp_gate_bias.item() != 5.0


# ---- progressive training context (#2014, TRAIN_SEQ_SCHEDULE) ----

def test_train_seq_schedule_switches_at_the_end_of_each_stage():
    """#2014's TRAIN_SEQ_SCHEDULE=1024@0.100,2048@0.700,3072@1.000: 1024 up to progress 0.1 included, 2048 up to
    0.7, 3072 after (and past 1: the last stage runs to the end); without a schedule, TRAIN_SEQ_LEN throughout."""
    h = tg.load_hyperparameters({"TRAIN_SEQ_SCHEDULE": "1024@0.100,2048@0.700,3072@1.000", "TRAIN_SEQ_LEN": "3072"})
    stages = tg.train_seq_stages(h)
    assert stages == [(0.1, 1024), (0.7, 2048), (1.0, 3072)]
    at = {p: tg.train_seq_len_at(p, stages) for p in (0.0, 0.1, 0.1001, 0.7, 0.7001, 1.0, 1.2)}
    assert at == {0.0: 1024, 0.1: 1024, 0.1001: 2048, 0.7: 2048, 0.7001: 3072, 1.0: 3072, 1.2: 3072}
    assert tg.train_seq_stages(tg.load_hyperparameters({})) == [(1.0, 2048)]


def test_warmup_covers_each_stage_in_the_recurrence_states_it_meets():
    """Recurrence on at 0.35: the 1024 stage (to 0.1) runs without it, 2048 (to 0.7) both, 3072 with it; the
    recipes keep their two graphs."""
    h = tg.load_hyperparameters({"TRAIN_SEQ_SCHEDULE": "1024@0.1,2048@0.7,3072@1", "TRAIN_SEQ_LEN": "3072"})
    assert tg.warmup_shapes(h) == [(1024, False), (2048, False), (2048, True), (3072, True)]
    for recipe in ("1886", "2135"):
        assert tg.warmup_shapes(tg.load_hyperparameters({"RECIPE": recipe})) == [(2048, False), (2048, True)]
    assert tg.warmup_shapes(tg.load_hyperparameters({"NUM_LOOPS": "0"})) == [(2048, False)]


# toy runs of a few steps: 256 tokens per micro-batch, two layers
SCHEDULED = dict(TRAIN_SEQ_LEN="128", TRAIN_BATCH_TOKENS="2048", MAX_WALLCLOCK_SECONDS="0",
                 GPTQ_CALIBRATION_BATCHES="1", NUM_LAYERS="2", LOOP_START="0", LOOP_END="0",
                 PARALLEL_START_LAYER="0", XSA_LAST_N="2")


def _scheduled_h(**extra):
    return tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(__import__("conftest").PROXY_DATA),
                                    **SCHEDULED, **extra})


def test_the_timed_loop_trains_each_stage_with_pieces_of_its_length(monkeypatch):
    """ITERATIONS=5 (progress = step / 5) under 32@0.2,64@0.4,128@1: steps 0-1 get pieces of at most 32 tokens,
    2 of 64, 3-4 of 128, each stage's longest piece reached (the sample's documents are longer), the same 256
    tokens in every micro-batch; SEQ_CHANGE_WARMUP_STEPS=2 halves the LR at each switch's first step."""
    h = _scheduled_h(TRAIN_SEQ_SCHEDULE="32@0.2,64@0.4,128@1", ITERATIONS="5", WARMUP_STEPS="0",
                     SEQ_CHANGE_WARMUP_STEPS="2")
    seen, lrs = {}, {}
    step_fn = tg.train_step

    def spy_step(model_fn, model, loader, opt, step, lr_mult):
        lrs[step] = lr_mult
        return step_fn(spy(model_fn, step), model, loader, opt, step, lr_mult)

    def spy(model_fn, step):
        def call(ids, targets, positions, cu_seqlens, max_seqlen):
            seen.setdefault(step, []).append((max_seqlen, cu_seqlens.diff().max().item(), ids.numel()))
            return model_fn(ids, targets, positions, cu_seqlens, max_seqlen)
        return call

    monkeypatch.setattr(tg, "train_step", spy_step)
    lines = []
    torch.manual_seed(0)
    tg.train(tg.GPT(h), h, tg.DistContext(), 8, lambda msg, console=True: lines.append(msg))
    stage = {0: 32, 1: 32, 2: 64, 3: 128, 4: 128}
    assert sorted(seen) == list(range(5))
    for step, calls in seen.items():
        assert len(calls) == 8 and all(m == stage[step] and p <= m and n == 256 for m, p, n in calls), step
    for length in (32, 64, 128):
        assert max(p for s, calls in seen.items() if stage[s] == length for _, p, _ in calls) == length
    assert lrs == {s: tg.lr_multiplier(s / 5, h) * (0.5 if s in (2, 3) else 1.0) for s in range(5)}
    switches = [line.split(" progress")[0] for line in lines if line.startswith("train_seq_len:")]
    assert switches == ["train_seq_len:32 step:0", "train_seq_len:64 step:2", "train_seq_len:128 step:3"]


def test_compile_warmup_leaves_no_graph_for_the_timed_loop():
    """Compiled (Dynamo + AOTAutograd, as Inductor sees them), the warm-up's steps meet the graph of every stage
    (a new piece length is a new graph): afterwards, a step of each stage compiles nothing."""
    h = _scheduled_h(TRAIN_SEQ_SCHEDULE="32@0.5,128@1", WARMUP_STEPS="2", NUM_LOOPS="0")
    torch.manual_seed(0)
    model = tg.GPT(h)
    loader = tg.TrainLoader(h, tg.DistContext(), 8)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    model_fn = tg.CompiledLoss(model, backend="aot_eager")
    tg.compile_warmup(model_fn, model, loader, h, tg.DistContext(), lambda msg, console=True: None)
    warmed = counters["stats"]["unique_graphs"]
    assert warmed == 2 and loader.seq_len == 128
    opt = tg.Optimizers(model, h, tg.DistContext())
    for step, seq_len in enumerate((32, 128)):
        loader.seq_len = seq_len
        tg.train_step(model_fn, model, loader, opt, 100 + step, 1.0)
        assert counters["stats"]["unique_graphs"] == warmed, seq_len


class _NcclCalls(tg.DistContext):
    """Takes the collectives' NCCL branch (reduce_scatter_tensor, all_gather_into_tensor) on gloo, which has those
    calls too: that branch's shapes and order, checked on the CPU."""

    @property
    def nccl(self) -> bool:
        return True


def _gloo_rank(rank: int, store: str, nccl_calls: bool = False) -> tg.DistContext:
    """Joins a 2-rank gloo group through the file `store`."""
    import datetime

    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    return (_NcclCalls if nccl_calls else tg.DistContext)(rank=rank, world_size=2)


def _clipped_mean_on_rank(rank: int, store: str, out: str) -> None:
    """Rank `rank` of 2 (gloo): its own gradients, averaged and clipped by GRAD_CLIP_MEAN; saves what it holds."""
    ctx = _gloo_rank(rank, store)
    model, opt = _clip_mean_model(ctx)
    for p, g in zip(model.parameters(), _rank_gradients(model, rank)):
        p.grad = g
    tg.all_reduce_gradients(opt.adam_params, ctx, divisor=2)
    opt.muon.reduce_gradients()
    opt.clip_mean_gradient(opt.h.grad_clip_norm)
    torch.save(dict(owned=opt.muon.owned_grads, adam=[p.grad for p in opt.adam_params]), f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def _clip_mean_model(ctx, **settings):
    h = tg.load_hyperparameters({"SMOKE": "1", "GRAD_CLIP_MEAN": "1", "GRAD_CLIP_NORM": "0.5",
                                 "DATA_PATH": str(__import__("conftest").PROXY_DATA), **settings})
    torch.manual_seed(0)
    model = tg.GPT(h)
    return model, tg.Optimizers(model, h, ctx)


def _rank_gradients(model, rank: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(rank)
    return [torch.randn(p.shape, generator=generator).to(p.dtype) for p in model.parameters()]


def test_grad_clip_mean_clips_the_rank_average_once(tmp_path):
    """GRAD_CLIP_MEAN on 2 ranks: what each rank's Adam and Muon slices hold is clip_grad_norm_ of the mean of
    the two ranks' gradients (the norm summed over the Muon slices that the ranks own apart)."""
    torch.multiprocessing.start_processes(_clipped_mean_on_rank, args=(str(tmp_path / "store"), str(tmp_path / "o")),
                                          nprocs=2, start_method="spawn")
    model, opt = _clip_mean_model(tg.DistContext())
    for p, g0, g1 in zip(model.parameters(), _rank_gradients(model, 0), _rank_gradients(model, 1)):
        p.grad = (g0 + g1) / 2
    norm = torch.nn.utils.clip_grad_norm_(list(model.parameters()), 0.5)
    assert norm > 2  # the clip acts
    got = [torch.load(tmp_path / f"o.{rank}") for rank in (0, 1)]
    for held in got:
        for p, g in zip(opt.adam_params, held["adam"]):
            torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)
    for b, bank in enumerate(opt.muon.banks):
        slices = torch.cat([held["owned"][b] for held in got])[:len(bank)]
        for p, g in zip(bank, slices):
            torch.testing.assert_close(g.float(), p.grad.float(), rtol=1e-5, atol=1e-7)


def _stepped_on_rank(rank: int, store: str, out: str, settings: dict, nccl_calls: bool) -> None:
    """Rank `rank` of 2 (gloo): two optimizer steps on its own gradients; saves its weights."""
    model, opt = _clip_mean_model(_gloo_rank(rank, store, nccl_calls), **settings)
    for step in range(2):
        for p, g in zip(model.parameters(), _rank_gradients(model, rank + 2 * step)):
            p.grad = g
        opt.step(1.0, 0.9)
    torch.save([p.detach() for p in model.parameters()], f"{out}.{rank}")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("clip_mean", ["0", "1"], ids=["clip_each", "clip_mean"])
@pytest.mark.parametrize("nccl_calls", [False, True], ids=["gloo_calls", "nccl_calls"])
def test_two_ranks_step_as_one_on_the_mean_gradient(tmp_path, clip_mean, nccl_calls):
    """Optimizers.step on 2 ranks (Muon's banks averaged in the background, each bank's update gathered while
    the next one orthogonalises) moves every weight as one process stepping on the mean of the two gradients:
    to the bit without GRAD_CLIP_MEAN (the default), with it up to the order its norm is summed in; through
    the gloo branch of the collectives and through the NCCL one's calls. Banks of 6, 6, 3 and 3 matrices: two
    are padded to the world size."""
    settings = dict(__import__("conftest").FEW_LAYERS, GRAD_CLIP_MEAN=clip_mean)
    torch.multiprocessing.start_processes(
        _stepped_on_rank, args=(str(tmp_path / "store"), str(tmp_path / "o"), settings, nccl_calls), nprocs=2,
        start_method="spawn")
    model, opt = _clip_mean_model(tg.DistContext(), **settings)
    assert len(opt.muon.banks) > 2 and any(len(bank) % 2 for bank in opt.muon.banks)  # several, some padded
    start = [p.detach().clone() for p in model.parameters()]
    for step in range(2):
        pairs = zip(model.parameters(), _rank_gradients(model, 2 * step), _rank_gradients(model, 2 * step + 1))
        for p, g0, g1 in pairs:
            p.grad = (g0 + g1) / 2
        opt.step(1.0, 0.9)
    for rank in (0, 1):
        for before, p, got in zip(start, model.parameters(), torch.load(tmp_path / f"o.{rank}")):
            assert not torch.equal(p, before)
            if clip_mean == "1":
                torch.testing.assert_close(got, p.detach(), rtol=1e-5, atol=1e-6)
            else:
                assert torch.equal(got, p.detach())


@pytest.mark.parametrize("clip_mean", [False, True])
def test_train_step_clips_each_micro_batch_or_their_mean(monkeypatch, clip_mean):
    """Two micro-batches: the optimizer steps on the mean of the clipped micro-batch gradients, or with
    GRAD_CLIP_MEAN on the clipped mean (the Adam side checked; Muon gets the same factor)."""
    h = tg.load_hyperparameters({"SMOKE": "1", "GRAD_CLIP_NORM": "0.05", "GRAD_CLIP_MEAN": str(int(clip_mean)),
                                 "FUSED_CE_ENABLED": "0", "FUSED_MLP_ENABLED": "0",
                                 "DATA_PATH": str(__import__("conftest").PROXY_DATA)})
    torch.manual_seed(0)
    model = tg.GPT(h)
    loader = tg.TrainLoader(h, tg.DistContext(), 2)
    opt = tg.Optimizers(model, h, tg.DistContext())
    seen = []
    monkeypatch.setattr(opt.adam, "step", lambda: seen.append([p.grad.clone() for p in opt.adam_params]))
    monkeypatch.setattr(opt.muon, "step", lambda *args: None)
    tg.train_step(model, model, loader, opt, 0, 1.0)
    params = list(model.parameters())
    micro = []
    for m in range(2):
        b = loader.batch(0, m)
        model(b.inputs, b.targets, b.positions, b.cu_seqlens, b.max_seqlen).backward()
        if not clip_mean:
            torch.nn.utils.clip_grad_norm_(params, 0.05)
        micro.append([p.grad.clone() for p in params])
        model.zero_grad(set_to_none=True)
    for p, g0, g1 in zip(params, *micro):
        p.grad = (g0 + g1) / 2
    if clip_mean:
        torch.nn.utils.clip_grad_norm_(params, 0.05)
    for got, p in zip(seen[0], opt.adam_params):
        torch.testing.assert_close(got, p.grad, rtol=1e-3, atol=1e-6)  # the norm reads Muon slices in its dtype
