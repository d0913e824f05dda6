"""GPTQ, the artifact container, compression, size accounting and corrupt-file errors."""

import os
import numpy as np
import pytest
import torch

import ship
import train_gpt as tg
from conftest import PROXY_DATA, TOKENIZER


@pytest.mark.parametrize("bits", [6, 7, 8])
def test_rtn_error_is_within_half_a_step(bits):
    torch.manual_seed(bits)
    W = torch.randn(64, 128)
    scale = tg.row_scales(W, bits, clip_sigma=4.0)
    deq = tg.quantize_rtn(W, scale, bits).float() * scale[:, None]
    qmax = 2 ** (bits - 1) - 1
    inside = W.abs() <= qmax * scale[:, None]
    assert torch.all((deq - W).abs()[inside] <= scale.expand_as(W.T).T[inside] / 2 + 1e-6)
    assert torch.all(deq.abs() <= qmax * scale[:, None] + 1e-6)  # clipped values stay in range


@pytest.fixture(scope="module")
def calibrated():
    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(PROXY_DATA)})
    torch.manual_seed(0)
    model = tg.GPT(h)
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.down.weight.normal_(std=0.02)
    loader = tg.TrainLoader(h, tg.DistContext(), 8)
    batches = tg.calibration_batches(loader, tg.dataclasses.replace(h, gptq_calibration_batches=2), tg.DistContext())
    hessians = tg.collect_hessians(model, batches, tg.DistContext())
    return h, model, hessians


def test_hessians_cover_every_gptq_tensor(calibrated):
    h, model, hessians = calibrated
    plan = tg.quantization_plan(model, h)
    keys = {rule.hessian_key for rule in plan.values() if rule.kind == "gptq"}
    assert keys <= set(hessians) and "lm_head" in keys
    assert sum(r.kind == "gptq" for r in plan.values()) == 6 * h.num_layers + 1


def test_gptq_beats_round_to_nearest_on_a_real_hessian(calibrated):
    h, model, hessians = calibrated
    for name in ("blocks.1.mlp.down", "blocks.0.attn.c_q"):
        W = dict(model.named_modules())[name].weight.detach()
        H = hessians[name]
        scale = tg.row_scales(W, 6, 12.0)
        errors = {}
        for method in ("rtn", "gptq"):
            q = tg.quantize_rtn(W, scale, 6) if method == "rtn" else tg.gptq_quantize(W, H, scale, 6)
            delta = q.float() * scale[:, None] - W
            errors[method] = torch.trace(delta @ H @ delta.T).item()  # output error on the calibration data
        assert errors["gptq"] < 0.9 * errors["rtn"], (name, errors)


def test_container_roundtrip_is_exact(calibrated):
    h, model, hessians = calibrated
    quantized = tg.quantize_model(model, hessians, h)
    blob, codec = tg.compress(tg.serialize_quantized(quantized, tg.model_config(h)), quality=5)
    loaded = tg.deserialize_quantized(tg.decompress(blob))
    before, after = tg.dequantize(quantized), tg.dequantize(loaded)
    assert codec == "brotli" and before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    fresh = tg.GPT(h)
    fresh.load_state_dict(after)  # strict: every parameter present
    kinds = {e["rule"].kind for e in loaded.values()}
    assert kinds == {"gptq", "int8_rows", "fp16"}


def test_byte_shuffle_roundtrip():
    raw = np.arange(40, dtype=np.float16).tobytes()
    assert tg._unshuffle_bytes(tg._shuffle_bytes(raw, 2), 2) == raw


def test_truncated_and_corrupt_artifacts(tmp_path, calibrated):
    h, model, hessians = calibrated
    blob, _ = tg.compress(tg.serialize_quantized(tg.quantize_model(model, hessians, h), tg.model_config(h)), quality=5)
    cases = {"truncated": blob[: len(blob) // 2], "flipped": blob[:40] + bytes([blob[40] ^ 0xFF]) + blob[41:],
             "foreign": b"PK\x03\x04" + blob[4:]}
    for name, data in cases.items():
        path = tmp_path / f"{name}.golf"
        path.write_bytes(data)
        with pytest.raises(ValueError, match="corrupt or truncated|artifact header"):
            tg.load_artifact(str(path))
    with pytest.raises(FileNotFoundError, match="ARTIFACT_PATH"):
        tg.load_artifact(str(tmp_path / "missing.golf"))


def test_budget_check_names_the_problem():
    fits = dict(total_bytes=15_999_999, model_bytes=15_970_000, code_bytes=29_999)
    assert tg.check_artifact_budget(fits) is None
    over = dict(total_bytes=16_000_001, model_bytes=15_970_002, code_bytes=29_999, clip_factor=1.1)
    message = tg.check_artifact_budget(over)
    assert "16,000,001" in message and "over budget" in message and "CLIP_SIGMA" in message


def test_accounting_counts_the_shipped_file():
    acc = tg.artifact_accounting(1000, tg.shipped_file(), tg.code_sources())
    shipped = ship.build_shipped_file(tg.code_sources())
    assert acc["code_raw_bytes"] == acc["raw_train_gpt.py"] + acc["raw_kernels.py"]
    assert acc["total_bytes"] == 1000 + acc["code_bytes"] == 1000 + len(shipped)
    assert acc["code_bytes"] < acc["code_raw_bytes"] / 2  # compressed, not the raw sources


def test_a_run_of_the_shipped_file_counts_the_file_it_runs_from(monkeypatch, tmp_path):
    """Running from a shipped file (EMBEDDED_SOURCES set), the counted code is that file's bytes, not a rebuild."""
    running = tmp_path / "train_gpt.py"
    running.write_bytes(b"x" * 123)
    monkeypatch.setattr(tg, "EMBEDDED_SOURCES", tg.code_sources())
    monkeypatch.setattr(tg, "__file__", str(running))
    assert tg.shipped_file() == running.read_bytes() and tg.artifact_accounting(1000, tg.shipped_file(), tg.code_sources())["code_bytes"] == 123


def test_the_start_of_a_run_says_what_the_code_leaves_for_the_model(monkeypatch):
    lines, shipped = [], ship.build_shipped_file(tg.code_sources())
    tg.log_model_budget(lines.append, shipped)
    left = tg.ARTIFACT_LIMIT_BYTES - len(shipped)
    assert lines == [f"artifact_budget: shipped code leaves {left:,} bytes for the model (the record's models: "
                     f"up to {tg.RECORD_MODEL_BYTES:,})"]
    monkeypatch.setattr(tg, "RECORD_MODEL_BYTES", left + 5)  # code grown past the record's margin
    lines.clear()
    tg.log_model_budget(lines.append, shipped)
    assert lines[-1] == "WARNING: a model as large as the record's would not fit: 5 bytes over"


def test_calibration_rows_are_dense_windows_that_cross_documents(calibrated):
    """The records' calibration: rows of TRAIN_SEQ_LEN stream tokens from anywhere in a shard, one attention span
    each (a BOS inside a row does not cut it); two ranks share out the same rows."""
    h, model, _ = calibrated
    h = tg.dataclasses.replace(h, gptq_calibration_batches=32)  # 64 rows: several meet a BOS
    loader = tg.TrainLoader(h, tg.DistContext(), 8)
    one = tg.calibration_batches(loader, h, tg.DistContext())
    seq, shard = h.train_seq_len, np.asarray(loader.stream.shards[0])
    rows_per_batch = h.train_batch_tokens // tg.MICRO_BATCHES // seq
    assert len(one) == 32 and all(b.shape == (rows_per_batch, seq) and b.dtype == torch.int64 for b in one)
    rows = torch.cat(one).numpy()
    assert any((r[1:] == h.bos_id).any() for r in rows)  # documents meet inside rows
    text = shard.tobytes()
    assert all(text.find(r.astype("<u2").tobytes()) % 2 == 0 for r in rows)  # each row is a run of the stream
    two = [tg.calibration_batches(loader, h, tg.DistContext(rank=r, world_size=2)) for r in range(2)]
    assert all(torch.equal(one[i], two[i % 2][i // 2]) for i in range(32))


def test_a_row_is_its_own_attention_span(calibrated):
    """The Hessians of two rows together are the sums of each row's alone: nothing (attention, SmearGate) crosses
    from one row into the next, as in the records' dense calibration."""
    h, model, _ = calibrated
    rows = torch.randint(0, h.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    both = tg.collect_hessians(model, [rows], tg.DistContext())
    apart = [tg.collect_hessians(model, [rows[i:i + 1]], tg.DistContext()) for i in range(2)]
    for key, H in both.items():
        summed = apart[0][key] + apart[1][key]
        assert (H - summed).norm() <= 1e-5 * summed.norm(), key


@pytest.mark.parametrize("lqer", [{}, dict(lqer_rank=2, lqer_top_k=4, lqer_asym_group=32)], ids=["2135", "2060"])
def test_pergroup_artifact_roundtrip_and_refusals(tmp_path, calibrated, lqer):
    """#2135's LQER shape (rank 4, top 3) and #2060's (rank 2, top 4, group 32): the factors have that shape,
    asymmetric (one scale for A, one per group of B), and survive the artifact."""
    h, model, hessians = calibrated
    h = tg.dataclasses.replace(h, lqer_enabled=True, gated_attn_quant_gate=False, **lqer)
    quantized = tg.quantize_model(model, hessians, h)
    corrected = [e for e in quantized.values() if "lqer_a" in e]
    assert len(corrected) == h.lqer_top_k
    assert all(e["lqer_a"].shape[1] == h.lqer_rank == e["lqer_b"].shape[0] and e["lqer_a_scale"].dim() == 0
               and e["lqer_b_scale"].numel() * h.lqer_asym_group == e["lqer_b"].numel() for e in corrected)
    blob, codec = tg.compress(tg.serialize_quantized(quantized, tg.model_config(h), pergroup=True), 5, codes="lzma")
    path = tmp_path / "pergroup.golf"
    path.write_bytes(blob)
    loaded, config = tg.load_artifact(str(path))
    before, after = tg.dequantize(quantized), tg.dequantize(loaded)
    assert codec == "brotli+lzma" and config == tg.model_config(h)
    assert all(torch.equal(before[k], after[k]) for k in before)
    path.write_bytes(blob[:-100])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        tg.load_artifact(str(path))
    present = tg.CODES_CODECS["lzma"]
    tg.CODES_CODECS["lzma"] = (lambda: False, *present[1:])  # the codes' codec missing on the reading machine
    try:
        path.write_bytes(blob)
        with pytest.raises(RuntimeError, match="lzma-compressed and lzma is not here"):
            tg.load_artifact(str(path))
    finally:
        tg.CODES_CODECS["lzma"] = present


def test_an_lrzip_that_does_not_start_is_passed_over(tmp_path, monkeypatch):
    """A GPU image had lrzip on PATH without its liblzo2: the run crashed in the artifact step (exit 127). A
    program that does not start now counts as absent, and the next codec packs the codes."""
    broken = tmp_path / "lrzip"
    broken.write_text("#!/bin/sh\nexit 127\n")
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert not tg.lrzip_runs() and tg.codes_codec() != "lrzip"


def test_mlp_gate_roundtrips_through_the_artifact(tmp_path):
    """MLP_GATE_ENABLED=1 (#1941): the gates are stored as fp16 (the record's passthrough) and come back; the
    artifact's model config holds the setting (EVAL_ONLY rebuilds the gated model); a model without gates
    refuses the weights."""
    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(PROXY_DATA), "MLP_GATE_ENABLED": "1"})
    torch.manual_seed(0)
    model = tg.GPT(h)
    with torch.no_grad():
        for block in model.blocks:
            block.mlp.down.weight.normal_(std=0.02)
            block.mlp_gate.normal_(std=0.3)
    loader = tg.TrainLoader(h, tg.DistContext(), 8)
    rows = tg.calibration_batches(loader, tg.dataclasses.replace(h, gptq_calibration_batches=1), tg.DistContext())
    quantized = tg.quantize_model(model, tg.collect_hessians(model, rows, tg.DistContext()), h)
    assert quantized["blocks.0.mlp_gate"]["rule"].kind == quantized["blocks.0.mlp_gate_bias"]["rule"].kind == "fp16"
    path = tmp_path / "gated.golf"
    path.write_bytes(tg.compress(tg.serialize_quantized(quantized, tg.model_config(h)), quality=5)[0])
    loaded, config = tg.load_artifact(str(path))
    assert config["mlp_gate_enabled"] is True
    state = tg.dequantize(loaded)
    assert torch.equal(state["blocks.2.mlp_gate"], model.blocks[2].mlp_gate.detach().half().float())
    tg.GPT(h).load_state_dict(state)  # strict: every parameter present
    with pytest.raises(RuntimeError, match="mlp_gate"):
        tg.GPT(tg.load_hyperparameters({"SMOKE": "1"})).load_state_dict(state)


def test_awq_lite_codes_the_outlier_channels_finer_and_round_trips(tmp_path, calibrated):
    """AWQ-lite (#1908): one MLP input carries 16 channels 30x louder than the rest. The most salient group over
    all matrices is those channels; coding them with 8 bits (a row scale of their own) in the same GPTQ solve
    cuts that layer's output error on those inputs, leaves every other tensor's codes as they were, and the
    artifact (per-group packing, with LQER) gives back the same weights."""
    h, model, hessians = calibrated
    name, loud = "blocks.1.mlp.down", slice(48, 64)
    W = dict(model.named_modules())[name].weight.detach()
    X = torch.randn(4096, W.size(1), generator=torch.Generator().manual_seed(0))
    X[:, loud] *= 30
    hessians = {**hessians, name: X.T @ X}
    base = tg.dataclasses.replace(h, lqer_enabled=True, gated_attn_quant_gate=False)
    plain = tg.quantize_model(model, hessians, base)
    awq_h = tg.dataclasses.replace(base, awq_lite_enabled=True, awq_lite_group_size=16)
    awq = tg.quantize_model(model, hessians, awq_h)
    assert [n for n, e in awq.items() if "awq_cols" in e] == [f"{name}.weight"]
    assert awq[f"{name}.weight"]["awq_cols"].long().tolist() == list(range(48, 64))
    codes = awq[f"{name}.weight"]["q"]
    assert codes[:, loud].abs().max() > 31 >= codes.abs().max(dim=0).values[:48].max()  # 8 bits there, 6 elsewhere

    def output_error(quantized):  # before LQER's correction, which has rank 4 of its own to spend
        entry = {k: v for k, v in quantized[f"{name}.weight"].items() if not k.startswith("lqer")}
        return ((X @ (tg.dequantize_entry(entry) - W).T) ** 2).sum().item()

    assert output_error(awq) < 0.5 * output_error(plain), (output_error(awq), output_error(plain))
    others = [n for n, e in plain.items() if e["rule"].kind == "gptq" and n != f"{name}.weight"]
    assert all(torch.equal(plain[n]["q"], awq[n]["q"]) for n in others)
    blob, _ = tg.compress(tg.serialize_quantized(awq, tg.model_config(awq_h), pergroup=True), 5, codes="lzma")
    loaded = tg.deserialize_quantized(tg.decompress(blob))
    before, after = tg.dequantize(awq), tg.dequantize(loaded)
    assert all(torch.equal(before[k], after[k]) for k in before)


def _load_on_two_ranks(rank: int, store_path: str, artifact: str, out: str) -> None:
    """Rank `rank` of 2 (gloo): load_artifact with rank 1 unable to decompress; write what it got."""
    import datetime

    import torch.distributed as dist
    # a rank left waiting for a broadcast fails after a minute instead of hanging the suite
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    if rank == 1:
        tg.decompress = lambda *a, **k: (_ for _ in ()).throw(AssertionError("rank 1 decompressed"))
    ctx = tg.DistContext(rank=rank, world_size=2)
    results = []
    for path in (artifact, artifact + ".missing"):
        try:
            quantized, config = tg.load_artifact(path, ctx)
            results.append(dict(state=tg.dequantize(quantized), config=config))
        except Exception as error:  # noqa: BLE001 (what each rank raised is the test's subject)
            results.append(f"{type(error).__name__}: {error}")
    torch.save(results, f"{out}.{rank}")
    dist.destroy_process_group()


def test_distributed_load_decompresses_on_rank_0_and_shares_its_errors(tmp_path, calibrated):
    """Two ranks: rank 0 alone decompresses (rank 1's decompress fails if called), both hold the same tensors
    and config; a missing artifact raises the same error on both ranks instead of leaving rank 1 waiting."""
    h, model, hessians = calibrated
    blob, _ = tg.compress(tg.serialize_quantized(tg.quantize_model(model, hessians, h), tg.model_config(h)), 5)
    path = tmp_path / "a.golf"
    path.write_bytes(blob)
    torch.multiprocessing.start_processes(_load_on_two_ranks, args=(str(tmp_path / "store"), str(path),
                                                                     str(tmp_path / "out")),
                                          nprocs=2, start_method="spawn")
    got = [torch.load(tmp_path / f"out.{rank}", weights_only=False) for rank in (0, 1)]
    expected = tg.dequantize(tg.load_artifact(str(path))[0])
    for loaded, missing in got:
        assert loaded["config"] == got[0][0]["config"]
        assert all(torch.equal(loaded["state"][k], expected[k]) for k in expected)
        assert missing.startswith("FileNotFoundError: artifact ") and "ARTIFACT_PATH" in missing


def test_a_run_counts_and_ships_the_file_built_at_its_start(monkeypatch, tmp_path):
    """The counted code is the code the run started with, built once: a source edited while it trains must not
    be shipped, logged or counted raw as if it had run (nor ship.py run again at the end)."""
    builds, given, real, reads = [], [], tg.code_sources(), []
    monkeypatch.setattr(tg, "shipped_file", lambda sources=None: given.append(sources)
                        or builds.append(b"# build %d\n" % len(builds)) or builds[-1])
    monkeypatch.setattr(tg, "code_sources", lambda: reads.append(1) or (
        real if len(reads) == 1 else {name: text + "# edited after the start\n" for name, text in real.items()}))
    for name in list(os.environ):
        monkeypatch.delenv(name)
    env = dict(SMOKE=1, ITERATIONS=2, TTT_ENABLED=0, VAL_MAX_TOKENS=4096, RUN_ID="a", DATA_PATH=PROXY_DATA,
               TOKENIZER_PATH=TOKENIZER)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(tmp_path)
    assert tg.main() == 0
    log = (tmp_path / "logs" / "a.txt").read_text()
    assert given == [real] and builds == [b"# build 0\n"] and (tmp_path / "logs" / "a.train_gpt.py").read_bytes() == builds[0]
    assert f" code_bytes:{len(builds[0])} " in log
    assert "# edited after the start" not in log and f" code_raw_bytes:{sum(len(s.encode()) for s in real.values())} " in log
