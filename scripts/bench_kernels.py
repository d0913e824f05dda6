"""Time golfrun's Triton kernels against eager PyTorch and torch.compile of the same maths (CUDA).

    python scripts/bench_kernels.py                 # the record's shapes: 98,304 tokens x vocab 8192; MLP 512->2048
    python scripts/bench_kernels.py --tokens 16384  # smaller
    python scripts/bench_kernels.py --reference ../shared/reference/record_1886_train_gpt.py  # + the record's MLP

Prints, per kernel and implementation: median ms of forward+backward, achieved HBM GB/s for the bytes the
fused kernel must move (its compulsory traffic), and the speed ratio to torch.compile. Also checks that
every implementation gives the same loss/gradients (relative error vs the fused kernel).
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import kernels  # noqa: E402


def bench(fn, warmup_ms=200, rep_ms=1000) -> float:
    from triton.testing import do_bench
    return do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


def rel_err(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def ce_case(tokens: int, vocab: int, softcap: float):
    logits = (torch.randn(tokens, vocab, device="cuda") * 4).bfloat16().requires_grad_(True)
    targets = torch.randint(0, vocab, (tokens,), device="cuda")
    compiled = torch.compile(kernels.softcap_cross_entropy_reference)
    impls = dict(fused=kernels.softcap_cross_entropy, eager=kernels.softcap_cross_entropy_reference,
                 compiled=compiled)
    results, grads = {}, {}
    for name, fn in impls.items():
        def step():
            logits.grad = None
            fn(logits, targets, softcap).backward()
        step()
        grads[name] = logits.grad.clone()
        results[name] = bench(step)
    # compulsory traffic: forward reads the logits; backward reads them again and writes the gradient
    moved = 3 * tokens * vocab * logits.element_size()
    return results, moved, {k: rel_err(g, grads["fused"]) for k, g in grads.items()}


def load_record_mlp(path: str):
    """The record's fused MLP autograd function, from its unmodified script (the FA3 shim beside it)."""
    sys.path.insert(0, str(Path(path).resolve().parent))
    spec = importlib.util.spec_from_file_location("record_train_gpt", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.FusedLeakyReLUSquareMLP


def mlp_case(tokens: int, dim: int, hidden: int, record=None):
    x = torch.randn(tokens, dim, device="cuda").bfloat16().requires_grad_(True)
    w_up = (torch.randn(hidden, dim, device="cuda") / dim ** 0.5).bfloat16().requires_grad_(True)
    w_down = (torch.randn(dim, hidden, device="cuda") / hidden ** 0.5).bfloat16().requires_grad_(True)
    grad = torch.randn(tokens, dim, device="cuda").bfloat16()
    compiled = torch.compile(kernels.fused_mlp_reference)
    impls = dict(fused=kernels.fused_mlp, eager=kernels.fused_mlp_reference, compiled=compiled)
    if record is not None:
        impls["record"] = record
    results, grads = {}, {}
    for name, fn in impls.items():
        def step():
            for t in (x, w_up, w_down):
                t.grad = None
            fn(x, w_up, w_down).backward(grad)
        step()
        grads[name] = x.grad.clone()
        results[name] = bench(step)
        with torch.no_grad():
            results[name + " (fwd only)"] = bench(lambda: fn(x, w_up, w_down))
    flops = 6 * 2 * tokens * dim * hidden
    return results, {k: rel_err(g, grads["fused"]) for k, g in grads.items()}, flops


def ce_table(args):
    default_warps = kernels.CE_NUM_WARPS
    for warps in sorted({4, 8, 16} - {default_warps}) + [default_warps]:  # the default last: the table's
        kernels.CE_NUM_WARPS = warps
        ce, ce_bytes, ce_err = ce_case(args.tokens, args.vocab, args.softcap)
        print(f"softcap CE fused, num_warps {warps:2d}: {ce['fused']:.3f} ms")
    print(f"\nsoftcap CE fwd+bwd, {args.tokens} x {args.vocab} bf16 (compulsory bytes {ce_bytes / 1e9:.2f} GB)")
    print(f"{'impl':10s} {'ms':>8s} {'GB/s':>8s} {'vs compiled':>12s} {'grad rel err':>13s}")
    for name, ms in ce.items():
        print(f"{name:10s} {ms:8.3f} {ce_bytes / ms / 1e6:8.0f} {ce['compiled'] / ms:11.2f}x {ce_err[name]:13.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=98_304, help="rows (tokens per rank per micro-batch)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--softcap", type=float, default=30.0)
    parser.add_argument("--reference", help="the record's train_gpt.py: also time its fused MLP")
    parser.add_argument("--mlp-only", action="store_true", help="skip the cross-entropy cases")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_kernels.py needs a CUDA GPU")
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    if not args.mlp_only:
        ce_table(args)
    record = load_record_mlp(args.reference) if args.reference else None
    mlp, mlp_err, flops = mlp_case(args.tokens, args.dim, args.hidden, record)
    print(f"\nfused MLP fwd+bwd, {args.tokens} x {args.dim} -> {args.hidden} bf16")
    print(f"{'impl':20s} {'ms':>8s} {'TFLOP/s':>8s} {'vs compiled':>12s} {'dx rel err':>13s}")
    for name in impls_order(mlp):
        ms = mlp[name]
        ref = mlp["compiled (fwd only)"] if "fwd" in name else mlp["compiled"]
        work = flops / 3 if "fwd" in name else flops
        err = f"{mlp_err[name]:13.2e}" if name in mlp_err else ""
        print(f"{name:20s} {ms:8.3f} {work / ms / 1e9:8.0f} {ref / ms:11.2f}x {err}")
    for key, config in kernels._mm_leaky_sq_autotuned.cache.items():  # one tuning per (M bucket, N, K, pass)
        print(f"fused kernel tuned for key {key}: {config}")


def impls_order(results):
    return sorted(results, key=lambda n: ("fwd" in n, n))


if __name__ == "__main__":
    main()
