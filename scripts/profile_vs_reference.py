"""Profile one training step of ours (train_gpt.py) and of the record's script on the same GPU, at full size,
and print where ours spends device time that the record does not; or profile ours alone (--which ours).

    python scripts/profile_vs_reference.py --reference ../shared/reference/record_1886_train_gpt.py \
        --data-dir .gpu_data/ds --out prof_out            # ours, then the record, then the comparison
    python scripts/profile_vs_reference.py compare prof_out/ours.json prof_out/record.json
    python scripts/profile_vs_reference.py --which ours --data-dir D --trace      # + the profiled steps' traces
    python scripts/profile_vs_reference.py gaps prof_out/ours_off_trace.json.gz   # where the GPU waited
    python scripts/profile_vs_reference.py roofline R/step/ours_off_trace.json.gz R/copy.json  # roofline.sh's
    python scripts/profile_vs_reference.py --which ours --data-dir .gpu_data/ds    # ours alone: its report
    python scripts/profile_vs_reference.py --which ours --data-dir D --ours-env COMPILE_SCOPE=layers \
        --train-gpt ../before/train_gpt.py --no-looping      # another copy of ours, one scope, recurrence off
    python scripts/profile_vs_reference.py --which ours --data-dir D --inductor coordinate_descent_tuning=True

Each script runs in its own process (one after the other, same GPU) through its own objects: ours through
train_gpt.compile_for_training / Optimizers / train_step; the record (loaded by scripts/record_oracle.py) through
its GPT, Optimizers and torch.compile(dynamic=False, fullgraph=True) as its train_model sets them up, with the
FA3 shim on sys.path (torch's varlen attention, as ours). Both run 786,432 tokens per step in 8
micro-batches of their own loaders, taken once and kept on the GPU (the record's batches all of one
cu_seqlens bucket, so that its static-shape graph never recompiles), so the step times below leave out data
loading; bench_vs_reference.py measures whole runs. The record's per-step learning-rate and momentum updates
(host-side dictionary writes) are left out.

For each recurrence state (off, on; --no-looping: off only): compile and warm up (--warmup steps), time --steps
steps (median, device synchronised around each) and then as many back to back (their difference is what a
per-step host sync costs, as on several GPUs: the agreed clock), split one step into forward+backward and the
optimizer (CUDA events around the optimizer, gradient clipping included), profile one step with torch.profiler,
and classify its kernels. MFU = model FLOPs / step time / the bf16 peak of an 8192^3 matmul timed in the same
process; model FLOPs are 6 x tokens x (the matrices each token passes through + the tied head) + 3 x causal
attention FLOPs of the batch's pieces (the same formula for both scripts). TTT timing is bench_ttt_vs_reference.py's.
Ours with --micro-batches 1: a step of one micro-batch, an 8-GPU rank's share (the host's per-step work against a
~97 ms step; its FLOPs the eight micro-batches' mean). Writes OUT/ours.json and OUT/record.json, then prints the
comparison (one script alone: its own report).
--inductor KEY=VALUE (repeatable; KEY may be dotted, VALUE a Python literal) sets one of Inductor's settings
for ours' compiles, after train_gpt's own: an experiment on a compile lever, e.g. combo_kernels=True (fewer
launches) or coordinate_descent_tuning=True (tuned block sizes of Inductor's kernels). The record compiles as its
script does.
--cudagraphs compiles ours' model graph with CUDA graph trees (Inductor's triton.cudagraphs, for that graph
only: the optimizer's compiled Newton-Schulz returns outputs that Muon reads after its next call, which a replay
would overwrite) and pads each batch with empty document pieces to one cu_seqlens length
(--static-cu-seqlens alone: the padding without the graphs), so that one graph a state is recorded and replayed
without launch gaps. Use it with --micro-batches 1: a replay may reuse the memory of the last one's outputs,
gradients included, before train_step has added them up.
--trace also writes each profiled step's Chrome trace (OUT/WHICH_STATE_trace.json.gz, a few MB); `gaps` reads
one on any machine and lists the device's idle gaps between kernels: whether the host launched the next kernel
only after the GPU had gone idle (host-bound), and the host ops that were running when it did.
--trace-args writes it with each op's arguments (record_shapes): with --inductor benchmark_kernel=True, the op
around each launch of an Inductor kernel then carries the kernel's bytes as Inductor counts them, which
`roofline` sets against the copy bandwidth. Recording them adds host time under the profiler: read gaps from a
trace without them.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import gzip
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ONE_GPU_ACCUM = 8  # micro-batches per step on one GPU: the record's 8 ranks' batches
PEAK_MATMUL_N = 8192
PEAK_TRIALS = 3
DEVICE_EVENTS = ("kernel", "gpu_memcpy", "gpu_memset")  # a Chrome trace's categories of device work
LAUNCH_EVENTS = ("cuda_runtime", "cuda_driver")  # host calls that queue it, matched by "correlation"
HOST_OPS = ("cpu_op", "user_annotation")
GAP_MIN_US = 20.0  # a gap shorter than this is a launch's ordinary latency
KERNEL_CLASSES = (  # first match wins; names lowercased
    ("collective (nccl)", ("nccl",)),
    ("memcpy / memset", ("memcpy", "memset")),
    # before attention's: "bwd_kernel" below also ends the loss's backward kernel's name
    ("hand-written Triton (CE, MLP, q/k norm)", ("_softcap_ce_", "_softcapped_ce_", "_mm_leaky_sq",
                                                 "linear_leaky_relu_square", "_qk_norm_rope")),
    ("attention backward", ("flash_bwd", "fmha_bwd", "attention_backward", "flash_attn_bwd", "bwd_kernel")),
    ("attention forward", ("flash", "fmha", "attention")),
    ("Newton-Schulz / batched matmul", ("bmm", "batched")),
    ("matmul (gemm)", ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "cublas", "matmul")),
    ("inductor-generated Triton", ("triton_",)),
    ("optimizer (fused Adam, foreach)", ("adam", "multi_tensor", "foreach")),
    ("reductions (eager)", ("reduce", "norm")),
)


def kernel_class(name: str) -> str:
    lowered = name.lower()
    for label, keys in KERNEL_CLASSES:
        if any(k in lowered for k in keys):
            return label
    return "other eager elementwise / copies"


def model_flops(cfg: dict, virtual_layers: int, cu_lists) -> float:
    """6 x tokens x matmul params per token + 3 x causal attention forward FLOPs (see the docstring)."""
    import torch
    d, heads, kv, hidden = cfg["model_dim"], cfg["num_heads"], cfg["num_kv_heads"], cfg["mlp_mult"] * cfg["model_dim"]
    head_dim = d // heads
    per_layer = d * heads * head_dim * 2 + 2 * d * kv * head_dim + 2 * d * hidden + heads * d  # q, proj, k, v, MLP, gate
    tokens, pairs = 0, 0.0
    for cu in cu_lists:
        lengths = torch.diff(cu.cpu().long()).double()
        tokens += int(lengths.sum())
        pairs += float((lengths * (lengths + 1) / 2).sum())
    per_token = per_layer * virtual_layers + cfg["vocab_size"] * d
    return 6 * per_token * tokens + 3 * 4 * pairs * heads * head_dim * virtual_layers


# -----------------------------------------------------------------------------
# The two scripts' steps
# -----------------------------------------------------------------------------

class HostEvent:
    """torch.cuda.Event's record/elapsed_time on the host clock: Timed on a CPU (the test)."""

    def record(self):
        self.seconds = time.perf_counter()

    def elapsed_time(self, later) -> float:
        return (later.seconds - self.seconds) * 1000


class Timed:
    """Events around the optimizer part of a step: (forward+backward ms, optimizer ms)."""

    def __init__(self, cuda: bool = True):
        import torch
        self.cuda = cuda
        self.events = [torch.cuda.Event(enable_timing=True) if cuda else HostEvent() for _ in range(3)]

    def split(self) -> tuple[float, float]:
        import torch
        if self.cuda:
            torch.cuda.synchronize()
        a, b, c = self.events
        return a.elapsed_time(b), b.elapsed_time(c)


def import_train_gpt(path: Path | None):
    """This checkout's train_gpt, or another copy (a before/after comparison) with the kernels.py beside it."""
    if path is None:
        sys.path.insert(0, str(REPO))
        import train_gpt
        return train_gpt
    sys.path.insert(0, str(path.resolve().parent))
    spec = importlib.util.spec_from_file_location("train_gpt", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_gpt"] = module  # torch.compile re-imports a traced function's module by name
    spec.loader.exec_module(module)
    return module


def inductor_settings(pairs: list[str]) -> dict:
    """--inductor's KEY=VALUE pairs as {KEY: value}, each KEY one of this torch's Inductor settings (by its
    config's flat name, dotted for a nested one); ValueError naming the pair otherwise."""
    if not pairs:  # Inductor's config is not imported early: a record's TORCHINDUCTOR_* in --ref-env still counts
        return {}
    import ast

    import torch._inductor.config as config
    known, settings = config.get_config_copy(), {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in known:
            raise ValueError(f"--inductor {pair}: not KEY=VALUE with KEY one of torch._inductor.config's settings "
                             "(dotted for a nested one: triton.cudagraphs)")
        try:
            settings[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"--inductor {pair}: the value is not a Python literal (True, 1, 0.5, 'name')") from None
    return settings


def apply_inductor(settings: dict) -> dict:
    """Sets each setting on Inductor's config; returns their values read back from it (what the compiles see)."""
    if not settings:
        return {}
    import torch._inductor.config as config
    for key, value in settings.items():
        setattr(config, key, value)  # Inductor's config takes a nested setting by its dotted name
    now = config.get_config_copy()
    return {key: now[key] for key in settings}


def setup_ours(args, device):
    import torch
    tg = import_train_gpt(args.train_gpt)
    shards = args.data_dir / "datasets" / "fineweb10B_sp8192"
    h = tg.load_hyperparameters({"DATA_PATH": str(shards), "TOKENIZER_PATH": "unused", "WARMUP_STEPS": "0",
                                 **dict(kv.split("=", 1) for kv in args.ours_env)})
    ctx = tg.DistContext(device=device)
    torch.manual_seed(0)
    model = tg.GPT(h).to(device)
    qk = (h.fused_qk_enabled,) if hasattr(h, "fused_qk_enabled") else ()  # none in a --train-gpt before it
    model.configure_kernels(device, h.fused_ce_enabled, h.fused_mlp_enabled, *qk)
    if hasattr(tg, "compile_for_training"):
        model_fn = tg.compile_for_training(model, h, device)
    else:  # a train_gpt.py from before COMPILE_SCOPE: whole-model compile, as its train() did
        torch._inductor.config.triton.mix_order_reduction = False
        model_fn = torch.compile(model)
    if args.cudagraphs:  # CUDA graph trees for the model's graph only: the optimizer's outputs live across calls
        if not hasattr(tg, "CompiledLoss"):
            raise SystemExit("--cudagraphs needs a train_gpt.py with CompiledLoss (--train-gpt is older)")
        if not isinstance(model_fn, tg.CompiledLoss):
            raise SystemExit("--cudagraphs needs ours compiled as one graph on a GPU (COMPILE=1, COMPILE_SCOPE=model)")
        model_fn.packed_loss = torch.compile(model.packed_loss, options={"triton.cudagraphs": True})
    # after train_gpt's own settings; the compiles happen at the first step
    inductor = apply_inductor(inductor_settings(args.inductor))
    micro = args.micro_batches
    loader = tg.TrainLoader(h, ctx, ONE_GPU_ACCUM)
    batches = [loader.batch(s, m) for s in range(args.batch_steps) for m in range(ONE_GPU_ACCUM)]
    padded = args.static_cu_seqlens or args.cudagraphs
    if padded:  # every batch's cu_seqlens as long as the longest: one shape for a CUDA graph
        longest = max(b.cu_seqlens.numel() for b in batches)
        batches = [dataclasses.replace(b, cu_seqlens=torch.cat(
            [b.cu_seqlens, b.cu_seqlens[-1:].expand(longest - b.cu_seqlens.numel())])) for b in batches]

    class Preloaded:  # train_step's loader interface, serving the batches already on the GPU
        accum = micro

        def batch(self, step, m):
            return batches[(step * micro + m) % len(batches)]

    opt = tg.Optimizers(model, h, ctx)
    timer = Timed(device.type == "cuda")
    inner_step = opt.step

    def opt_step(*a, **k):  # events around the optimizer (clipping is inside it)
        timer.events[1].record()
        out = inner_step(*a, **k)
        timer.events[2].record()
        return out
    opt.step = opt_step
    counter = [0]
    old_train_step = "accum" in inspect.signature(tg.train_step).parameters

    def step():
        timer.events[0].record()
        if old_train_step:  # a train_gpt.py from before issue 22 passed the micro-batch count and settings
            loss = tg.train_step(model_fn, model, Preloaded(), opt, counter[0], micro, 1.0, h)
        else:
            loss = tg.train_step(model_fn, model, Preloaded(), opt, counter[0], 1.0)
        counter[0] += 1
        return loss

    def set_looping(on: bool):
        model.looping = on and h.num_loops > 0

    cfg = dict(model_dim=h.model_dim, num_heads=h.num_heads, num_kv_heads=h.num_kv_heads, mlp_mult=h.mlp_mult,
               vocab_size=h.vocab_size)
    virtual = lambda on: sum(map(len, tg.virtual_layer_order(h, on)))  # noqa: E731
    return dict(step=step, set_looping=set_looping, timer=timer, cfg=cfg, virtual=virtual, model=model,
                tokens=h.train_batch_tokens * micro // ONE_GPU_ACCUM, share=micro / ONE_GPU_ACCUM,
                cu=[b.cu_seqlens for b in batches[:ONE_GPU_ACCUM]],
                info=f"{args.train_gpt or 'train_gpt.py'}, COMPILE_SCOPE={h.compile_scope}, {micro} micro-batches, "
                f"fused_ce={int(model.use_fused_ce)} fused_mlp={int(model.blocks[0].mlp.use_fused)} "
                f"fused_qk={int(getattr(model.blocks[0].attn, 'use_fused_qk', 0))}, "  # 0 in a --train-gpt before it
                f"attention {model.attn_backend}" + ", static cu_seqlens" * padded
                + ", CUDA graphs" * args.cudagraphs
                + "".join(f", inductor {k}={v!r}" for k, v in inductor.items()),
                inductor=inductor)


def setup_record(args, device):
    import torch
    sys.path.insert(0, str(REPO / "scripts"))
    import record_oracle as ro
    env = {"DATA_DIR": os.environ.get("DATA_DIR", str(args.data_dir)),
           **dict(kv.split("=", 1) for kv in args.ref_env)}
    script = args.reference.resolve()
    rec = ro.import_record(env, script, name="record_train_gpt", eager_newton_schulz=False)  # compiled, as it runs
    torch._dynamo.config.optimize_ddp = False
    torch._dynamo.config.cache_size_limit = 16
    h = rec.Hyperparameters()
    torch.manual_seed(0)
    with ro.record_env(env, script):  # its attention reads GATED_ATTN_* when built
        base = rec.GPT(h)
    base = base.to(device).bfloat16()
    rec.restore_fp32_params(base)
    compiled = torch.compile(base, dynamic=False, fullgraph=True)
    optimizers = rec.Optimizers(h, base)
    for block in base.blocks:  # as its warm-up does: the rotary tables for the longest span, before tracing
        block.attn.rotary(h.train_batch_tokens // h.world_size, device, torch.bfloat16)
    loader = rec.DocumentPackingLoader(h, device)
    pool = [loader.next_batch(h.train_batch_tokens, h.grad_accum_steps)
            for _ in range(ONE_GPU_ACCUM * args.batch_steps * 2)]
    bucket = Counter(b[2].numel() for b in pool).most_common(1)[0][0]
    batches = [b for b in pool if b[2].numel() == bucket]
    timer = Timed()
    counter = [0]

    def step():
        timer.events[0].record()
        optimizers.zero_grad_all()
        for micro in range(h.grad_accum_steps):
            x, y, cu, _ = batches[(counter[0] * h.grad_accum_steps + micro) % len(batches)]
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                loss = compiled(x, y, cu_seqlens=cu, max_seqlen=h.train_seq_len)
            (loss / h.grad_accum_steps).backward()
        timer.events[1].record()
        torch.nn.utils.clip_grad_norm_(base.parameters(), h.grad_clip_norm)
        optimizers.step(distributed=False)
        timer.events[2].record()
        counter[0] += 1

    def set_looping(on: bool):
        base.looping_active = on and h.num_loops > 0

    cfg = dict(model_dim=h.model_dim, num_heads=h.num_heads, num_kv_heads=h.num_kv_heads,
               mlp_mult=int(h.mlp_mult), vocab_size=h.vocab_size)
    loop_len = h.loop_end - h.loop_start + 1
    virtual = lambda on: h.num_layers + (h.num_loops * loop_len if on else 0)  # noqa: E731
    return dict(step=step, set_looping=set_looping, timer=timer, cfg=cfg, virtual=virtual,
                tokens=h.train_batch_tokens, share=1.0, cu=[b[2] for b in batches[:ONE_GPU_ACCUM]],
                info=f"{args.reference.name}, cu_seqlens bucket {bucket} ({len(batches)} of {len(pool)} batches)")


# -----------------------------------------------------------------------------
# Measuring one script
# -----------------------------------------------------------------------------

def matmul_peak_tflops() -> float:
    import torch
    from triton.testing import do_bench
    a = torch.randn(PEAK_MATMUL_N, PEAK_MATMUL_N, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(PEAK_MATMUL_N, PEAK_MATMUL_N, device="cuda", dtype=torch.bfloat16)
    # the best of a few medians: one measurement on a lent H100 came out at 275 TFLOP/s (691 and 679 in other
    # runs on the same GPU model), an MFU of 92% (docs/runs/2026-11-26c/profile_ours_h100_low_peak.json)
    ms = min(do_bench(lambda: a @ b, warmup=200, rep=1000, return_mode="median") for _ in range(PEAK_TRIALS))
    return 2 * PEAK_MATMUL_N ** 3 / (ms * 1e-3) / 1e12


def kernel_rows(averages) -> list[dict]:
    """Device work by kernel, from a profile's key_averages(). A user annotation on the GPU spans kernels counted
    in their own rows: Inductor wraps each graph's call in one (## Call CompiledFxGraph ...) when benchmark_kernel
    is on, which doubled the device time the 2026-12-08 roofline profile printed."""
    rows = []
    for evt in averages:
        us = getattr(evt, "self_device_time_total", None)
        if us is None:
            us = getattr(evt, "self_cuda_time_total", 0)
        if (us > 0 and evt.count > 0 and str(getattr(evt, "device_type", "")).endswith("CUDA")
                and not getattr(evt, "is_user_annotation", False)):
            rows.append(dict(name=evt.key, us=float(us), count=int(evt.count), cls=kernel_class(evt.key)))
    return sorted(rows, key=lambda r: -r["us"])


def step_profiler(with_args: bool):
    """torch.profiler over a step's host ops and GPU kernels. with_args records each op's arguments
    (record_shapes): the op around each launch of an Inductor kernel keeps its kernel_num_gb there."""
    from torch.profiler import ProfilerActivity, profile
    return profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=with_args)


def measure(args) -> dict:
    import numpy as np
    import torch
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    s = (setup_ours if args.which == "ours" else setup_record)(args, device)
    out = dict(which=args.which, info=s["info"], device=torch.cuda.get_device_name(device),
               torch=torch.__version__, setup_s=time.perf_counter() - t0, peak_tflops=matmul_peak_tflops(),
               inductor=s.get("inductor", {}), states={})
    print(f"[{args.which}] {s['info']} on {out['device']}; bf16 peak {out['peak_tflops']:.0f} TFLOP/s", flush=True)
    for on in (False, True) if args.looping else (False,):
        s["set_looping"](on)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            s["step"]()
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        times, splits = [], []
        for _ in range(args.steps):
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            s["step"]()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t1) * 1000)
            splits.append(s["timer"].split())
        t1 = time.perf_counter()  # the same steps queued back to back: what the per-step syncs above cost
        for _ in range(args.steps):
            s["step"]()
        torch.cuda.synchronize()
        back_to_back_ms = (time.perf_counter() - t1) * 1000 / args.steps
        torch.cuda.reset_peak_memory_stats()
        with step_profiler(args.trace_args) as prof:
            s["step"]()
            torch.cuda.synchronize()
        if args.trace or args.trace_args:  # torch gzips it: the path ends in .gz
            prof.export_chrome_trace(str(args.out / f"{args.which}_{'on' if on else 'off'}_trace.json.gz"))
        rows = kernel_rows(prof.key_averages())
        ms = float(np.median(times))
        flops = model_flops(s["cfg"], s["virtual"](on), s["cu"]) * s["share"]  # of 8 micro-batches
        state = dict(ms=ms, synced_mean_ms=float(np.mean(times)), back_to_back_ms=back_to_back_ms,
                     fwd_bwd_ms=float(np.median([a for a, _ in splits])),
                     optimizer_ms=float(np.median([b for _, b in splits])), compile_and_warmup_s=compile_s,
                     device_ms=sum(r["us"] for r in rows) / 1000, launches=sum(r["count"] for r in rows),
                     mfu=flops / (ms * 1e-3) / 1e12 / out["peak_tflops"], model_tflop=flops / 1e12,
                     peak_gib=torch.cuda.max_memory_allocated() / 2**30, kernels=rows[:200])
        out["states"]["on" if on else "off"] = state
        print(f"[{args.which}] recurrence {'on' if on else 'off'}: {ms:.1f} ms/step (fwd+bwd "
              f"{state['fwd_bwd_ms']:.1f}, optimizer {state['optimizer_ms']:.1f}), "
              f"tokens/s {s['tokens'] / ms * 1000:,.0f}, device busy "
              f"{state['device_ms']:.1f} ms in {state['launches']} launches, MFU {100 * state['mfu']:.1f}%, "
              f"compile+warm-up {compile_s:.0f} s; mean {state['synced_mean_ms']:.2f} ms synced each step, "
              f"{back_to_back_ms:.2f} back to back", flush=True)
    return out


# -----------------------------------------------------------------------------
# Device gaps in a trace (measured under the profiler, whose own host cost lengthens host-bound gaps)
# -----------------------------------------------------------------------------

def load_trace(path: Path) -> list[dict]:
    """The trace's complete events ("X") with their times as integer ns (torch writes absolute us as floats, whose
    last digits blur which of two touching events ended first) and their args as a dict."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with (gzip.open if gzipped else open)(path, "rt") as f:
        trace = json.load(f)
    if not isinstance(trace, dict) or "traceEvents" not in trace:
        raise SystemExit(f"{path} is not a Chrome trace (no traceEvents): `gaps` reads the "
                         "OUT/WHICH_STATE_trace.json.gz that --trace writes, not OUT/WHICH.json")
    return [dict(e, ts=round(e["ts"] * 1000), dur=round(e.get("dur", 0) * 1000), args=e.get("args") or {})
            for e in trace["traceEvents"] if e.get("ph") == "X" and "ts" in e]


class HostThread:
    """One host thread's ops (cpu_op, user_annotation), each with its parent: the op it is nested in."""

    def __init__(self, ops: list[dict]):
        self.ops = sorted(ops, key=lambda e: (e["ts"], -e["dur"]))  # an op before the ops nested in it
        self.starts = [op["ts"] for op in self.ops]
        self.parent: list[int | None] = []
        open_ops: list[int] = []  # the ops enclosing the current one, innermost last
        for i, op in enumerate(self.ops):
            while open_ops and self.end(open_ops[-1]) <= op["ts"]:
                open_ops.pop()
            self.parent.append(open_ops[-1] if open_ops else None)
            open_ops.append(i)

    def end(self, i: int) -> int:
        return self.ops[i]["ts"] + self.ops[i]["dur"]

    def at(self, ts: int) -> list[int]:
        """The ops running at ts (started at or before it, not yet ended), outermost first."""
        i = bisect.bisect_right(self.starts, ts) - 1  # the last op started by ts: the innermost, or nested in it
        chain = []
        while i is not None and i >= 0:
            if self.end(i) > ts:  # an ancestor that overlapped without nesting may have ended: skipped
                chain.append(i)
            i = self.parent[i]
        return chain[::-1]

    def names(self, indices: list[int]) -> list[str]:
        return [self.ops[i]["name"] for i in indices]


class HostCalls:
    """One host thread's runtime and driver calls, sorted by start, to find those overlapping a window."""

    def __init__(self, calls: list[dict]):
        self.calls = sorted(calls, key=lambda e: e["ts"])
        self.starts = [c["ts"] for c in self.calls]
        self.longest = max((c["dur"] for c in self.calls), default=0)

    def overlapping(self, start: int, end: int) -> list[dict]:
        first = bisect.bisect_left(self.starts, start - self.longest)
        last = bisect.bisect_left(self.starts, end)
        return [c for c in self.calls[first:last] if c["ts"] + c["dur"] > start]


def device_gaps(events: list[dict], min_us: float = GAP_MIN_US) -> dict:
    """The idle gaps (>= min_us) between one GPU's work in load_trace's events (times in ns, reported in us).
    Each: its length, the work that ended before it and the kernel after it; when that kernel was queued (its
    launch call returned, or the kernel began if earlier: host-bound when after the GPU went idle); the host ops
    running at that launch call, outermost first; the deepest of them already running when the GPU went idle (the
    host work the GPU waited for); and the thread's other calls in the gap (a synchronising one is a wait)."""
    device = sorted((e for e in events if e.get("cat") in DEVICE_EVENTS), key=lambda e: e["ts"])
    if not device:
        raise SystemExit("the trace holds no device work (kernels, copies): was it profiled on a GPU with "
                         "ProfilerActivity.CUDA?")
    if len({e["pid"] for e in device}) > 1:
        raise SystemExit("the trace holds the work of several GPUs: profile one (its gaps are per GPU)")
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") in LAUNCH_EVENTS and "correlation" in e["args"]}
    ops_of: dict[tuple, list[dict]] = {}
    calls_of: dict[tuple, list[dict]] = {}
    for e in events:
        if e.get("cat") in HOST_OPS:
            ops_of.setdefault((e["pid"], e["tid"]), []).append(e)
        elif e.get("cat") in LAUNCH_EVENTS:
            calls_of.setdefault((e["pid"], e["tid"]), []).append(e)
    threads = {key: HostThread(ops) for key, ops in ops_of.items()}
    calls = {key: HostCalls(found) for key, found in calls_of.items()}
    no_ops, no_calls = HostThread([]), HostCalls([])
    gaps, busy, end, last = [], 0, device[0]["ts"], None  # last: the work that ends at `end`
    for work in device:
        gap = work["ts"] - end
        if last is not None and gap >= min_us * 1000:
            row = dict(us=gap / 1000, before=last["name"], after=work["name"], host_bound=None, queued_into_us=None,
                       ops=[], waited_in=None, calls=Counter())
            launch = launches.get(work["args"].get("correlation"))
            if launch is not None:
                key = (launch["pid"], launch["tid"])
                thread = threads.get(key, no_ops)
                queued = min(launch["ts"] + launch["dur"], work["ts"])
                at_launch = thread.at(launch["ts"])
                running = set(thread.at(end))  # ops the host was inside when the GPU went idle ...
                waited_in = [i for i in at_launch if i in running]  # ... and still inside at the launch
                row.update(host_bound=queued > end, queued_into_us=(queued - end) / 1000,
                           ops=thread.names(at_launch),
                           waited_in=thread.names(waited_in[-1:])[0] if waited_in else None,
                           calls=Counter(c["name"] for c in calls.get(key, no_calls).overlapping(end, queued)
                                         if c is not launch))
            gaps.append(row)
        busy += max(0, work["ts"] + work["dur"] - max(end, work["ts"]))
        if work["ts"] + work["dur"] >= end:
            end, last = work["ts"] + work["dur"], work
    host_start = min((t.starts[0] for t in threads.values() if t.starts), default=device[0]["ts"])
    first = launches.get(device[0]["args"].get("correlation"))
    lead_in_ops = None  # the first kernel's launch not in the trace
    if first is not None:
        thread = threads.get((first["pid"], first["tid"]), no_ops)
        lead_in_ops = [(op["name"], (min(thread.end(i), first["ts"]) - op["ts"]) / 1000)
                       for i, op in enumerate(thread.ops) if thread.parent[i] is None and op["ts"] < first["ts"]]
    return dict(span_us=(end - device[0]["ts"]) / 1000, busy_us=busy / 1000,
                lead_in_us=(device[0]["ts"] - host_start) / 1000, lead_in_ops=lead_in_ops,
                gaps=sorted(gaps, key=lambda g: -g["us"]))


def gaps_text(found: dict, top: int = 25, min_us: float = GAP_MIN_US) -> str:
    gaps = found["gaps"]
    idle = found["span_us"] - found["busy_us"]
    total = lambda rows: sum(g["us"] for g in rows) / 1000  # noqa: E731
    bound = [g for g in gaps if g["host_bound"]]
    lead_in = found["lead_in_ops"]
    shown = ("(the first kernel's launch is not in the trace)" if lead_in is None else
             ", ".join(f"{name[:40]} {us:.0f}" for name, us in lead_in[:8]) + (f", ... {len(lead_in) - 8} more"
                                                                                if len(lead_in) > 8 else ""))
    lines = [f"device span {found['span_us'] / 1000:.2f} ms, busy {found['busy_us'] / 1000:.2f} ms, idle "
             f"{idle / 1000:.2f} ms; before the first kernel {found['lead_in_us'] / 1000:.2f} ms of host time "
             "(all under the profiler, which adds host time to every op)",
             f"top-level host ops before the first kernel's launch (us until it): {shown or '(none)'}",
             f"{len(gaps)} gaps >= {min_us:g} us: {total(gaps):.2f} ms; host-bound (the next kernel queued after "
             f"the GPU went idle) {total(bound):.2f} ms; queued before it (the GPU waited on a stream, event or "
             f"collective) {total(g for g in gaps if g['host_bound'] is False):.2f} ms; launch not in the trace "
             f"{total(g for g in gaps if g['host_bound'] is None):.2f} ms",
             "\nhost-bound idle by the host op it was spent in (the deepest running from idle to the late launch):"]
    by_op = Counter()
    for g in bound:
        by_op[g["waited_in"] or "(no host op spans the gap)"] += g["us"]
    lines += [f"  {us / 1000:8.3f} ms  {name[:100]}" for name, us in by_op.most_common(12)]
    lines.append(f"\nlongest {top} gaps: us, when the next kernel was queued (us after the GPU went idle), the work "
                 "around the gap; the host ops at its launch (outermost first) and the thread's other calls in the gap")
    for g in gaps[:top]:
        into = "?" if g["queued_into_us"] is None else f"{g['queued_into_us']:+.0f}"
        lines.append(f"  {g['us']:9.1f} {into:>8s}  {g['before'][:40]} -> {g['after'][:40]}")
        chain = ("... > " if len(g["ops"]) > 4 else "") + " > ".join(op[:40] for op in g["ops"][-4:])
        called = ", ".join(f"{name} x{n}" for name, n in g["calls"].most_common(4))
        if chain or called:
            lines.append(f"            {chain}" + (f"  | calls: {called}" if called else ""))
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# Roofline of Inductor's kernels
# -----------------------------------------------------------------------------

SMALL_KERNEL_BYTES = 1e6  # moved in ~0.3 us at ~3 TB/s, far under a launch: such a kernel's time is its launch


def inductor_launches(events: list[dict]) -> list[dict]:
    """Each launch of an Inductor kernel (named triton_...) in a trace of load_trace's: {"name", "file", "ms",
    "gb", "op"}. Its time is its GPU event's. Its kernel's file and bytes come from the host op that launched it,
    the one the GPU event's External id names: Inductor wraps each launch in one, with its kernel_num_gb where the
    graph was compiled with benchmark_kernel=True, in the trace's args where the profile recorded them. That count
    is Inductor's estimate at compile: each buffer once, at the sizes it compiled for. op is whether the launching
    op was found; gb is None where it carries no count (Inductor writes none for foreach kernels)."""
    ops = {}
    for e in events:  # the op with Inductor's arguments, should another share its id
        if e.get("cat") == "cpu_op" and (e["args"].get("External id") not in ops or "kernel_file" in e["args"]):
            ops[e["args"].get("External id")] = e["args"]
    launches = []
    for e in events:
        if e.get("cat") == "kernel" and e["name"].startswith("triton_"):
            op_id = e["args"].get("External id")
            op = ops.get(op_id, {})
            launches.append({"name": e["name"], "file": op.get("kernel_file"), "ms": e["dur"] / 1e6,
                             "gb": op.get("kernel_num_gb"), "op": op_id in ops})
    if not any(r["gb"] is not None for r in launches):
        raise SystemExit("no Inductor launch in the trace carries its bytes: profile with --trace-args "
                         "--inductor benchmark_kernel=True (docs/runs/2026-12-07i/next/roofline.sh)")
    return launches


def roofline_text(launches: list[dict], copy_gb_per_s: float, top: int = 15) -> str:
    """Inductor's kernels in one profiled step against this GPU's copy bandwidth: the time each launch would
    take moving its bytes at that rate (its floor, for a memory-bound kernel) and the excess of its time over
    it, the most a faster kernel for the same bytes could save. A kernel is its name and its file (graphs
    compiled apart may reuse a name for other code). Launches under their floor are counted apart: their count
    overstates their bytes, or their data came from L2."""
    share = lambda ms, gb: 100 * gb / ms * 1e3 / copy_gb_per_s if ms else 0.0  # noqa: E731
    kernels, left_out, under = {}, {"no byte count": [], "no launching op found": []}, []
    for r in launches:
        if r["gb"] is None:
            left_out["no byte count" if r["op"] else "no launching op found"].append(r)
            continue
        k = kernels.setdefault((r["name"], r["file"] or "?"), dict(calls=0, ms=0.0, gb=0.0, excess=0.0, small=True))
        k["calls"] += 1
        k["ms"] += r["ms"]
        k["gb"] += r["gb"]
        over = r["ms"] - r["gb"] / copy_gb_per_s * 1e3  # the launch's time over its floor
        k["excess"] += max(0.0, over)
        k["small"] &= r["gb"] * 1e9 < SMALL_KERNEL_BYTES
        if over < 0:
            under.append(r)
    total = {key: sum(k[key] for k in kernels.values()) for key in ("calls", "ms", "gb", "excess")}
    small = sum(k["excess"] for k in kernels.values() if k["small"])
    step_ms = sum(r["ms"] for r in launches)
    lines = [f"copy bandwidth {copy_gb_per_s:.0f} GB/s; Inductor's kernels in the profiled step: "
             f"{len(launches)} launches, {step_ms:.3f} ms",
             f"with their bytes: {total['calls']} launches of {len(kernels)} kernels, {total['ms']:.3f} ms "
             f"({100 * total['ms'] / step_ms:.1f}% of the time), {total['gb']:.3f} GB, "
             f"{share(total['ms'], total['gb']):.1f}% of the copy bandwidth; excess over each launch's floor "
             f"{total['excess']:.3f} ms ({100 * total['excess'] / total['ms'] if total['ms'] else 0:.1f}% of "
             f"their time), of which {small:.3f} ms in kernels moving under {SMALL_KERNEL_BYTES / 1e6:g} MB a "
             "launch (launch-bound: only fusing them away saves it)",
             f"under their floor: {len(under)} launches, {sum(r['ms'] for r in under):.3f} ms (their count "
             "overstates their bytes, or their data came from L2)"]
    for why, rows in left_out.items():
        if rows:
            names = sorted({r["name"] for r in rows})
            lines.append(f"left out, {why}: {len(rows)} launches, {sum(r['ms'] for r in rows):.3f} ms "
                         f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    lines.append(f"\ntop {top} kernels by excess: launches, ms, GB, share of the copy bandwidth, excess ms, "
                 "(its file) kernel")
    for (name, file), k in sorted(kernels.items(), key=lambda kv: -kv[1]["excess"])[:top]:
        lines.append(f"  {k['calls']:4d} {k['ms']:8.3f} {k['gb']:7.3f} {share(k['ms'], k['gb']):5.1f}% "
                     f"{k['excess']:7.3f}  ({Path(file).stem[:12]}) {name}")
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# Comparison
# -----------------------------------------------------------------------------

def by_class(rows) -> dict:
    out: dict[str, list] = {}
    for r in rows:
        acc = out.setdefault(r["cls"], [0.0, 0])
        acc[0] += r["us"] / 1000
        acc[1] += r["count"]
    return out


def compare_text(ours: dict, record: dict, top: int = 12) -> str:
    lines = [f"ours:   {ours['info']}", f"record: {record['info']}", f"device: {ours['device']} / {record['device']}"]
    for state in ("off", "on"):
        o, r = ours["states"].get(state), record["states"].get(state)
        if not o or not r:
            continue
        lines.append(f"\n== recurrence {state}: one optimizer step (786,432 tokens) ==")
        lines.append(f"{'':34s}{'ours':>11s}{'record':>11s}{'ours-rec':>11s}{'ours/rec':>9s}")
        for label, key in (("wall ms/step", "ms"), ("  forward+backward ms", "fwd_bwd_ms"),
                           ("  optimizer ms (clip + Muon + Adam)", "optimizer_ms"),
                           ("device busy ms (profiled step)", "device_ms"), ("kernel launches", "launches"),
                           ("MFU %", "mfu"), ("peak memory GiB (profiled step)", "peak_gib")):
            a, b = o[key] * (100 if key == "mfu" else 1), r[key] * (100 if key == "mfu" else 1)
            lines.append(f"{label:34s}{a:11.1f}{b:11.1f}{a - b:+11.1f}{a / b if b else float('nan'):9.3f}")
        lines.append(f"idle (wall - busy) ms: ours {o['ms'] - o['device_ms']:.1f}, record {r['ms'] - r['device_ms']:.1f}")
        co, cr = by_class(o["kernels"]), by_class(r["kernels"])
        lines.append(f"\n{'device ms by kernel class':40s}{'ours':>9s}{'record':>9s}{'ours-rec':>10s}"
                     f"{'launches':>16s}")
        for cls in sorted(set(co) | set(cr), key=lambda c: -(co.get(c, [0])[0] - cr.get(c, [0])[0])):
            a, b = co.get(cls, [0.0, 0]), cr.get(cls, [0.0, 0])
            lines.append(f"{cls:40s}{a[0]:9.1f}{b[0]:9.1f}{a[0] - b[0]:+10.1f}{a[1]:8d}/{b[1]:<7d}")
        for who, data in (("ours", o), ("record", r)):
            lines += top_kernel_lines(who, data, top)
    return "\n".join(lines)


def top_kernel_lines(who: str, state: dict, top: int) -> list[str]:
    lines = [f"\ntop {top} kernels, {who} (self device ms, calls, class)"]
    for row in state["kernels"][:top]:
        lines.append(f"  {row['us'] / 1000:8.2f} {row['count']:6d}  {row['cls'][:24]:24s} {row['name'][:90]}")
    return lines


def report_text(result: dict, top: int = 20) -> str:
    """One script's profile alone: device time by kernel class and its top kernels, per recurrence state."""
    lines = [f"{result['which']}: {result['info']} on {result['device']}"]
    for state, data in result["states"].items():
        busy = data["device_ms"]
        lines.append(f"\n== recurrence {state}: {data['ms']:.1f} ms/step, device busy {busy:.1f} ms in "
                     f"{data['launches']} launches, MFU {100 * data['mfu']:.1f}% ==")
        for cls, (ms, count) in sorted(by_class(data["kernels"]).items(), key=lambda kv: -kv[1][0]):
            lines.append(f"  {cls:40s}{ms:9.2f} ms {100 * ms / busy if busy else 0:5.1f}% {count:7d} launches")
        lines += top_kernel_lines(result["which"], data, top)
    return "\n".join(lines)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "gaps":
        gaps_parser = argparse.ArgumentParser(prog="profile_vs_reference.py gaps",
                                              description="the device's idle gaps in a trace written by --trace")
        gaps_parser.add_argument("trace", type=Path, help="OUT/WHICH_STATE_trace.json.gz")
        gaps_parser.add_argument("--top", type=int, default=25, help="longest gaps listed one by one")
        gaps_parser.add_argument("--min-us", type=float, default=GAP_MIN_US, help="shorter idle is not a gap")
        gaps_args = gaps_parser.parse_args(argv[1:])
        if not gaps_args.trace.is_file():
            gaps_parser.error(f"{gaps_args.trace} is not a file: write a trace with --trace "
                              "(OUT/WHICH_STATE_trace.json.gz)")
        found = device_gaps(load_trace(gaps_args.trace), gaps_args.min_us)
        print(gaps_text(found, gaps_args.top, gaps_args.min_us))
        return 0
    if argv and argv[0] == "roofline":
        roof_parser = argparse.ArgumentParser(prog="profile_vs_reference.py roofline",
                                              description="Inductor's kernels against the copy bandwidth")
        roof_parser.add_argument("trace", type=Path, help="OUT/ours_off_trace.json.gz of a profile run with "
                                 "--trace-args --inductor benchmark_kernel=True")
        roof_parser.add_argument("copy", type=Path, help="roofline.sh's copy.json (its gb_per_s)")
        roof_parser.add_argument("--top", type=int, default=15)
        roof_args = roof_parser.parse_args(argv[1:])
        for path in (roof_args.trace, roof_args.copy):
            if not path.is_file():
                roof_parser.error(f"{path} is not a file: docs/runs/2026-12-07i/next/roofline.sh writes them")
        copy_rate = json.loads(roof_args.copy.read_text())["gb_per_s"]
        launches = inductor_launches(load_trace(roof_args.trace))
        print(roofline_text(launches, copy_rate, roof_args.top))
        return 0
    if argv and argv[0] == "compare":
        ours, record = (json.loads(Path(p).read_text()) for p in argv[1:3])
        print(compare_text(ours, record))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, help="the record's train_gpt.py (not needed with --which ours)")
    parser.add_argument("--data-dir", type=Path, required=True, help="the record's DATA_DIR layout")
    parser.add_argument("--out", type=Path, default=Path("prof_out"))
    parser.add_argument("--which", choices=("both", "ours", "record"), default="both")
    parser.add_argument("--warmup", type=int, default=3, help="steps per state before timing (compiles)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per state")
    parser.add_argument("--batch-steps", type=int, default=4, help="steps' worth of batches kept on the GPU")
    parser.add_argument("--ours-env", action="append", default=[], help="KEY=VALUE for ours (e.g. FUSED_MLP_ENABLED=0)")
    parser.add_argument("--ref-env", action="append", default=[], help="KEY=VALUE set before importing the record")
    parser.add_argument("--inductor", action="append", default=[],
                        help="KEY=VALUE: an Inductor setting for ours' compiles (e.g. combo_kernels=True)")
    parser.add_argument("--static-cu-seqlens", action="store_true",
                        help="ours: pad every batch's cu_seqlens with empty pieces to the longest's length")
    parser.add_argument("--cudagraphs", action="store_true",
                        help="ours: the model's graph as CUDA graphs, batches padded as --static-cu-seqlens "
                        "(with --micro-batches 1)")
    parser.add_argument("--train-gpt", type=Path, help="another copy of train_gpt.py as ours (kernels.py beside it)")
    parser.add_argument("--micro-batches", type=int, default=ONE_GPU_ACCUM,
                        help="ours: micro-batches per step (1: an 8-GPU rank's share of the step)")
    parser.add_argument("--no-looping", dest="looping", action="store_false", help="recurrence off only")
    parser.add_argument("--trace", action="store_true",
                        help="also write each profiled step's Chrome trace: OUT/WHICH_STATE_trace.json.gz")
    parser.add_argument("--trace-args", action="store_true",
                        help="--trace with each op's arguments recorded: Inductor's byte counts, for roofline")
    parser.add_argument("--no-report", dest="report", action="store_false", help=argparse.SUPPRESS)  # `both`
    args = parser.parse_args(argv)
    if args.which != "ours" and args.reference is None:
        parser.error("--reference (the record's train_gpt.py) is needed to profile the record; "
                     "or profile ours alone with --which ours")
    micro = args.micro_batches
    micro_ok = 1 <= micro <= ONE_GPU_ACCUM and (micro == ONE_GPU_ACCUM or args.which == "ours")
    if not micro_ok:
        parser.error(f"--micro-batches is 1 to {ONE_GPU_ACCUM}, other than {ONE_GPU_ACCUM} with --which ours only "
                     "(the record's step is profiled whole)")
    try:
        inductor = inductor_settings(args.inductor)
    except ValueError as error:
        parser.error(str(error))
    if (args.static_cu_seqlens or args.cudagraphs) and args.which != "ours":
        parser.error("--static-cu-seqlens and --cudagraphs change ours' batches and compile only: use --which ours")
    if args.cudagraphs and micro != 1:
        parser.error("--cudagraphs needs --micro-batches 1: a replay may overwrite the gradients of the micro-batch "
                     "before it")
    if args.cudagraphs and "triton.cudagraphs" in inductor:
        parser.error("--cudagraphs graphs the model only; --inductor triton.cudagraphs would graph the optimizer's "
                     "compiles too, whose outputs Muon reads after a later replay")
    args.data_dir = args.data_dir.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.which == "both":  # each script in its own process, one after the other on the same GPU
        for which in ("ours", "record"):
            cmd = [sys.executable, __file__, *argv, "--which", which, "--no-report"]
            code = subprocess.call(cmd)
            if code != 0:
                print(f"{which}: profiling failed with exit code {code}", flush=True)
        paths = [args.out / f"{w}.json" for w in ("ours", "record")]
        if all(p.exists() for p in paths):
            print(compare_text(*(json.loads(p.read_text()) for p in paths)))
            return 0
        return 1
    result = measure(args)
    (args.out / f"{args.which}.json").write_text(json.dumps(result))
    if args.report:  # one script asked for, not a step of `both` (whose comparison follows)
        print(report_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
