"""Time golfrun's Triton kernels against eager PyTorch and torch.compile of the same maths (CUDA).

    python scripts/bench_kernels.py                 # the record's shapes: 98,304 tokens x vocab 8192; MLP 512->2048
    python scripts/bench_kernels.py --tokens 16384  # smaller
    python scripts/bench_kernels.py --reference ../shared/reference/record_1886_train_gpt.py  # + the record's code
    python scripts/bench_kernels.py --cases mlp,qk  # some of the cases: ce, mlp, qk

Prints, per kernel and implementation: median ms of forward+backward, achieved HBM GB/s for the bytes the
fused kernel must move (its compulsory traffic), and the speed ratio to torch.compile. Also checks that
every implementation gives the same loss/gradients (relative error vs the fused kernel). With --reference the
MLP case also times the record's fused MLP, and its kernel alone beside ours (each pass on its own).

The qk case times the attention's input side under torch.compile, forward and backward: projections, the
per-head RMSNorm, the query gain and the partial RoPE, on packed documents of FineWeb-like lengths. It runs
train_gpt's Attention.qkv as the model does (RoPE tables gathered before the compiled graph), the same with
the gather inside the graph (as the model did before 2026-11-26), and, with --reference, the record's
formulation (its Rotary and apply_rotary_emb: RoPE on flat positions, the gain after the rotation). Beside it,
"fused kernel" is the same with FUSED_QK_ENABLED's Triton kernel for the norm, gain and RoPE; and a second table
times that part alone, the kernel against torch.compile of its plain maths, in GB/s of the bytes it must move
(q and k read, their outputs written; the backward reads q, k and both gradients, writes two).
"""

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernels  # noqa: E402
import kernels_reference  # noqa: E402
import record_oracle as ro  # noqa: E402


CASES = ("ce", "mlp", "qk")


def bench(fn, warmup_ms=200, rep_ms=1000) -> float:
    from triton.testing import do_bench
    return do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")


def rel_err(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def ce_case(tokens: int, vocab: int, softcap: float):
    logits = (torch.randn(tokens, vocab, device="cuda") * 4).bfloat16().requires_grad_(True)
    targets = torch.randint(0, vocab, (tokens,), device="cuda")
    compiled = torch.compile(kernels_reference.softcap_cross_entropy)
    impls = dict(fused=kernels.softcap_cross_entropy, eager=kernels_reference.softcap_cross_entropy,
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


def mlp_inputs(tokens: int, dim: int, hidden: int) -> tuple[torch.Tensor, ...]:
    """x (tokens, dim), w_up (hidden, dim), w_down (dim, hidden), the output gradient (tokens, dim); bf16."""
    x = torch.randn(tokens, dim, device="cuda").bfloat16()
    w_up = (torch.randn(hidden, dim, device="cuda") / dim ** 0.5).bfloat16()
    w_down = (torch.randn(dim, hidden, device="cuda") / hidden ** 0.5).bfloat16()
    return x, w_up, w_down, torch.randn(tokens, dim, device="cuda").bfloat16()


def mlp_kernel_times(tokens: int, dim: int, hidden: int, record) -> dict:
    """Each fused up-projection kernel on its own, forward and backward pass (no cuBLAS around it)."""
    x, w_up, w_down, grad = mlp_inputs(tokens, dim, hidden)
    w_down_t = w_down.t().contiguous()  # the backward's B, as both backwards pass it
    pre, out = (torch.empty(tokens, hidden, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    times = dict(ours_fwd=bench(lambda: kernels._launch_mm_leaky_sq(x, w_up, pre, out, backward=False, slope=0.5)),
                 ours_bwd=bench(lambda: kernels._launch_mm_leaky_sq(grad, w_down_t, pre, out, backward=True, slope=0.5)))
    if record is not None:
        times["record_fwd"] = bench(lambda: record.linear_leaky_relu_square(x, w_up))
        times["record_bwd"] = bench(lambda: record.linear_leaky_relu_square(grad, w_down_t, aux=pre))
    return times


def mlp_case(tokens: int, dim: int, hidden: int, record=None):
    x, w_up, w_down, grad = mlp_inputs(tokens, dim, hidden)
    for t in (x, w_up, w_down):
        t.requires_grad_(True)
    compiled = torch.compile(kernels_reference.fused_mlp)
    impls = dict(fused=kernels.fused_mlp, eager=kernels_reference.fused_mlp, compiled=compiled)
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


def packed_positions(tokens: int, max_len: int = 2048) -> torch.Tensor:
    """In-document positions of a packed micro-batch: document lengths drawn log-uniform in [16, 8192],
    cut into pieces of at most max_len (FineWeb's median document is ~700 tokens)."""
    gen = torch.Generator().manual_seed(0)
    pieces, left = [], tokens
    while left > 0:
        length = min(left, int(16 * 512 ** torch.rand((), generator=gen).item()))
        left -= length
        while length > 0:
            pieces.append(torch.arange(min(length, max_len)))
            length -= max_len
    return torch.cat(pieces).cuda()


def qk_case(tokens: int, h, record=None) -> tuple[dict, dict]:
    """The attention's input side, compiled, forward + backward: see the module docstring."""
    import train_gpt as tg
    attn = tg.Attention(h, use_xsa=False).cuda()
    x = torch.randn(tokens, h.model_dim, device="cuda").bfloat16().requires_grad_(True)
    positions = packed_positions(tokens, h.train_seq_len)
    rotary = tg.Rotary(h.rope_dims, h.rope_base, h.train_seq_len).cuda()
    tables = rotary(positions)
    fused = copy.deepcopy(attn)
    fused.use_fused_qk = True
    impls = dict(ours=lambda: attn.qkv(x, tables), tables_in_graph=lambda: attn.qkv(x, rotary(positions)),
                 fused_kernel=lambda: fused.qkv(x, tables))
    if record is not None:
        rec_rotary = record.Rotary(h.head_dim, base=h.rope_base, train_seq_len=h.train_seq_len,
                                   rope_dims=h.rope_dims, yarn=False).cuda()

        def record_qkv():
            q = F.linear(x, attn.c_q.weight.to(x.dtype)).view(tokens, h.num_heads, h.head_dim)
            k = F.linear(x, attn.c_k.weight.to(x.dtype)).view(tokens, h.num_kv_heads, h.head_dim)
            v = F.linear(x, attn.c_v.weight.to(x.dtype)).view(tokens, h.num_kv_heads, h.head_dim)
            q, k = F.rms_norm(q, (h.head_dim,)), F.rms_norm(k, (h.head_dim,))
            cos, sin = rec_rotary(tokens, x.device, q.dtype)
            q = record.apply_rotary_emb(q[None], cos, sin, h.rope_dims)[0]
            k = record.apply_rotary_emb(k[None], cos, sin, h.rope_dims)[0]
            return q * attn.q_gain.to(q.dtype)[:, None], k, v
        impls["record"] = record_qkv
    grads = [torch.randn(tokens, heads, h.head_dim, device="cuda").bfloat16()
             for heads in (h.num_heads, h.num_kv_heads, h.num_kv_heads)]
    results, first = {}, {}
    for name, fn in impls.items():
        compiled = torch.compile(fn)

        def step():
            x.grad = None
            torch.autograd.backward(compiled(), grads)
        step()
        first[name] = x.grad.clone()
        results[name] = bench(step)
    # the record rotates by flat positions, other angles than ours: its gradients are not comparable
    errors = {name: rel_err(g, first["ours"]) for name, g in first.items() if name != "record"}
    return results, errors


QK_TILES = [(2, 4), (4, 4), (4, 8), (8, 8), (16, 8)]  # (tokens a program, warps): none spilled in Triton 3.9's ptxas


def compiled_variants(fn) -> str:
    """Registers and spills of the variants a Triton kernel compiled on this GPU since its cache was cleared
    (forward then backward), as "regs/spilled bytes"; "n/a" where this Triton keeps its cache otherwise."""
    try:
        variants = [kernel for entry in fn.device_caches.values() for kernel in entry[0].values()]
        for kernel in variants:
            kernel._init_handles()
        return " ".join(f"{kernel.n_regs}/{kernel.n_spills}" for kernel in variants)
    except (AttributeError, IndexError, TypeError) as error:
        return f"n/a ({error})"


def qk_norm_case(tokens: int, h) -> tuple[dict, dict, dict, int]:
    """The norm, gain and RoPE alone, forward + backward: FUSED_QK_ENABLED's kernel and torch.compile of
    kernels_reference's maths on the same q, k (the gradients of q, k and the gain compared)."""
    import train_gpt as tg
    q, k = (torch.randn(tokens, heads, h.head_dim, device="cuda").bfloat16().requires_grad_(True)
            for heads in (h.num_heads, h.num_kv_heads))
    gain = torch.full((h.num_heads,), h.qk_gain_init, device="cuda").bfloat16().requires_grad_(True)
    tables = tg.Rotary(h.rope_dims, h.rope_base, h.train_seq_len).cuda()(packed_positions(tokens, h.train_seq_len))
    grads = [torch.randn_like(t) for t in (q, k)]
    default = kernels.QK_BLOCK_TOKENS, kernels.QK_NUM_WARPS
    impls = {f"kernel {t} tok, {w} warps{' *' if (t, w) == default else ''}": (t, w) for t, w in QK_TILES}
    impls["compiled"] = torch.compile(kernels_reference.qk_norm_rope)
    results, first, registers = {}, {}, {}
    for name, fn in impls.items():
        if isinstance(fn, tuple):
            kernels.QK_BLOCK_TOKENS, kernels.QK_NUM_WARPS = fn
            fn = kernels.qk_norm_rope
            # this tile's variants only (Triton's disk cache stays); the interpreter keeps none
            getattr(kernels._qk_norm_rope_kernel, "device_caches", {}).clear()

        def step():
            q.grad = k.grad = gain.grad = None
            torch.autograd.backward(fn(q, k, tables, gain), grads)
        step()
        first[name] = [t.grad.clone() for t in (q, k, gain)]
        results[name] = bench(step)
        if fn is kernels.qk_norm_rope:
            registers[name] = compiled_variants(kernels._qk_norm_rope_kernel)
    kernels.QK_BLOCK_TOKENS, kernels.QK_NUM_WARPS = default
    moved = 5 * (q.numel() + k.numel()) * q.element_size()  # q and k moved twice forward, 3 times backward
    errors = {name: [rel_err(a, b) for a, b in zip(g, first["compiled"])] for name, g in first.items()}
    return results, errors, registers, moved


def qk_table(args, record):
    import train_gpt as tg
    h = tg.load_hyperparameters({})
    results, errors = qk_case(args.tokens, h, record)
    print(f"\nattention input side (q/k/v projections, per-head RMSNorm, gain, RoPE) fwd+bwd, compiled, "
          f"{args.tokens} tokens, {h.num_heads}/{h.num_kv_heads} heads x {h.head_dim}, RoPE on {h.rope_dims}")
    print(f"{'impl':22s} {'ms':>8s} {'vs ours':>8s} {'dx rel err':>11s}")
    for name, ms in results.items():
        err = f"{errors[name]:11.2e}" if name in errors else f"{'n/a':>11s}"
        print(f"{name:22s} {ms:8.3f} {results['ours'] / ms:7.2f}x {err}")
    results, errors, registers, moved = qk_norm_case(args.tokens, h)
    print(f"\nthe norm, gain and RoPE alone, fwd+bwd ({moved / 1e9:.2f} GB to move; * the shipped tile; the kernel "
          "launched eagerly, the reference compiled)")
    print(f"{'impl':24s} {'ms':>8s} {'GB/s':>8s} {'vs compiled':>12s} {'dq, dk, dgain rel err':>28s}  regs/spills")
    for name, ms in results.items():
        err = " ".join(f"{e:9.2e}" for e in errors[name])
        print(f"{name:24s} {ms:8.3f} {moved / ms / 1e6:8.0f} {results['compiled'] / ms:11.2f}x {err:>28s}  "
              f"{registers.get(name, '')}")


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


def mlp_table(args, record):
    mlp, mlp_err, flops = mlp_case(args.tokens, args.dim, args.hidden,
                                   record.FusedLeakyReLUSquareMLP if record else None)
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
    times = mlp_kernel_times(args.tokens, args.dim, args.hidden, record)
    print("the up-projection kernel alone, ms: " + ", ".join(f"{k} {v:.3f}" for k, v in times.items()))


def impls_order(results):
    return sorted(results, key=lambda n: ("fwd" in n, n))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=98_304, help="rows (tokens per rank per micro-batch)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--softcap", type=float, default=30.0)
    parser.add_argument("--reference", help="the record's train_gpt.py: also time its fused MLP and q/k side")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not cases or set(cases) - set(CASES):
        sys.exit(f"--cases {args.cases!r}: expected a comma-separated list of {', '.join(CASES)}")
    if not torch.cuda.is_available():
        sys.exit("bench_kernels.py needs a CUDA GPU")
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    record = (ro.import_record({}, Path(args.reference).resolve(), name="record_train_gpt", eager_newton_schulz=False)
              if args.reference else None)
    if "ce" in cases:
        ce_table(args)
    if "mlp" in cases:
        mlp_table(args, record)
    if "qk" in cases:
        qk_table(args, record)


if __name__ == "__main__":
    main()
