"""Which step shrinks an over-budget quantized model at the least bpb per byte saved (issue 27 item 4)?

Trains one small model with train_gpt.py's own code (settings from the environment, as a run), quantizes it
once, then applies each candidate shrink at a few strengths to copies of the quantized model and measures, for
each: the compressed model bytes saved (the run's container and codecs) and the quantized model's val_bpb change
on the first VAL_MAX_TOKENS val tokens. Candidates:
  prune_h   zero the +-1 codes of the block matrices whose Hessian-weighted output error grows least
  prune_s2  the same, ranked by the row scale squared only (the 2026-03-25 record's rule)
  lqer      drop the LQER factors of the tensors that gain least from them (RECIPE=2135)
  clip_one  coarser clip (x f) on the one block matrix that loses least Hessian-weighted error per byte
  clip_all  coarser clip (x f) on every block matrix
  bits_one  one bit fewer on that matrix
  clip_run  what train_gpt.py does (fit_budget): every *_CLIP_SIGMAS x f, the embedding's too
The trained model and its Hessians are cached (--cache), so a second call measures only. --kl N also reports
how much further each variant's next-token distribution is from the unquantized model's than the unshrunk
quantized model's (mean KL divergence, nats a token, on the first N val tokens): around a trained optimum the
expected loss increase of a perturbation is about this KL, with no first-order term, so it is far less noisy
than the loss change on one val slice (which a random perturbation moves either way).

    python docs/results/shrink_cost.py --cache /tmp/shrink/trained.pt   (env: see docs/BENCHMARKS.md)
"""

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import train_gpt as tg  # noqa: E402


def trained_model(h, ctx, cache: Path):
    if cache.is_file():
        saved = torch.load(cache)
    else:
        torch.manual_seed(h.seed)
        model = tg.build_model(h, ctx.device, for_training=True)
        result = tg.train(model, h, ctx, tg.MICRO_BATCHES, lambda m: print(m, flush=True))
        saved = dict(state=model.state_dict(), hessians=result["hessians"])
        torch.save(saved, cache)
    model = tg.build_model(h, ctx.device, for_training=False)
    model.load_state_dict(saved["state"])
    model.looping = h.num_loops > 0
    return model, saved["hessians"]


def block_matrices(quantized, h):
    return [n for n, e in quantized.items() if e["rule"].kind == "gptq" and e["rule"].bits == h.matrix_bits]


def hessian_error(W, deq, H):
    E = W - deq
    return torch.einsum("ij,jk,ik->", E, H, E).item()


# ---- candidates: each returns a shrunk copy of `quantized` ----

def prune(quantized, weights, hessians, plan, h, n, hessian_weighted=True):
    scores, where = [], []
    for name in block_matrices(quantized, h):
        e = quantized[name]
        q, s = e["q"], e["scale"].float()
        H = hessians[plan[name].hessian_key].float()
        ones = q.abs() == 1
        if hessian_weighted:
            E = weights[name] - tg.dequantize({name: e})[name]
            score = s[:, None] ** 2 * torch.diag(H)[None, :] + 2 * q.float() * s[:, None] * (E @ H)
        else:
            score = (s[:, None] ** 2).expand_as(q)
        scores.append(score[ones])
        where += [(name, i) for i in ones.flatten().nonzero()[:, 0].tolist()]
    order = torch.argsort(torch.cat(scores), stable=True)[:n].tolist()
    out = {k: dict(v) for k, v in quantized.items()}
    for k in {where[i][0] for i in order}:
        out[k]["q"] = out[k]["q"].clone()
    for i in order:
        name, flat = where[i]
        out[name]["q"].view(-1)[flat] = 0
    return out


def lqer_gains(quantized, weights, hessians, plan):
    gains = {}
    for name, e in quantized.items():
        if "lqer_a" in e:
            H = hessians[plan[name].hessian_key].float()
            plain = {k: v for k, v in e.items() if not k.startswith("lqer")}
            gains[name] = (hessian_error(weights[name], tg.dequantize({name: plain})[name], H)
                           - hessian_error(weights[name], tg.dequantize({name: e})[name], H))
    return sorted(gains.items(), key=lambda kv: kv[1])


def drop_lqer(quantized, gains, n):
    out = dict(quantized)
    for name, _ in gains[:n]:
        out[name] = {k: v for k, v in quantized[name].items() if not k.startswith("lqer")}
    return out


def requantize(quantized, weights, hessians, plan, h, name, clip_factor=1.0, bits=None):
    rule = plan[name]
    bits = bits or rule.bits
    W = weights[name]
    scale = tg.row_scales(W, bits, rule.clip_sigma * clip_factor)  # fewer bits: the same range, coarser steps
    q = tg.gptq_quantize(W, hessians[rule.hessian_key], scale, bits, h.gptq_damp, h.gptq_block_size)
    entry = dict(rule=dataclasses.replace(rule, bits=bits), q=q, scale=scale.to(torch.float16))
    if "lqer_a" in quantized[name]:
        entry.update(tg.lqer_factors(W - q.float() * scale[:, None], h))
    return entry


def clip(quantized, weights, hessians, plan, h, names, factor, bits=None):
    out = dict(quantized)
    for name in names:
        out[name] = requantize(quantized, weights, hessians, plan, h, name, factor, bits)
    return out


def entropy_bits(q: torch.Tensor) -> float:
    counts = torch.bincount((q.flatten().long() + 128)).float()
    p = counts[counts > 0] / q.numel()
    return -(p * p.log2()).sum().item() * q.numel()


def least_sensitive(quantized, weights, hessians, plan, h, factor=1.1):
    """The block matrix with the least Hessian-weighted error added per order-0 bit saved by clip x factor."""
    best = None
    for name in block_matrices(quantized, h):
        H = hessians[plan[name].hessian_key].float()
        new = requantize(quantized, weights, hessians, plan, h, name, factor)
        d_err = (hessian_error(weights[name], tg.dequantize({name: new})[name], H)
                 - hessian_error(weights[name], tg.dequantize({name: quantized[name]})[name], H))
        d_bits = entropy_bits(quantized[name]["q"]) - entropy_bits(new["q"])
        ratio = d_err / max(d_bits, 1e-9)
        if best is None or ratio < best[1]:
            best = (name, ratio)
    return best[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", type=Path, required=True, help="trained model + Hessians (written if absent)")
    p.add_argument("--codes", default="brotli", help="codec of the code matrices (the run's best: lrzip)")
    p.add_argument("--kl", type=int, default=0, help="also the KL from the unshrunk model on this many val tokens")
    p.add_argument("--no-bpb", action="store_true", help="skip the val_bpb of each variant (with --kl)")
    p.add_argument("--only", default="", help="comma-separated variant names to run (default: all)")
    args = p.parse_args()
    h = tg.load_hyperparameters(dict(os.environ))
    ctx = tg.DistContext()
    tables = tg.build_byte_tables(tg.load_tokenizer(h.tokenizer_path, h.vocab_size))
    val_tokens, tables = tg.load_val_data(h, tables)
    model, hessians = trained_model(h, ctx, args.cache)
    weights = {n: p.detach().float() for n, p in model.named_parameters()}
    plan = tg.quantization_plan(model, h)
    quantized = tg.quantize_model(model, hessians, h)

    def size(q):
        container = tg.serialize_quantized(q, tg.model_config(h), h.compressor == "pergroup")
        return len(tg.compress(container, h.brotli_quality, codes=args.codes)[0])

    def scored(q):
        out = tg.build_model(h, ctx.device, for_training=False)
        out.load_state_dict(tg.dequantize(q))
        out.looping = h.num_loops > 0
        return out.eval()

    def bpb(q):
        return tg.evaluate(scored(q), val_tokens, tables, h, ctx)[1]

    @torch.no_grad()
    def kl(q):
        models, total, count = (model.eval(), scored(q)), 0.0, 0
        for batch, _ in tg.val_windows(val_tokens[:args.kl], h, ctx):
            logp = [torch.log_softmax(m.softcap_logits(m.logits(m.hidden(batch.inputs, batch.positions, batch.layout))
                                                       .float()), dim=-1) for m in models]
            per_token = (logp[0].exp() * (logp[0] - logp[1])).sum(-1).reshape(-1)
            scored_targets = batch.targets.reshape(-1) >= 0
            total += per_token[scored_targets].sum().item()
            count += int(scored_targets.sum())
        return total / count

    t0 = time.time()
    base_kl = kl(quantized) if args.kl else 0.0
    base_bytes, base_bpb = size(quantized), (math.nan if args.no_bpb else bpb(quantized))
    n_ones = sum(int((quantized[n]["q"].abs() == 1).sum()) for n in block_matrices(quantized, h))
    n_block = sum(quantized[n]["q"].numel() for n in block_matrices(quantized, h))
    print(f"base model_bytes:{base_bytes} val_bpb:{base_bpb:.6f} kl_from_unquantized:{base_kl:.6f} val_tokens:{len(val_tokens) - 1} block_values:{n_block} "
          f"plus_minus_ones:{n_ones} ({time.time() - t0:.0f}s)", flush=True)
    gains = lqer_gains(quantized, weights, hessians, plan) if h.lqer_enabled else []
    print("lqer gains (Hessian-weighted error removed):", [(n, f"{g:.3g}") for n, g in gains], flush=True)
    one = least_sensitive(quantized, weights, hessians, plan, h)
    print("least sensitive block matrix:", one, flush=True)
    fractions = (0.02, 0.08, 0.3)
    variants = [(f"prune_h n={int(f * n_ones)}", lambda f=f: prune(quantized, weights, hessians, plan, h, int(f * n_ones)))
                for f in fractions]
    variants += [(f"prune_s2 n={int(f * n_ones)}",
                  lambda f=f: prune(quantized, weights, hessians, plan, h, int(f * n_ones), hessian_weighted=False))
                 for f in fractions]
    variants += [(f"lqer drop={k}", lambda k=k: drop_lqer(quantized, gains, k)) for k in range(1, len(gains) + 1)]
    variants += [(f"clip_one x{f}", lambda f=f: clip(quantized, weights, hessians, plan, h, [one], f))
                 for f in (1.05, 1.2)]
    variants += [(f"clip_all x{f}", lambda f=f: clip(quantized, weights, hessians, plan, h,
                                                     block_matrices(quantized, h), f)) for f in (1.005, 1.02, 1.06)]
    variants += [("bits_one -1", lambda: clip(quantized, weights, hessians, plan, h, [one], 1.0, h.matrix_bits - 1))]
    variants += [(f"clip_run x{f}", lambda f=f: tg.quantize_model(model, hessians, tg.coarser_clips(h, f)))
                 for f in (1.005, 1.02, 1.06)]
    if args.only:
        variants = [(label, make) for label, make in variants if label.split()[0] in args.only.split(",")]
    print("variant | bytes saved | val_bpb change | bpb per MB saved" + " | KL added, nats/token x1e6 | per KB saved"
          * bool(args.kl), flush=True)
    for label, make in variants:
        t0 = time.time()
        shrunk = make()
        saved, cost = base_bytes - size(shrunk), (math.nan if args.no_bpb else bpb(shrunk) - base_bpb)
        line = f"{label} | {saved} | {cost:+.6f} | {cost / max(saved, 1) * 1e6:+.4f}"
        if args.kl:
            divergence = (kl(shrunk) - base_kl) * 1e6
            line += f" | {divergence:.2f} | {divergence / max(saved, 1) * 1e3:.3f}"
        print(f"{line} ({time.time() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
