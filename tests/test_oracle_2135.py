"""Record #2135's own script as the oracle of its model and training (issue 23 item 5): same weights and batches ->
the same loss, gradients, eval losses and weights after optimizer steps, in fp32 on the CPU, at toy size with two
parallel layers and two loops. What it adds to #1886's (tests/test_oracle_train.py): SmearGate, the sparse
attention gate, AsymLogit's two softcaps, and the optimizer settings of its run (MATRIX_LR 0.028, BETA2 0.99,
WARMDOWN_FRAC 0.85; the new parameters in scalar Adam, the softcaps in no optimizer).

The record (`../shared/reference/record_2135/train_gpt.py`) is imported through scripts/record_oracle.py. It reads
SMEAR_GATE_BOS_FIX when its model runs, not when it is built, so every call into its model runs inside
ro.record_env. Where the reference folder is absent these tests skip, except under CI=true, where they fail.
"""

import dataclasses
import sys

import pytest
import torch
import torch.nn.functional as F

import train_gpt as tg
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import record_oracle as ro  # noqa: E402

SCRIPT = ro.RECORD_2135
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
WEIGHT_RTOL = 1e-4
OPT_STEPS = 4
TOY_CLIP_NORM = 1.17
ONE_GPU_CLIP_NORM = 0.4  # between the two steps' mean gradient norms (0.42, 0.38)
# RECIPE=2135's values of the settings its model, optimizers and schedule read (knobs_2135.md)
SETTINGS_2135 = dict(recipe="2135")  # #2135's defaults, by value (tests/test_config.py), at toy sizes
NEW_PARAMS = ("smear_gate", "smear_lambda", "softcap_pos", "softcap_neg")


def _require_reference():
    ro.require_reference(SCRIPT)


def _toy_h(**extra) -> tg.Hyperparameters:
    env = {k.upper(): str(v) for k, v in {**ro.TOY_SIZES, **SETTINGS_2135, **extra}.items()}
    return tg.load_hyperparameters(env)


@pytest.fixture(scope="module")
def oracle():
    """(record module, its env, our toy Hyperparameters)."""
    _require_reference()
    h = _toy_h(muon_momentum_warmup_steps=3, iterations=OPT_STEPS)
    env = ro.record_env_for(h, SCRIPT)
    record = ro.import_record(env, SCRIPT, name="record_2135_oracle_module")
    record.BOS_ID = h.bos_id  # its loaders set it; its BOS fix reads it
    return record, env, h


def _with_bos_fix(oracle, bos_fix: bool):
    record, env, h = oracle
    return record, dict(env, SMEAR_GATE_BOS_FIX=ro.env_value(bos_fix)), dataclasses.replace(h, smear_gate_bos_fix=bos_fix)


def test_the_2135_settings_reach_the_record(oracle):
    """Each of #2135's settings reaches its script under its name with our value (its own defaults differ: sparse
    gate scale 1.0, gates off), and SMEAR_GATE_BOS_FIX, which it reads at forward time, is passed too."""
    record, env, h = oracle
    assert not set(env) - ro.record_env_names(SCRIPT) - set(ro.RECORD_BASE_ENV)
    assert env["SMEAR_GATE_BOS_FIX"] == "0"
    with ro.record_env(env, SCRIPT):
        rh = record.Hyperparameters()
    assert (rh.smear_gate_enabled, rh.sparse_attn_gate_enabled, rh.gated_attn_enabled, rh.asym_logit_rescale) == (
        True, True, False, True)
    assert (rh.sparse_attn_gate_scale, rh.sparse_attn_gate_init_std, rh.gate_window) == (
        h.sparse_attn_gate_scale, h.sparse_attn_gate_init_std, h.gate_window) == (0.5, 0.0, 12)
    assert (rh.matrix_lr, rh.beta2, rh.warmdown_frac, rh.num_loops) == (0.028, 0.99, 0.85, 2)


def _models(oracle, seed=0, perturb=0.0):
    """perturb > 0: also the smear's lambda set large enough that the smear moves the loss; the softcaps stay
    (the run never moves them; the eval test sets them apart)."""
    record, env, h = oracle
    theirs, ours = ro.toy_models(record, env, h, SCRIPT, seed, perturb, skip=("softcap",))
    if perturb:
        with torch.no_grad():
            theirs.smear_lambda.fill_(0.7)
        ro.copy_record_weights(theirs, ours)
    return theirs, ours


_rel = ro.relative_error


# ---- forward and backward ----

@pytest.mark.parametrize("looping, bos_fix", [(False, False), (True, False), (True, True)],
                         ids=["recurrence_off", "recurrence_on", "bos_fix_on"])
def test_loss_and_gradients_match_the_record(oracle, looping, bos_fix):
    """The training loss of a flat packed buffer (the smear crosses its documents unless SMEAR_GATE_BOS_FIX)."""
    record, env, h = oracle = _with_bos_fix(oracle, bos_fix)
    theirs, ours = _models(oracle, perturb=0.05)
    assert h.num_layers - h.parallel_start_layer >= 2 and h.num_loops == 2 and not h.gated_attn_enabled
    theirs.looping_active = ours.looping = looping
    batch = ro.toy_packed_batch(1, h)
    assert batch.cu_seqlens.numel() > 4  # a multi-document batch
    with ro.record_env(env, SCRIPT):
        loss_theirs = theirs(batch.inputs[None], batch.targets[None], cu_seqlens=batch.cu_seqlens,
                             max_seqlen=batch.max_seqlen)
        loss_theirs.backward()
    loss_ours = ours(batch.inputs, batch.targets, batch.positions, batch.cu_seqlens, batch.max_seqlen)
    loss_ours.backward()
    loss_err = abs(loss_ours.item() - loss_theirs.item()) / loss_theirs.item()
    assert loss_err <= LOSS_RTOL, f"loss ours {loss_ours.item():.7f} record {loss_theirs.item():.7f}"
    grads = ro.record_view(ro.record_grads(theirs), h.num_layers)
    # the training loss never reads AsymLogit's softcaps: no gradient, in the record and here
    assert "softcap_pos" not in grads and ours.softcap_pos.grad is None and ours.softcap_neg.grad is None
    errors = {name: _rel(p.grad, grads[name]) for name, p in ours.named_parameters() if p.grad is not None}
    assert set(errors) >= {"smear_gate", "smear_lambda", "blocks.0.attn.gate_weight"}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRAD_RTOL, f"gradient of {worst}: relative error {errors[worst]:.2e}"


@pytest.mark.parametrize("layout", ["varlen", "dense"])
def test_eval_losses_match_the_record_with_asymmetric_softcaps(oracle, layout):
    """Eval's per-token losses (the record's forward_logits) with softcaps moved apart (20 and 40), for a flat
    packed buffer and for dense (B, T) rows (TTT's layout: the smear runs along each row, its first token
    untouched). Nothing moves the softcaps in the record's run; this pins which cap takes which sign."""
    record, env, h = oracle
    theirs, ours = _models(oracle, perturb=0.05)
    theirs.looping_active = ours.looping = True
    with torch.no_grad():
        for model in (theirs, ours):
            model.softcap_pos.fill_(20.0)
            model.softcap_neg.fill_(40.0)
    batch = ro.toy_packed_batch(2, h)
    if layout == "varlen":
        ids, targets, args, hidden_args = batch.inputs[None], batch.targets, dict(
            cu_seqlens=batch.cu_seqlens, max_seqlen=batch.max_seqlen), (batch.inputs, batch.positions, batch.layout)
    else:
        ids, targets = batch.inputs[:80].view(2, 40), batch.targets[:80].view(2, 40)
        args, hidden_args = {}, (ids, torch.arange(40), None)
    with ro.record_env(env, SCRIPT), torch.no_grad():
        logits = theirs.forward_logits(ids, **args)
        ours_losses = ours.token_losses(ours.hidden(*hidden_args), targets)
    theirs_losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                    reduction="none").view(targets.shape)
    assert (logits > 0).any() and (logits < 0).any() and logits.abs().max() > 1
    assert _rel(ours_losses, theirs_losses) <= LOSS_RTOL


def test_new_parameters_start_as_the_records(oracle):
    """SmearGate, the sparse gate and the softcaps start at the record's deterministic values (zeros and
    LOGIT_SOFTCAP), and the two models have the same parameter count (the record's log: 35,945,673 at full size)."""
    record, env, h = oracle
    theirs, _ = _models(oracle)
    ours = tg.GPT(h)
    init = ro.record_view(dict(theirs.state_dict()), h.num_layers)
    for name, p in ours.named_parameters():
        if name in NEW_PARAMS or name.endswith("gate_weight"):
            torch.testing.assert_close(p.detach(), init[name], rtol=0, atol=0, msg=f"{name} differs")
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


# ---- optimizer steps ----

def test_optimizer_steps_match_the_record_at_8_gpus(oracle):
    """Muon and both Adam groups with #2135's settings and parameter groups (smear and sparse gate in scalar
    Adam, the softcaps in none: their weights are compared too), the warmdown schedule of its run, the
    per-micro-batch clipping of 8 GPUs, for OPT_STEPS steps."""
    record, env, h = oracle
    theirs, ours = _models(oracle, perturb=0.02)
    run = ro.optimizer_steps_against_record(record, env, h, theirs, ours, SCRIPT, TOY_CLIP_NORM, OPT_STEPS)
    for step, (name, error) in enumerate(run["worst"]):
        assert error <= WEIGHT_RTOL, f"after step {step + 1}: {name} relative error {error:.2e}"
    assert run["mixed_steps"], "the test must see a step with clipped and unclipped micro-batches"
    assert ours.softcap_pos.item() == ours.softcap_neg.item() == h.logit_softcap
    assert any(scale < 1 for scale in run["scales"])  # warmdown 0.85 reached


def test_grad_clip_mean_is_the_records_one_gpu_step(oracle, monkeypatch):
    """GRAD_CLIP_MEAN=1 on one process: #2135's step on one GPU (grad_accum_steps=8: the micro-batch gradients
    averaged, then clipped once) gives our weights, over a step whose mean is clipped and one whose is not."""
    record, env, h = oracle
    theirs, ours = _models(oracle, perturb=0.02)
    h = dataclasses.replace(h, grad_clip_norm=ONE_GPU_CLIP_NORM, grad_clip_mean=True)
    with ro.record_env(env, SCRIPT):
        h_record = record.Hyperparameters()
    h_record.grad_clip_norm = ONE_GPU_CLIP_NORM
    batches = [[ro.toy_packed_batch(100 * s + r, h) for r in range(tg.MICRO_BATCHES)] for s in range(2)]
    record_opt, our_opt = record.Optimizers(h_record, theirs), tg.Optimizers(ours, h, tg.DistContext())
    norms, clip = [], torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: norms.append(clip(*a, **k).item()))
    for step in range(2):
        scale = tg.lr_multiplier(step / h.iterations, h)
        with ro.record_env(env, SCRIPT):
            ro.record_one_gpu_step(record, theirs, record_opt, h_record, batches[step], step, scale)
        tg.train_step(ours, ours, ro.ToyStepBatches(batches), our_opt, step, scale)
        weights = ro.record_view(dict(theirs.state_dict()), h.num_layers)
        for name, p in ours.named_parameters():
            assert _rel(p.detach(), weights[name]) <= WEIGHT_RTOL, f"after step {step + 1}: {name}"
    assert norms[0] > ONE_GPU_CLIP_NORM > norms[1]  # the first step's mean clipped, the second's not


# ---- the val stream ----

@pytest.mark.parametrize("eval_seq_len", [2560, 2048, 300])
def test_the_whole_val_stream_is_cut_as_the_records(oracle, eval_seq_len):
    """VAL_MAX_TOKENS=0: the records score the first (N - 1) // EVAL_SEQ_LEN x EVAL_SEQ_LEN targets of the val
    stream (47,851,520 on CaseOps FineWeb); ours, the same stream (on the CaseOps sample: 40,635 tokens, cut)."""
    record, _, _ = oracle
    data = REPO / "sample_data" / "datasets" / "sample_caseops"
    h = tg.load_hyperparameters({"RECIPE": "2135", "DATA_PATH": str(data), "EVAL_SEQ_LEN": str(eval_seq_len)})
    ours = tg.load_val_tokens(h)
    theirs = record.load_validation_tokens(str(data / "fineweb_val_*.bin"), eval_seq_len).numpy()
    whole = len(tg.read_shard(data / "fineweb_val_000000.bin"))
    assert len(ours) < whole and ours.tolist() == theirs.tolist()
