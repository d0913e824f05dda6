"""The training loop's speed measures keep its semantics: the prefetching loader serves the same bytes as a
direct read whatever order it is asked in, and the loop waits for the device only where it reports a time."""

import math
import types

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


def _profile_gpu():
    """scripts/profile_gpu.py as a module, bound to the train_gpt the tests import (its main() imports one)."""
    import importlib.util

    from conftest import REPO
    spec = importlib.util.spec_from_file_location("profile_gpu", REPO / "scripts" / "profile_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.tg = tg
    return module


def test_profile_gpu_steps_through_train_step_and_counts_model_flops():
    """profile_gpu.py's `train` part on the CPU at toy size: its steps are train_gpt.train_step's (8
    micro-batches, the stream's steps 0, 1, ...), and its FLOP count is the hand formula on one piece."""
    profile_gpu = _profile_gpu()
    h, ctx = _h(TRAIN_BATCH_TOKENS=2048), tg.DistContext()
    torch.manual_seed(0)
    model = tg.GPT(h)
    model.configure_kernels(ctx.device, h.fused_ce_enabled, h.fused_mlp_enabled)
    loader = tg.TrainLoader(h, ctx, profile_gpu.ONE_GPU_ACCUM)
    opt = tg.Optimizers(model, h, ctx)
    before = [p.detach().clone() for p in model.parameters()]
    one_step = profile_gpu.training_steps(tg.compile_for_training(model, h, ctx.device), model, loader, opt, h)
    losses = [one_step().item() for _ in range(2)]
    assert all(math.isfinite(loss) for loss in losses)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert loader.prepared[0] == (2, 0)  # it read steps 0 and 1, all 8 micro-batches each

    length = 100
    piece = types.SimpleNamespace(cu_seqlens=torch.tensor([0, length]))
    block_matrices = sum(p.numel() for m in (model.blocks[0].attn, model.blocks[0].mlp)
                         for p in m.parameters() if p.ndim == 2)
    for looping, virtual_layers in ((False, h.num_layers),
                                    (True, h.num_layers + h.num_loops * (h.loop_end - h.loop_start + 1))):
        model.looping = looping
        matmuls = 6 * length * (h.vocab_size * h.model_dim + virtual_layers * block_matrices)
        attention = 3 * 4 * (length * (length + 1) / 2) * h.num_heads * h.head_dim * virtual_layers
        assert profile_gpu.model_flops_per_step(model, h, [piece]) == matmuls + attention
