"""The record's own code as the oracle of what tests/test_oracle_train.py does not reach (issue 25, section 1):
its training loop (wallclock progress, learning-rate multiplier, recurrence switch, stop, EMA) against ours
from a simulated clock, and the LeakyReLU(0.5)^2 of our fused MLP kernel against the record's MLP.

A fake clock advances by STEP_SECONDS at every optimizer step of either script, so both loops read the same
elapsed times; both get the same micro-batches and the same initial weights, in fp32 on the CPU."""

import types

import pytest
import torch

import kernels
import train_gpt as tg
from test_oracle_train import _rel, _require_reference, _toy_h, oracle, ro  # noqa: F401

STEP_SECONDS = 0.75  # one optimizer step on the fake clock (a power-of-two fraction: exact sums)
CAP_SECONDS, RESERVE_SECONDS = 7.0, 1.0  # a 6 s training budget: 8 steps of STEP_SECONDS
LOOP_AT = 0.375  # reached exactly at step 3 (progress 3 x 0.75 / 6): a ">" instead of ">=" moves the switch
EMA_DECAY = 0.5  # the final weights are far from the live ones: an EMA rule off shows
LOOP_RTOL = 1e-4  # relative error of the weight change over the run (fp32, two summation orders)


def test_wallclock_progress_matches_the_record_from_a_simulated_clock(oracle):
    """training_frac (the record's closure, its effective cap) against training_progress for a sequence of
    elapsed times, with and without a cap and GPTQ reserve; and lr_mul of each."""
    record, _, _ = oracle
    for cap, reserve in ((600.0, 0.5), (600.0, 12.0), (7.0, 1.0), (0.0, 0.5)):
        h = _toy_h(max_wallclock_seconds=cap, gptq_reserve_seconds=reserve, iterations=40)
        h_record = record.Hyperparameters()
        h_record.iterations, h_record.warmdown_frac, h_record.min_lr = h.iterations, h.warmdown_frac, h.min_lr
        cap_ms = 1e3 * (cap - reserve) if cap > 0 else None  # the record's max_wallclock_ms after its reserve
        frac = ro.record_closure(record, "train_model", "training_frac", h=h_record, max_wallclock_ms=cap_ms)
        lr_mul = ro.record_closure(record, "train_model", "lr_mul", h=h_record)
        for step in range(40):
            elapsed = step * (cap - reserve) / 37 if cap else 0.3 * step
            expected = frac(step, 1e3 * elapsed)
            got = tg.training_progress(step, elapsed, h)
            assert abs(got - expected) < 1e-12, f"cap {cap} reserve {reserve} step {step}: {got} vs {expected}"
            assert abs(tg.lr_multiplier(got, h) - lr_mul(expected)) < 1e-12


class FakeClock:
    """time.perf_counter for both scripts: STEP_SECONDS per optimizer step taken so far."""

    def __init__(self):
        self.steps = 0

    def perf_counter(self) -> float:
        return self.steps * STEP_SECONDS

    def counting(self, step):
        def counted(opt, *args, **kwargs):
            self.steps += 1
            return step(opt, *args, **kwargs)
        return counted


class _Batches:
    """Both loaders' interfaces over one list of micro-batches: ours (batch(step, micro)) and the record's
    DocumentPackingLoader (next_batch, in order)."""
    accum = tg.MICRO_BATCHES

    def __init__(self, batches, seq_len=None):
        self.batches, self.served, self.seq_len = batches, 0, seq_len  # seq_len: ours, set by TRAIN_SEQ_SCHEDULE

    def batch(self, step, micro_step):
        return self.batches[step * self.accum + micro_step]

    def next_batch(self, global_tokens, grad_accum_steps):
        b = self.batches[self.served]
        self.served += 1
        return b.inputs[None], b.targets[None], b.cu_seqlens, b.max_seqlen


def _run_record_loop(h, initial: tg.GPT, batches, clock, monkeypatch):
    """The record's train_model on the CPU: eager, fp32, its fused MLP off, our initial weights and batches,
    the fake clock; its final validation skipped. Returns (its final model, its log lines)."""
    record = ro.import_record(ro.record_env_for(h), name="record_loop_oracle")  # its settings: read at import
    lines = []
    original_gpt = record.GPT

    def gpt_with_our_weights(h_record):
        model = original_gpt(h_record)
        for block in model.blocks:
            block.mlp.use_fused = False  # its kernel needs Hopper TMA
        ro.copy_our_weights(initial, model)
        return model

    monkeypatch.setattr(record, "GPT", gpt_with_our_weights)
    monkeypatch.setattr(record, "DocumentPackingLoader", lambda *args: _Batches(batches))
    monkeypatch.setattr(record, "eval_val", lambda *args: (0.0, 0.0))
    monkeypatch.setattr(record, "log", lambda msg, console=True: lines.append(msg))
    monkeypatch.setattr(record, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(record.Optimizers, "step", clock.counting(record.Optimizers.step))
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *args: 0)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *args: 0)
    env = ro.record_env_for(h)
    with ro.record_env(env), ro.record_muon_in_fp32():  # its .bfloat16() casts (model, Muon) keep fp32 here
        model, _, _ = record.train_model(record.Hyperparameters(), torch.device("cpu"), None)
    return model, lines


def _run_our_loop(h, initial: tg.GPT, batches, clock, monkeypatch):
    lines = []
    model = tg.GPT(h)
    model.load_state_dict(initial.state_dict())
    with monkeypatch.context() as m:
        m.setattr(tg, "TrainLoader", lambda h, *args: _Batches(batches, h.train_seq_len))
        m.setattr(tg, "collect_hessians", lambda *args: {})  # GPTQ's Hessians (and their rows): not training
        m.setattr(tg, "calibration_batches", lambda *args: [])
        m.setattr(tg, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
        m.setattr(tg.Optimizers, "step", clock.counting(tg.Optimizers.step))
        result = tg.train(model, h, tg.DistContext(), tg.MICRO_BATCHES, lines.append)
    return model, result, lines


def test_training_loop_matches_the_record_from_a_simulated_clock(oracle, monkeypatch):
    """train() against the record's train_model, a few steps at toy size: the same number of steps under the
    cap, the recurrence switched on at the same step, and the same final (EMA) weights, which carry the
    learning-rate multiplier of every step. Gradient clipping is off: the record at world size 1 clips the
    accumulated gradient, ours each micro-batch's (its 8-GPU rule, compared in test_oracle_train.py)."""
    h = _toy_h(max_wallclock_seconds=CAP_SECONDS, gptq_reserve_seconds=RESERVE_SECONDS, iterations=100,
               enable_looping_at=LOOP_AT, ema_decay=EMA_DECAY, grad_clip_norm=0, warmup_steps=0,
               train_log_every=1, muon_momentum_warmup_steps=4)
    steps = int((CAP_SECONDS - RESERVE_SECONDS) / STEP_SECONDS)
    batches = [ro.toy_packed_batch(i, h) for i in range((steps + 2) * tg.MICRO_BATCHES)]
    torch.manual_seed(0)
    initial = tg.GPT(h)
    with torch.no_grad():  # every path carries signal (zero-initialised projections too)
        for p in initial.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours, result, our_lines = _run_our_loop(h, initial, batches, FakeClock(), monkeypatch)
    clock = FakeClock()
    theirs, record_lines = _run_record_loop(h, initial, batches, clock, monkeypatch)

    assert result["steps"] == clock.steps == steps, (result["steps"], clock.steps)
    switch = int(LOOP_AT * (CAP_SECONDS - RESERVE_SECONDS) / STEP_SECONDS)
    assert f"depth_recurrence:on step:{switch} " in "\n".join(our_lines)
    assert f"layer_loop:enabled step:{switch} " in "\n".join(record_lines)
    start = dict(initial.named_parameters())
    weights = ro.record_view(dict(theirs.state_dict()), h.num_layers)
    errors = {name: _rel(p.detach() - start[name].detach(), weights[name] - start[name].detach())
              for name, p in ours.named_parameters() if (weights[name] != start[name]).any()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= LOOP_RTOL, f"{worst}: relative error of its change {errors[worst]:.2e}"


@pytest.mark.skipif(not kernels.INTERPRETING, reason="Triton interpreter (CPU tensors)")
def test_fused_mlp_kernel_is_the_records_mlp(oracle):
    """Our fused MLP kernel (forward and weight/input gradients) against the record's eager MLP: an
    independent reference, so a slope changed everywhere in kernels.py (kernel and its own reference)
    still fails here."""
    record, _, h = oracle
    torch.manual_seed(5)
    m, d, hidden = 48, 64, 256
    x = torch.randn(m, d, requires_grad=True)
    w_up = (torch.randn(hidden, d) / d ** 0.5).requires_grad_(True)
    w_down = (torch.randn(d, hidden) / hidden ** 0.5).requires_grad_(True)
    mlp = record.MLP(d, hidden // d)
    mlp.use_fused = False
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w_up, w_down)]
    ref = mlp(*leaves)
    out = kernels.fused_mlp(x, w_up, w_down)
    g = torch.randn_like(ref)
    ref.backward(g)
    out.backward(g)
    assert _rel(out.detach(), ref.detach()) < 1e-5
    for got, want in zip((x.grad, w_up.grad, w_down.grad), (t.grad for t in leaves)):
        assert _rel(got, want) < 1e-5
