"""Check train_gpt.py's FlashAttention 3 branch on a GPU where `flash_attn_interface` imports.

    python3 -m pip install -q --no-deps --no-index --target /tmp/fa3site .whl/fa3/tokenspeed_fa3-*.whl
    PYTHONPATH=/tmp/fa3site python3 scripts/check_fa3.py --tokenizer .gpu_data/ds/tokenizers/fineweb_8192_bpe.model

Install the wheel into its own folder, never into the environment the training runs use: the registry's
`tokenspeed-fa3` build is forward-only, so a training run that picks it up fails at its first backward.

1. backend   flash_attn_interface imports; train_gpt sees it and attention_backend() says "fa3".
2. kernel    train_gpt.varlen_attention with the "fa3" backend against the "torch_varlen" backend (the path the
             benchmarks run), on packed multi-document GQA batches (8 query / 4 kv heads, head dim 64, bf16)
             cut by train_gpt's own packing (pieces at BOS and every TRAIN_SEQ_LEN), in several cu_seqlens
             layouts. Both are also compared with an fp32 reference (exact per-piece padded SDPA).
             Pass: max |fa3 - torch_varlen| / max(1, |fp32|) <= MAX_REL_TOL, mean |fa3 - torch_varlen|
             <= MEAN_ABS_TOL, and fa3's max error
             against fp32 at most FP32_ERR_FACTOR x torch_varlen's + FP32_ERR_SLACK.
3. model     one forward of the full-size GPT (record config) on a packed batch, eager: loss with fa3 vs
             torch_varlen within LOSS_TOL; the same with torch.compile (a 4-layer model, to keep the compile
             short); and whether backward runs (this build refuses it: reported, not a failure).
4. log       train_gpt.py itself (SMOKE sizes on this GPU, synthetic shards, --tokenizer) logs
             `attention_backend:fa3` on its model_params line; the run is stopped after that line.
Prints one PASS/FAIL line per check and exits non-zero on any FAIL.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAX_REL_TOL = 2e-2  # of max(1, |reference|): ~2 bf16 ulps; the two kernels round their bf16 outputs differently
MEAN_ABS_TOL = 1e-3
FP32_ERR_FACTOR, FP32_ERR_SLACK = 2.0, 2e-3
LOSS_TOL = 5e-3  # nats, on a loss of ~9 (random weights): bf16 rounding through 11 layers
SEQ_LEN, HEADS, KV_HEADS, HEAD_DIM, BOS = 2048, 8, 4, 64, 1
FAILURES: list[str] = []


def report(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def doc_stream(lengths, rng, vocab: int = 8192) -> np.ndarray:
    """A token stream of documents of the given lengths, each starting with BOS."""
    tokens = rng.integers(4, vocab, size=int(sum(lengths)) + 1)
    tokens[np.cumsum([0] + list(lengths[:-1]))] = BOS
    return tokens


def layouts(rng) -> dict[str, list[int]]:
    """Document lengths of each tested window (tokens before cutting at SEQ_LEN)."""
    lognormal = np.maximum(1, rng.lognormal(np.log(800) - 0.5, 1.0, 400)).astype(int)
    fineweb_like = list(lognormal[np.cumsum(lognormal) <= 98_304])
    fineweb_like.append(98_304 - sum(fineweb_like))
    return {
        "one document of 2048": [2048],
        "one document of 5000 (cut into 2048+2048+904)": [5000],
        "8 x 2048": [2048] * 8,
        "ragged 1..3000, with 1-token documents": [1, 3000, 1, 17, 2047, 2049, 1, 777, 4096, 500, 2857],
        "200 short documents (1..64)": list(rng.integers(1, 65, 200)),
        "FineWeb-like micro-batch of 98,304 tokens": fineweb_like,
    }


def check_kernel(tg, device) -> None:
    rng = np.random.default_rng(0)
    for name, lengths in layouts(rng).items():
        tokens = doc_stream(lengths, rng)
        batch = tg.pack_window(tokens, BOS, SEQ_LEN).to(device)
        layout = dict(cu_seqlens=batch.cu_seqlens, max_seqlen=batch.max_seqlen, positions=batch.positions)
        T = batch.inputs.numel()
        gen = torch.Generator(device=device).manual_seed(len(lengths))
        q = torch.randn(T, HEADS, HEAD_DIM, device=device, generator=gen)
        k = torch.randn(T, KV_HEADS, HEAD_DIM, device=device, generator=gen)
        v = torch.randn(T, KV_HEADS, HEAD_DIM, device=device, generator=gen)
        qb, kb, vb = (t.bfloat16() for t in (q, k, v))
        fa3 = tg.varlen_attention(qb, kb, vb, layout, "fa3").float()
        tv = tg.varlen_attention(qb, kb, vb, layout, "torch_varlen").float()
        # same bf16 inputs, fp32 maths; kv heads expanded so that SDPA takes its memory-efficient kernel
        group = HEADS // KV_HEADS
        ref = tg.padded_sdpa_varlen(qb.float(), kb.float().repeat_interleave(group, 1),
                                    vb.float().repeat_interleave(group, 1), layout)
        diff = (fa3 - tv).abs()
        rel = (diff / ref.abs().clamp_min(1.0)).max().item()
        err_fa3, err_tv = (fa3 - ref).abs().max().item(), (tv - ref).abs().max().item()
        ok = (rel <= MAX_REL_TOL and diff.mean().item() <= MEAN_ABS_TOL
              and err_fa3 <= FP32_ERR_FACTOR * err_tv + FP32_ERR_SLACK and fa3.shape == tv.shape)
        report(f"kernel [{name}]", ok,
               f"T={T} pieces={batch.cu_seqlens.numel() - 1} max|fa3-varlen|={diff.max().item():.2e} "
               f"mean={diff.mean().item():.2e} max rel={rel:.2e}; max err vs fp32: fa3 {err_fa3:.2e}, torch_varlen {err_tv:.2e}")


def model_loss(tg, h, device, backend: str, compiled: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = tg.GPT(h).to(device)
    model.configure_kernels(device, h.fused_ce_enabled, h.fused_mlp_enabled)
    assert model.attn_backend == "fa3", model.attn_backend
    model.attn_backend = backend
    rng = np.random.default_rng(1)
    lengths = list(np.maximum(1, rng.lognormal(np.log(800) - 0.5, 1.0, 40)).astype(int))
    batch = tg.pack_window(doc_stream(lengths, rng), BOS, h.train_seq_len).to(device)
    fn = tg.compile_for_training(model, h, device) if compiled else model  # as training compiles it
    loss = fn(batch.inputs, batch.targets, batch.positions, batch.cu_seqlens, batch.max_seqlen)
    return model, loss


def check_model(tg, device, compile_check: bool) -> None:
    h = tg.load_hyperparameters({})
    with torch.no_grad():
        losses = {b: model_loss(tg, h, device, b, compiled=False)[1].item() for b in ("fa3", "torch_varlen")}
    gap = abs(losses["fa3"] - losses["torch_varlen"])
    report("model forward, full size, eager", gap <= LOSS_TOL,
           f"loss fa3 {losses['fa3']:.5f} torch_varlen {losses['torch_varlen']:.5f} |diff| {gap:.2e}")
    if compile_check:
        small = tg.load_hyperparameters(dict(NUM_LAYERS="4", LOOP_START="1", LOOP_END="2", NUM_LOOPS="1",
                                             PARALLEL_START_LAYER="3", XSA_LAST_N="4"))
        t0 = time.perf_counter()
        with torch.no_grad():
            eager = model_loss(tg, small, device, "fa3", compiled=False)[1].item()
            compiled = model_loss(tg, small, device, "fa3", compiled=True)[1].item()
        gap = abs(eager - compiled)
        report("model forward, torch.compile with fa3 (4 layers)", gap <= LOSS_TOL,
               f"loss eager {eager:.5f} compiled {compiled:.5f} |diff| {gap:.2e} ({time.perf_counter() - t0:.0f} s)")
    model, loss = model_loss(tg, h, device, "fa3", compiled=False)
    try:
        loss.backward()
        print("INFO backward through fa3: ran (this build has a backward)", flush=True)
    except Exception as err:  # noqa: BLE001 - the forward-only build raises from its C++ op
        print(f"INFO backward through fa3: refused, as expected of a forward-only build ({str(err)[:160]!r})",
              flush=True)


def write_shard(path: Path, tokens: np.ndarray) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = (20240520, 1, len(tokens))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())


def check_log_line(tokenizer: Path | None) -> None:
    if tokenizer is None or not tokenizer.is_file():
        print(f"SKIP log: no tokenizer at {tokenizer} (pass --tokenizer): the log line was not checked",
              flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(2)
        for split, n_docs in (("train", 400), ("val", 80)):
            write_shard(Path(tmp) / f"fineweb_{split}_000000.bin", doc_stream([500] * n_docs, rng))
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH", "LD_LIBRARY_PATH")}
        env.update(SMOKE="1", DATA_PATH=tmp, TOKENIZER_PATH=str(tokenizer.resolve()), RUN_ID="check_fa3",
                   PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, str(REPO / "train_gpt.py")], cwd=tmp, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seen = []
        for line in proc.stdout:
            seen.append(line.rstrip())
            if line.startswith("model_params:"):
                break
        proc.kill()
        proc.wait()
    line = next((s for s in seen if s.startswith("model_params:")), None)
    report("log", line is not None and "attention_backend:fa3" in line,
           line if line else "no model_params line; last lines:\n" + "\n".join(seen[-10:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, default=Path(".gpu_data/ds/tokenizers/fineweb_8192_bpe.model"))
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile check")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("check_fa3.py needs a CUDA GPU (Hopper for FA3)")
    try:
        import flash_attn_interface
    except Exception as err:  # noqa: BLE001
        raise SystemExit(f"FAIL backend: flash_attn_interface does not import ({err!r}). Install the FA3 wheel "
                         "into a folder and put it on PYTHONPATH (see --help)") from None
    import train_gpt as tg
    device = torch.device("cuda", 0)
    print(f"flash_attn_interface from {flash_attn_interface.__file__}; torch {torch.__version__}; "
          f"{torch.cuda.get_device_name(device)}", flush=True)
    backend = tg.attention_backend(device)
    report("backend", tg.fa3_varlen_func is not None and backend == "fa3",
           f"train_gpt.attention_backend() = {backend!r}")
    if FAILURES:
        return 1
    check_kernel(tg, device)
    check_model(tg, device, args.compile)
    check_log_line(args.tokenizer)
    print(f"{'ALL PASS' if not FAILURES else 'FAILED: ' + ', '.join(FAILURES)}", flush=True)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
