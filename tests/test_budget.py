"""The artifact never exceeds its budget: a model over it is quantized again with coarser steps (fit_budget)."""

import re

import pytest
import torch

import train_gpt as tg
from conftest import PROXY_DATA, REPO, metric, run_train


@pytest.fixture(scope="module")
def toy():
    """A toy model's GPTQ inputs, its quantized state and that state's compressed size (brotli-5, as SMOKE)."""
    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(PROXY_DATA)})
    torch.manual_seed(0)
    model = tg.GPT(h)
    with torch.no_grad():  # (zero at init)
        for block in model.blocks:
            block.mlp.down.weight.normal_(std=0.02)
    batches = tg.calibration_batches(tg.TrainLoader(h, tg.DistContext(), 8), h, tg.DistContext())
    hessians = tg.collect_hessians(model, batches, tg.DistContext())
    quantized = tg.quantize_model(model, hessians, h)
    return h, model, hessians, quantized, packed_bytes(quantized, h)


def packed_bytes(quantized, h) -> int:
    return len(tg.compress(tg.serialize_quantized(quantized, tg.model_config(h)), h.brotli_quality)[0])


def shrink(toy, limit: int):
    """fit_budget on the toy: (its result, the sizes it packed, its log lines)."""
    h, model, hessians, quantized, first = toy
    packs, lines = [], []

    def pack(q):
        packs.append(packed_bytes(q, h))
        return packs[-1]

    result = tg.fit_budget(quantized, first, limit, h, lines.append,
                           lambda coarser: tg.quantize_model(model, hessians, coarser), pack)
    return result, packs, lines


@pytest.mark.parametrize("over", [200, 4000])  # a few hundred bytes, and ~1% of the toy model
def test_the_shrink_removes_at_least_the_bytes_over(toy, over):
    h, model, hessians, _, first = toy
    (quantized, model_bytes, factor), packs, lines = shrink(toy, first - over)
    assert model_bytes == packs[-1] and first - 3 * over - tg.SHRINK_MARGIN * first <= model_bytes <= first - over
    assert len(packs) == 1  # the first guess of bytes saved per bit is low on purpose: one recompression
    # the model returned is the one quantized with the factor logged, and the one whose size was counted
    again = tg.quantize_model(model, hessians, tg.coarser_clips(h, factor))
    assert all(torch.equal(a, b) for a, b in zip(tg.dequantize(again).values(), tg.dequantize(quantized).values()))
    assert packed_bytes(quantized, h) == model_bytes
    assert len(lines) == len(packs) and all(line.startswith(f"artifact_shrink: model {first:,} bytes")
                                            for line in lines)
    assert lines[-1].endswith(f" left: *_CLIP_SIGMAS x{factor:.5f} -> {model_bytes:,}")


def test_a_wrong_first_guess_is_corrected_by_what_it_saved(toy, monkeypatch):
    """A first factor from a far too optimistic bytes-per-bit saves too little; the second, from what the
    first saved, fits."""
    monkeypatch.setattr(tg, "SHRINK_BYTES_PER_BIT", 0.3)
    first = toy[-1]
    (_, model_bytes, _), packs, _ = shrink(toy, first - 4000)
    assert len(packs) == 2 and packs[0] > first - 4000 >= model_bytes


def test_a_model_that_fits_is_left_alone(toy):
    quantized, first = toy[3], toy[4]
    (kept, model_bytes, factor), packs, lines = shrink(toy, first)
    assert kept is quantized and (model_bytes, factor) == (first, 1.0) and packs == lines == []


def test_a_budget_out_of_reach_names_the_problem_and_the_fix(toy, monkeypatch):
    (_, model_bytes, factor), packs, _ = shrink(toy, 1000)
    assert factor == tg.SHRINK_MAX_FACTOR and model_bytes > 1000 and len(packs) == 1
    accounting = dict(tg.artifact_accounting(model_bytes, tg.shipped_file(), tg.code_sources()), clip_factor=factor)
    monkeypatch.setattr(tg, "ARTIFACT_LIMIT_BYTES", accounting["code_bytes"] + 1000)
    message = tg.check_artifact_budget(accounting)
    assert message.startswith(f"artifact over budget: {accounting['total_bytes']:,} bytes")
    assert "at *_CLIP_SIGMAS x1.10000 (at most x1.1)" in message
    assert "Raise the *_CLIP_SIGMAS values" in message


# Runs train_gpt.main() with a budget SQUEEZE bytes below the model as it first compresses (on every rank: the
# size is rank 0's, broadcast), so that the run must shrink it, whatever the model's size on this machine.
SQUEEZED_RUN = """
import sys
sys.path.insert(0, {repo!r})
import train_gpt as tg
fit_budget = tg.fit_budget

def squeezed(quantized, model_bytes, limit, *rest):
    tg.ARTIFACT_LIMIT_BYTES -= limit - (model_bytes - {squeeze})
    return fit_budget(quantized, model_bytes, model_bytes - {squeeze}, *rest)

tg.fit_budget = squeezed
sys.exit(tg.main())
"""


def test_a_run_over_its_budget_ends_within_it_on_every_rank(tmp_path):
    """Two ranks: both quantize again with the factor that rank 0's sizes give, so the roundtrip check (each
    rank's model against the artifact, bit for bit) holds; the log says what was done and what it cost."""
    script = tmp_path / "squeezed_run.py"
    script.write_text(SQUEEZED_RUN.format(repo=str(REPO), squeeze=2000))
    log = run_train(tmp_path, nproc=2, script=script, SMOKE=1, ITERATIONS=4, TTT_ENABLED=0, VAL_MAX_TOKENS=8192,
                    RUN_ID="squeezed")
    first = int(re.search(r"^artifact_shrink: model ([\d,]+) bytes", log, re.M).group(1).replace(",", ""))
    final = int(re.search(r"^artifact_model_bytes:(\d+)", log, re.M).group(1))
    total, limit = map(int, re.search(r"^artifact_total_bytes:(\d+) .*limit:(\d+)", log, re.M).groups())
    assert final <= first - 2000 and total <= limit
    assert (tmp_path / "squeezed.golf").stat().st_size == final
    assert re.search(r"^artifact_shrink_cost: val_loss [+-]\d\.\d+ val_bpb [+-]\d\.\d+ \(\d+ val tokens\)", log, re.M)
    assert "roundtrip_check: artifact == in-memory quantized model (bit for bit)" in log
    assert not re.search(r"^ERROR", log, re.M) and metric(log, "final_roundtrip_exact") > 0
