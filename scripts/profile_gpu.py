"""Profile one golfrun training step on one GPU, at the full record configuration.

    python scripts/profile_gpu.py --data .gpu_data train        # one training step: time, MFU, top kernels

train   : compiles the model as train_gpt.py does (--compile-scope: model or layers), times optimizer steps
          (786,432 tokens, 8 micro-batches on one GPU) with recurrence off and on, and profiles one step.
          MFU = model FLOPs / step time / peak, where the peak is a bf16 8192^3 matmul timed in the same run, and model FLOPs per step are
            6 * tokens * (sum of the block matrices each token passes through, once per virtual layer,
                          + the tied head, vocab x dim)
          + 3 * sum over document pieces of 2 * 2 * (L(L+1)/2) * (heads * head_dim) per virtual layer
          (QK^T and PV over the causal pairs of each piece; backward counted as twice the forward).

TTT timing and its 8xH100 projection: scripts/bench_ttt_vs_reference.py (the `ttt` and `project` parts that
were here timed the evaluator before its rewrite and are gone).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ONE_GPU_ACCUM = 8  # micro-batches per step on one GPU: the record's 8 ranks' batches
tg = None  # train_gpt, imported in main() (--train-gpt picks another copy, e.g. a before/after comparison)


def import_train_gpt(path: Path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_gpt", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_gpt"] = module
    spec.loader.exec_module(module)
    return module


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


def training_steps(model_fn, model: tg.GPT, loader: tg.TrainLoader, opt: tg.Optimizers, h: tg.Hyperparameters):
    """A function that runs the next optimizer step (steps 0, 1, 2, ... of the loader's stream) at full
    learning rate, through train_gpt.train_step as the training loop calls it (8 micro-batches: one GPU)."""
    step = 0

    def one_step() -> torch.Tensor:
        nonlocal step
        loss = tg.train_step(model_fn, model, loader, opt, step, ONE_GPU_ACCUM, 1.0, h)
        step += 1
        return loss
    return one_step


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
    loader = tg.TrainLoader(h, ctx, ONE_GPU_ACCUM)
    opt = tg.Optimizers(model, h, ctx)
    peak = matmul_peak_tflops()
    print(f"bf16 matmul peak (8192^3, same run): {peak:.0f} TFLOP/s")
    for looping in (False, True) if args.looping else (False,):
        model.looping = looping
        t0 = time.perf_counter()
        one_step = training_steps(model_fn, model, loader, opt, h)
        one_step()
        torch.cuda.synchronize()
        print(f"\nlooping:{int(looping)} first step (compile) {time.perf_counter() - t0:.1f} s")
        ms = cuda_ms(one_step, args.steps)
        flops = np.mean([model_flops_per_step(model, h, [loader.batch(s, m) for m in range(ONE_GPU_ACCUM)])
                         for s in range(1, args.steps + 1)])
        tflops = flops / (ms * 1e-3) / 1e12
        print(f"looping:{int(looping)} step {ms:.1f} ms  tokens/s {h.train_batch_tokens / ms * 1000:,.0f}  "
              f"model TFLOP/step {flops / 1e12:.1f}  achieved {tflops:.0f} TFLOP/s  MFU {100 * tflops / peak:.1f}%  "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        profile(one_step, f"training step, looping {int(looping)}")


REMOVED_PARTS = ("ttt", "project")  # timed the TTT evaluator before its rewrite


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", default="train", help="train (the only part; the default)")
    parser.add_argument("--data", default=".gpu_data", help="folder with the shards and fineweb_8192_bpe.model")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per recurrence state")
    parser.add_argument("--train-gpt", type=Path, default=REPO / "train_gpt.py", help="the train_gpt.py to profile")
    parser.add_argument("--compile-scope", choices=["layers", "model"], help="train: COMPILE_SCOPE (default: its own)")
    parser.add_argument("--no-looping", dest="looping", action="store_false", help="train: recurrence off only")
    args = parser.parse_args()
    if args.part in REMOVED_PARTS:
        parser.error(f"the '{args.part}' part is gone with the old TTT evaluator: time TTT and project it to "
                     "8xH100 with scripts/bench_ttt_vs_reference.py")
    if args.part != "train":
        parser.error(f"unknown part '{args.part}': the only part is 'train'")
    global tg
    tg = import_train_gpt(args.train_gpt)
    print(f"profiling {args.train_gpt}")
    if not torch.cuda.is_available():
        raise SystemExit("profile_gpu.py needs a CUDA GPU")
    bench_train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
