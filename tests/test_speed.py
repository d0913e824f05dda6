"""The training loop's speed measures keep its semantics: the prefetching loader serves the same bytes as a
direct read whatever order it is asked in, and the loop waits for the device only where it reports a time."""

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
    """20 steps logged every 10: the device is awaited after steps 1-5 (always logged), 10 and 20, and once
    at the end; the loop used to wait after every step."""
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
    assert len(calls) == 1 + 7 + 1  # the clock start, the 7 reported steps, the end
