"""The records' own GPTQ Hessian collection as the oracle of ours (issue 26): the same weights and calibration rows
-> the same Hessian of every quantized matrix's input, recurrence on (the looped layers add one term per pass), in
fp32 on the CPU at toy size, for #1886 and #2135. The record divides by its batch count; ours keeps the sum (GPTQ
is unchanged by a common factor), so ours / batches is compared.

Where the reference folder is absent these tests skip, except under CI=true, where they fail.
"""

import sys
import types

import numpy as np
import pytest
import torch

import train_gpt as tg
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import record_oracle as ro  # noqa: E402

HESSIAN_RTOL = 1e-5
ROWS, BATCHES = 3, 2
RECORDS = {"1886": (ro.RECORD_1886, {}), "2135": (ro.RECORD_2135, dict(recipe="2135"))}
# the record's Hessian name of each of our input keys (its banks are unbanked under these names)
RECORD_KEYS = {"attn.c_q": "attn.c_q.weight", "attn.c_k": "attn.c_k.weight", "attn.c_v": "attn.c_v.weight",
               "attn.proj": "attn.proj.weight", "mlp.up": "mlp.fc.weight", "mlp.down": "mlp.proj.weight"}


class _Rows:
    """The record's calibration loader, serving the given dense rows (its next_batch -> x, y)."""

    def __init__(self, windows):
        self.windows = list(windows)

    def next_batch(self, global_tokens, grad_accum_steps):
        window = torch.from_numpy(self.windows.pop(0))
        return window[:, :-1], window[:, 1:]


def record_key(ours: str) -> str:
    if ours == "lm_head":
        return "tok_emb.weight"
    block, _, module = ours.partition(".attn.") if ".attn." in ours else ours.partition(".mlp.")
    return f"{block}.{RECORD_KEYS[('attn.' if '.attn.' in ours else 'mlp.') + module]}"


@pytest.mark.parametrize("which", RECORDS)
def test_hessians_are_the_records(which):
    script, settings = RECORDS[which]
    ro.require_reference(script)
    h = tg.load_hyperparameters({k.upper(): str(v) for k, v in {**ro.TOY_SIZES, **settings}.items()})
    env = ro.record_env_for(h, script)
    record = ro.import_record(env, script, name=f"record_{which}_hessians")
    record.BOS_ID = h.bos_id  # #2135's loaders set it; its smear reads it
    torch.manual_seed(0)
    theirs = ro.build_record_model(record, env, script)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every path (zero-initialised projections, gates, lanes, the smear) carries signal
        for name, p in theirs.named_parameters():
            if not name.startswith("softcap"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
        if hasattr(theirs, "smear_lambda"):
            theirs.smear_lambda.fill_(0.7)  # a smear that crossed rows would show
    ours = tg.GPT(h)
    ro.copy_record_weights(theirs, ours)
    theirs.looping_active = ours.looping = True  # the collection runs on the trained model, recurrence on

    rng = np.random.default_rng(2)
    windows = [rng.integers(0, h.vocab_size, (ROWS, h.train_seq_len + 1)) for _ in range(BATCHES)]
    mine = tg.collect_hessians(ours, [torch.from_numpy(w[:, :-1]) for w in windows], tg.DistContext())
    with ro.record_env(env, script):
        expected = record.collect_hessians(theirs, _Rows(windows), types.SimpleNamespace(
            train_batch_tokens=0, grad_accum_steps=1), torch.device("cpu"), n_calibration_batches=BATCHES)

    plan = tg.quantization_plan(ours, h)
    keys = {rule.hessian_key for rule in plan.values() if rule.kind == "gptq"}
    assert {record_key(k) for k in keys} == set(expected)  # one Hessian per quantized matrix, no more
    for key in sorted(keys):
        H, ref = mine[key] / BATCHES, expected[record_key(key)]
        err = ((H.double() - ref.double()).norm() / ref.double().norm()).item()
        assert err <= HESSIAN_RTOL, f"{key}: relative error {err:.2e} against the record's {record_key(key)}"
