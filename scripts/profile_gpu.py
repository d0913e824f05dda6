"""Profile golfrun on one GPU, at the full record configuration.

    python scripts/profile_gpu.py --data .gpu_data train        # one training step: time, MFU, top kernels
    python scripts/profile_gpu.py --data .gpu_data ttt project  # TTT chunk steps, eager vs compiled; projection

train   : compiles the model as train_gpt.py does (--compile-scope: model or layers), times optimizer steps
          (786,432 tokens, 8 micro-batches on one GPU) with recurrence off and on, and profiles one step.
          MFU = model FLOPs / step time / peak, where the peak is a bf16 8192^3 matmul timed in the same run, and model FLOPs per step are
            6 * tokens * (sum of the block matrices each token passes through, once per virtual layer,
                          + the tied head, vocab x dim)
          + 3 * sum over document pieces of 2 * 2 * (L(L+1)/2) * (heads * head_dim) per virtual layer
          (QK^T and PV over the causal pairs of each piece; backward counted as twice the forward).
ttt     : runs train_gpt.ttt_batch (the evaluator's own per-batch loop: score, then Adam step, chunk by chunk)
          on batches of 64 pieces of one length, with the chunk function eager and compiled; prints seconds,
          chunk steps, processed tokens (rows x prefix summed over chunk steps) per second, peak memory, the
          first-step (compile) seconds, and profiles one batch per mode.
project : fits time = a * chunk_steps + b * processed_tokens for each mode from the `ttt` runs and applies it
          to the FineWeb validation set (50,000 documents, 40,540,160 tokens) split over --world ranks by
          train_gpt.plan_ttt_batches. FineWeb's document lengths are not available here: they are drawn from
          a log-normal with the set's mean length (810.8 tokens) at several spreads (sigma), cut into
          TRAIN_SEQ_LEN pieces as the evaluator cuts them. The slowest rank's time is the projection.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
tg = None  # train_gpt, imported in main() (--train-gpt picks another copy, e.g. a before/after comparison)


def import_train_gpt(path: Path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_gpt", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_gpt"] = module
    spec.loader.exec_module(module)
    return module

FINEWEB_VAL_DOCS, FINEWEB_VAL_TOKENS = 50_000, 40_540_160


def hyperparameters(args, **extra) -> tg.Hyperparameters:
    env = {"DATA_PATH": args.data, "TOKENIZER_PATH": f"{args.data}/fineweb_8192_bpe.model"}
    env.update({k.upper(): str(v) for k, v in extra.items()})
    return tg.load_hyperparameters(env)


def cuda_ms(fn, repeat: int) -> float:
    """Median wall time of fn() in ms, synchronised around each call."""
    times = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def matmul_peak_tflops() -> float:
    from triton.testing import do_bench
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = do_bench(lambda: a @ b, warmup=200, rep=1000, return_mode="median")
    return 2 * 8192 ** 3 / (ms * 1e-3) / 1e12


def kernel_class(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith("triton"):  # inductor's kernels (names list the fused ops, attention included)
        return "triton (inductor / ours)"
    if any(k in lowered for k in ("flash", "fmha", "sdpa", "attention", "attn")):  # before matmul: cutlass
        return "attention"
    if any(k in lowered for k in ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "cublas")):
        return "matmul"
    if "_kernel" in lowered and "::" not in lowered:  # our Triton kernels (kernels.py)
        return "triton (inductor / ours)"
    if "nccl" in lowered:
        return "collective"
    return "other (eager aten, copies)"


def print_profile(prof, title: str, top: int = 20) -> None:
    """Top device kernels by self time, and time per class of kernel."""
    rows = []
    for evt in prof.key_averages():
        device_us = getattr(evt, "self_device_time_total", None)
        if device_us is None:
            device_us = getattr(evt, "self_cuda_time_total", 0)
        if device_us > 0 and evt.count > 0 and getattr(evt, "device_type", None) is not None \
                and str(evt.device_type).endswith("CUDA"):
            rows.append((device_us, evt.count, evt.key))
    total = sum(r[0] for r in rows) or 1
    print(f"\n== {title}: device time {total / 1000:.1f} ms in {sum(r[1] for r in rows)} kernel launches ==")
    classes: dict[str, float] = {}
    for us, _, key in rows:
        classes[kernel_class(key)] = classes.get(kernel_class(key), 0) + us
    for name, us in sorted(classes.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28s} {us / 1000:9.2f} ms  {100 * us / total:5.1f}%")
    print(f"  {'self ms':>9s} {'calls':>6s} {'%':>5s}  kernel")
    for us, count, key in sorted(rows, reverse=True)[:top]:
        print(f"  {us / 1000:9.2f} {count:6d} {100 * us / total:5.1f}  {key[:110]}")


def profile(fn, title: str) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    print_profile(prof, title)


# ---- training step ----

def model_flops_per_step(model: tg.GPT, h: tg.Hyperparameters, batches) -> float:
    encoder, decoder = tg.virtual_layer_order(h, model.looping)
    per_token = h.vocab_size * h.model_dim  # tied head
    for layer in encoder + decoder:
        attn, mlp = model.blocks[layer].attn, model.blocks[layer].mlp
        per_token += sum(m.weight.numel() for m in (attn.c_q, attn.c_k, attn.c_v, attn.proj, mlp.up, mlp.down))
        per_token += attn.gate_weight.numel() if attn.gate_weight is not None else 0
    tokens, pairs = 0, 0
    for batch in batches:
        lengths = torch.diff(batch.cu_seqlens.cpu()).double()
        tokens += int(lengths.sum())
        pairs += float((lengths * (lengths + 1) / 2).sum())
    attention_fwd = 4 * pairs * h.num_heads * h.head_dim * len(encoder + decoder)
    return 6 * per_token * tokens + 3 * attention_fwd


def bench_train(args) -> None:
    scope = {"compile_scope": args.compile_scope} if args.compile_scope else {}
    h = hyperparameters(args, warmup_steps=0, **scope)
    ctx = tg.DistContext(device=torch.device("cuda", 0))
    torch.manual_seed(0)
    model = tg.GPT(h).to(ctx.device)
    model.configure_kernels(ctx.device, h.fused_ce_enabled, h.fused_mlp_enabled)
    if hasattr(tg, "compile_for_training"):
        model_fn = tg.compile_for_training(model, h, ctx.device)
    else:  # a train_gpt.py from before COMPILE_SCOPE: whole-model compile, as its train() did
        torch._inductor.config.triton.mix_order_reduction = False
        model_fn = torch.compile(model)
    print(f"compile scope: {getattr(h, 'compile_scope', 'model')}")
    loader = tg.TrainLoader(h, ctx, 8)
    opt = tg.Optimizers(model, h, ctx)
    peak = matmul_peak_tflops()
    print(f"bf16 matmul peak (8192^3, same run): {peak:.0f} TFLOP/s")
    for looping in (False, True) if args.looping else (False,):
        model.looping = looping
        t0 = time.perf_counter()
        tg.train_step(model_fn, model, loader, opt, 0, 8, 1.0, h)
        torch.cuda.synchronize()
        print(f"\nlooping:{int(looping)} first step (compile) {time.perf_counter() - t0:.1f} s")
        step = [1]

        def one_step():
            tg.train_step(model_fn, model, loader, opt, step[0], 8, 1.0, h)
            step[0] += 1
        ms = cuda_ms(one_step, args.steps)
        flops = np.mean([model_flops_per_step(model, h, [loader.batch(s, m) for m in range(8)])
                         for s in range(1, args.steps + 1)])
        tflops = flops / (ms * 1e-3) / 1e12
        print(f"looping:{int(looping)} step {ms:.1f} ms  tokens/s {h.train_batch_tokens / ms * 1000:,.0f}  "
              f"model TFLOP/step {flops / 1e12:.1f}  achieved {tflops:.0f} TFLOP/s  MFU {100 * tflops / peak:.1f}%  "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        profile(one_step, f"training step, looping {int(looping)}")


# ---- TTT ----

def synthetic_batch(n_pieces: int, length: int, vocab: int, bos: int, seed: int):
    """A token stream of n_pieces documents of `length` inputs each (BOS first), and their pieces."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, vocab, size=n_pieces * length + 1)
    tokens[::length] = bos
    return tokens, [(i * length, (i + 1) * length) for i in range(n_pieces)]


def chunk_work(lengths, chunk: int, min_rows: int = 2) -> tuple[int, int]:
    """(chunk steps, processed tokens = sum of rows x prefix) of one TTT batch of pieces; ttt_batch runs at
    least min_rows rows (min(2, TTT_BATCH_SIZE))."""
    lengths = np.asarray(lengths)
    steps, processed = 0, 0
    for start in range(0, int(lengths.max()), chunk):
        end = min(int(lengths.max()), start + chunk)
        steps += 1
        processed += max(int((lengths > start).sum()), min_rows) * end
    return steps, processed


def bench_ttt(args) -> dict:
    h = hyperparameters(args, ttt_collapse_threshold_bpb=1e9)  # random weights: keep the guard quiet
    ctx = tg.DistContext(device=torch.device("cuda", 0))
    torch.manual_seed(0)
    model = tg.GPT(h).to(ctx.device)
    model.configure_kernels(ctx.device, h.fused_ce_enabled, h.fused_mlp_enabled)
    model.looping = True
    with torch.no_grad():  # non-zero outputs everywhere, as in a trained model
        for block in model.blocks:
            block.attn.proj.weight.normal_(std=0.02)
            block.mlp.down.weight.normal_(std=0.02)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    tables = tg.build_byte_tables(tg.load_tokenizer(h.tokenizer_path, h.vocab_size)).to(ctx.device)
    torch._inductor.config.triton.mix_order_reduction = False
    results = {}
    for mode in args.modes:
        chunk_fn = torch.compile(tg.ttt_chunk_losses) if mode == "compiled" else tg.ttt_chunk_losses
        lora = tg.BatchedLoRA(h, h.ttt_batch_size, ctx.device)
        for p in lora.parameters():
            p.requires_grad_(True)
        points = []
        for length in args.lengths:
            tokens, batch = synthetic_batch(h.ttt_batch_size, length, h.vocab_size, h.bos_id, seed=length)
            base = torch.zeros(len(tokens), device=ctx.device)
            scores = torch.zeros(len(tokens), device=ctx.device)
            stats = tg.TTTStats(ctx.device, guard_on=True)
            run = lambda: tg.ttt_batch(chunk_fn, model, lora, tokens, batch, tables, h, ctx,  # noqa: E731
                                       base, stats, scores)
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            run()  # the first one compiles (compiled mode) or warms cuBLAS (eager)
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            ms = cuda_ms(run, args.repeat)
            steps, processed = chunk_work([length] * len(batch), h.ttt_chunk_size, min(2, h.ttt_batch_size))
            points.append((steps, processed, ms / 1000))
            print(f"ttt {mode:8s} pieces {len(batch)} x {length:5d}: first run {first:6.1f} s, then "
                  f"{ms / 1000:7.3f} s for {steps} chunk steps ({ms / steps:6.1f} ms/step), "
                  f"{processed / (ms / 1000):,.0f} processed tokens/s, "
                  f"{len(batch) * length / (ms / 1000):,.0f} scored tokens/s, "
                  f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
        results[mode] = points
        if args.profile_length:
            tokens, batch = synthetic_batch(h.ttt_batch_size, args.profile_length, h.vocab_size, h.bos_id, 0)
            base = torch.zeros(len(tokens), device=ctx.device)
            scores = torch.zeros(len(tokens), device=ctx.device)
            profile(lambda: tg.ttt_batch(chunk_fn, model, lora, tokens, batch, tables, h, ctx, base,
                                         tg.TTTStats(ctx.device, True), scores),
                    f"TTT batch {mode}, {len(batch)} pieces x {args.profile_length}")
    return results


def fit_cost(points) -> tuple[float, float]:
    """Least squares: seconds = a * chunk_steps + b * processed_tokens."""
    X = np.array([[s, p] for s, p, _ in points], dtype=np.float64)
    y = np.array([t for _, _, t in points])
    (a, b), *_ = np.linalg.lstsq(X, y, rcond=None)
    return float(a), float(b)


def fineweb_like_pieces(sigma: float, h, seed: int = 0):
    """50,000 log-normal document lengths with FineWeb val's mean, cut into pieces by the evaluator's own
    train_gpt.stream_pieces (a stream whose only tokens that matter are the BOS at each document start)."""
    rng = np.random.default_rng(seed)
    mean = FINEWEB_VAL_TOKENS / FINEWEB_VAL_DOCS
    lengths = np.maximum(2, rng.lognormal(math.log(mean) - sigma ** 2 / 2, sigma, FINEWEB_VAL_DOCS)).astype(int)
    stream = np.zeros(int(lengths.sum()) + 1, dtype=np.int32)
    stream[np.cumsum(lengths) - lengths] = h.bos_id
    return tg.stream_pieces(stream, h), int(lengths.sum())


def project(args, results: dict) -> None:
    h = hyperparameters(args)
    print(f"\n== projected TTT time on FineWeb val, {args.world} ranks (slowest rank) ==")
    print("mode      a ms/step  b ns/token  sigma  tokens       steps/rank  seconds")
    for mode, points in results.items():
        a, b = fit_cost(points)
        for sigma in args.sigmas:
            pieces, total = fineweb_like_pieces(sigma, h)
            plan = tg.plan_ttt_batches(pieces, h, args.world)
            per_rank = []
            for rank in range(args.world):
                steps = processed = 0
                for phase in plan:
                    for batch in phase[rank]:
                        s, p = chunk_work([e - s for s, e in batch], h.ttt_chunk_size, min(2, h.ttt_batch_size))
                        steps, processed = steps + s, processed + p
                per_rank.append((a * steps + b * processed, steps))
            seconds, steps = max(per_rank)
            print(f"{mode:9s} {a * 1000:9.2f}  {b * 1e9:10.2f}  {sigma:5.2f}  {total:,}  {steps:10d}  {seconds:7.1f}")
    print("(plus the first-step compile time of the compiled mode above, and the global SGD passes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", choices=["train", "ttt", "project"])
    parser.add_argument("--data", default=".gpu_data", help="folder with the shards and fineweb_8192_bpe.model")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per recurrence state")
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[128, 512, 2048], help="TTT piece lengths")
    parser.add_argument("--repeat", type=int, default=2, help="timed TTT batches per length")
    parser.add_argument("--profile-length", type=int, default=1024, help="piece length of the profiled TTT batch")
    parser.add_argument("--world", type=int, default=8, help="ranks for the projection")
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.8, 1.0, 1.2])
    parser.add_argument("--train-gpt", type=Path, default=REPO / "train_gpt.py", help="the train_gpt.py to profile")
    parser.add_argument("--compile-scope", choices=["layers", "model"], help="train: COMPILE_SCOPE (default: its own)")
    parser.add_argument("--no-looping", dest="looping", action="store_false", help="train: recurrence off only")
    args = parser.parse_args()
    global tg
    tg = import_train_gpt(args.train_gpt)
    print(f"profiling {args.train_gpt}")
    if not torch.cuda.is_available():
        raise SystemExit("profile_gpu.py needs a CUDA GPU")
    if "train" in args.parts:
        bench_train(args)
    if "ttt" in args.parts or "project" in args.parts:
        results = bench_ttt(args)
        if "project" in args.parts:
            project(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
