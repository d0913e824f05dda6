"""The training loop's speed measures keep its semantics: the prefetching loader serves the same bytes as a
direct read whatever order it is asked in, and the loop waits for the device only where it reports a time."""

import math
import sys

import pytest
import torch

from conftest import PROXY_DATA, TOKENIZER

import train_gpt as tg


def _h(**extra):
    env = {"SMOKE": "1", "DATA_PATH": str(PROXY_DATA), "TOKENIZER_PATH": str(TOKENIZER),
           "FUSED_CE_ENABLED": "0", "FUSED_MLP_ENABLED": "0"}
    env.update({k: str(v) for k, v in extra.items()})
    return tg.load_hyperparameters(env)


def _same(a: tg.PackedBatch, b: tg.PackedBatch) -> bool:
    return (all(torch.equal(x, y) for x, y in ((a.inputs, b.inputs), (a.targets, b.targets),
                                                (a.positions, b.positions), (a.cu_seqlens, b.cu_seqlens)))
            and a.max_seqlen == b.max_seqlen)


def test_prefetched_batches_are_the_direct_reads_in_any_order():
    h = _h()
    for ctx, accum in ((tg.DistContext(), 8), (tg.DistContext(rank=1, world_size=2), 4)):
        loader, direct = tg.TrainLoader(h, ctx, accum), tg.TrainLoader(h, ctx, accum)
        # in order (each one prefetched), a restart (warm-up -> step 0), a jump (GPTQ calibration), back again
        order = [(s, m) for s in range(2) for m in range(accum)] + [(0, 0), (0, 1), (10_000_000, 0), (1, 3)]
        for step, micro in order:
            assert _same(loader.batch(step, micro), direct.host_batch(step, micro)), (step, micro)
        assert loader.prepared[0] == ((1, 4) if accum > 4 else (2, 0))  # the batch after the last one


def test_the_loop_synchronises_only_at_reported_times(tmp_path, monkeypatch):
    """20 steps logged every 10: the device is awaited after steps 1-5 (always logged), 10 and 20, and at
    the ends of training and of data access; the loop used to wait after every step."""
    monkeypatch.chdir(tmp_path)
    h = _h(ITERATIONS=20, TRAIN_LOG_EVERY=10, MAX_WALLCLOCK_SECONDS=0, WARMUP_STEPS=0, TRAIN_BATCH_TOKENS=2048)
    calls = []
    monkeypatch.setattr(tg, "synchronize", lambda ctx: calls.append(1))
    monkeypatch.setattr(tg, "train_step", lambda *args: torch.zeros(()))  # the loop around the steps only
    lines = []
    torch.manual_seed(0)
    model = tg.GPT(h)
    result = tg.train(model, h, tg.DistContext(), 8, lambda msg, console=True: lines.append(msg))
    assert result["steps"] == 20
    assert sum(line.startswith("step:") for line in lines) == 7
    # the clock start, the 7 reported steps, the end of training, the end of data access (after the
    # GPTQ Hessians, which are on the training clock)
    assert len(calls) == 1 + 7 + 1 + 1


def test_profile_steps_through_train_step_and_counts_model_flops(monkeypatch):
    """profile_vs_reference.py's side of ours on the CPU at toy size: its steps are train_gpt.train_step's (8
    micro-batches, steps 0, 1, ...) and train the model, and its FLOP formula equals the count from the model's
    own matrices (one piece), recurrence off and on."""
    import argparse

    from conftest import REPO
    sys.path.insert(0, str(REPO / "scripts"))
    import profile_vs_reference as prof
    calls, real_step = [], tg.train_step

    def train_step(*args):
        calls.append((args[4], args[2].accum))  # (step, micro-batches of its loader)
        return real_step(*args)
    monkeypatch.setattr(tg, "train_step", train_step)
    settings = dict(SMOKE=1, DATA_PATH=PROXY_DATA, FUSED_CE_ENABLED=0, FUSED_MLP_ENABLED=0, TRAIN_BATCH_TOKENS=2048)
    args = argparse.Namespace(train_gpt=None, data_dir=PROXY_DATA, batch_steps=2,
                              ours_env=[f"{k}={v}" for k, v in settings.items()])
    s = prof.setup_ours(args, torch.device("cpu"))
    model = s["model"]
    before = [p.detach().clone() for p in model.parameters()]
    losses = [s["step"]().item() for _ in range(2)]
    assert calls == [(0, 8), (1, 8)] and all(math.isfinite(loss) for loss in losses)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert all(ms >= 0 for ms in s["timer"].split())

    h = tg.load_hyperparameters({k: str(v) for k, v in settings.items()})
    length = 100
    block_matrices = sum(p.numel() for m in (model.blocks[0].attn, model.blocks[0].mlp)
                         for p in m.parameters() if p.ndim == 2)
    for looping, virtual_layers in ((False, h.num_layers),
                                    (True, h.num_layers + h.num_loops * (h.loop_end - h.loop_start + 1))):
        matmuls = 6 * length * (h.vocab_size * h.model_dim + virtual_layers * block_matrices)
        attention = 3 * 4 * (length * (length + 1) / 2) * h.num_heads * h.head_dim * virtual_layers
        flops = prof.model_flops(s["cfg"], s["virtual"](looping), [torch.tensor([0, length])])
        assert flops == pytest.approx(matmuls + attention, rel=1e-12)


def test_trace_gaps_find_the_late_launch_and_the_host_op_behind_it(tmp_path):
    """profile_vs_reference.py gaps on a hand-made Chrome trace: of two gaps, the one whose next kernel was
    launched after the GPU went idle is host-bound, with the host ops around that launch; the other kernel was
    queued early (the GPU waited on something else). Busy time counts overlapping kernels once."""
    import gzip
    import json

    from conftest import REPO
    sys.path.insert(0, str(REPO / "scripts"))
    import profile_vs_reference as prof

    def event(cat, name, ts, dur, correlation=None, tid=1):
        return dict(ph="X", cat=cat, name=name, ts=ts, dur=dur, pid=0, tid=tid,
                    args={} if correlation is None else dict(correlation=correlation))
    events = [event("cpu_op", "Outer", 0, 200), event("cpu_op", "aten::gather", 40, 10),
              event("cuda_runtime", "cudaLaunchKernel", 1, 1, correlation=1),
              event("cuda_runtime", "cudaLaunchKernel", 45, 2, correlation=2),
              event("cuda_driver", "cuLaunchKernel", 3, 1, correlation=3),
              event("kernel", "k1", 10, 20, correlation=1, tid=7),  # 10-30
              event("kernel", "k2", 50, 10, correlation=2, tid=7),  # gap 20 us, launched 15 us into it
              event("kernel", "k3", 100, 20, correlation=3, tid=7),  # gap 40 us, queued long before
              event("gpu_memcpy", "copy", 110, 20, correlation=None, tid=8)]  # overlaps k3 by 10 us
    path = tmp_path / "t.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(dict(traceEvents=events), f)
    found = prof.device_gaps(prof.load_trace(path), min_us=15)
    assert (found["span_us"], found["busy_us"], found["lead_in_us"]) == (120, 60, 10)
    late, early = sorted(found["gaps"], key=lambda g: g["us"])
    assert (late["us"], late["host_bound"], late["launched_into_us"]) == (20, True, 15)
    assert late["ops"] == ["Outer", "aten::gather"] and (late["before"], late["after"]) == ("k1", "k2")
    assert (early["us"], early["host_bound"], early["ops"]) == (40, False, ["Outer"])
    text = prof.gaps_text(found, min_us=15)
    assert "host-bound (next kernel launched after the GPU went idle) 0.02 ms" in text
    assert "aten::gather" in text and "Outer" not in text.split("longest")[0]  # the early gap is not host-bound
    with pytest.raises(SystemExit, match="no device work"):
        prof.device_gaps([event("cpu_op", "Outer", 0, 1)])
    with pytest.raises(SystemExit):  # a path that is not a file: argparse's error naming --trace
        prof.main(["gaps", str(tmp_path / "missing.json.gz")])
