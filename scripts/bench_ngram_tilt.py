"""Time the token channel's hints (tg.token_hints) against record #2135's C state on a val shard, and
check they are equal: the record's C (compiled by its own code, in a temporary copy; its state also runs the
within-word channel, which the record computes even when its gate is off), the same sort algorithm in numpy
(here only, for the comparison), ours in torch on the CPU, and on the GPU when there is one. Each is run
--repeat times; the minimum is printed (the machine may be shared). torch on the CPU uses --threads (1).

    python scripts/bench_ngram_tilt.py --val ../shared/data/proxy2_caseops/datasets/proxy2_caseops/fineweb_val_000000.bin.xz
--tile K concatenates the val K times (47,851,520 tokens is the full CaseOps val: --tile 11 --tokens 47851520);
--record-full also times the record's whole build_hints_for_targets (its Python word channel included).
"""

from __future__ import annotations

import argparse
import contextlib
import lzma
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
import record_oracle as ro  # noqa: E402
import train_gpt as tg  # noqa: E402

RECORD = REPO.parent / "shared" / "reference" / "record_2135"
TOKENIZER_NAME = "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
SHARD_HEADER_BYTES = 256 * 4


def load_targets(path: Path, tile: int, tokens: int | None) -> np.ndarray:
    raw = (lzma.open(path) if path.suffix == ".xz" else open(path, "rb")).read()
    stream = np.frombuffer(raw, dtype="<u2", offset=SHARD_HEADER_BYTES)
    return np.tile(stream, tile)[1:][:tokens]  # the record scores val_tokens[1:]


def record_module(reference: Path, folder: str):
    """The record's n-gram module, its C library compiled into `folder`."""
    module = ro.load_ngram_tilt(reference, folder, "record_online_ngram_tilt")
    module.ensure_online_ngram_lib(log0=lambda *_: None)  # the compile is not timed
    return module


def record_c(record, tokenizer: Path, targets: np.ndarray, order: int):
    _, starts_new_word, boundary = record.build_piece_luts(tokenizer_path=str(tokenizer), vocab_size=8192)
    total = targets.size
    state = record.OnlineNgramState(
        lib=record.ensure_online_ngram_lib(log0=lambda *_: None), token_ctx_len=order - 1,
        token_table_bits=record.suggest_table_bits(total, load_factor=0.55),
        within_table_bits=record.suggest_table_bits(max(total // 2, 1), load_factor=0.60),
        starts_new_word_lut=starts_new_word, boundary_lut=boundary, seed_prefix_token=int(targets[0]))
    token, confidence, *_ = state.process_chunk(targets)
    state.close()
    return token.astype(np.int64), confidence


def numpy_hints(targets: np.ndarray, order: int):
    """tg.token_hints, line for line in numpy (uint64 keys)."""
    ctx_len, n = order - 1, targets.size
    tok = targets.astype(np.uint64)
    stream = np.concatenate([tok[:1], tok])
    first = max(ctx_len - 1, 0)
    key = np.zeros(n - first, dtype=np.uint64)
    for j in range(ctx_len):
        key ^= stream[first + 1 - ctx_len + j : n + 1 - ctx_len + j] * np.uint64(tg.HASH_COEFFS[j])
    tok = tok[first:]
    pair = (key * np.uint64(tg.PAIR_MIX)) ^ (tok * np.uint64(tg.HASH_COEFFS[ctx_len % 32]))
    rank = np.arange(n - first)

    def starts(sorted_keys):
        new = np.ones(sorted_keys.size, dtype=bool)
        new[1:] = sorted_keys[1:] != sorted_keys[:-1]
        return np.maximum.accumulate(np.where(new, rank, 0))

    by_pair = np.argsort(pair, kind="stable")
    count = np.empty_like(rank)
    count[by_pair] = rank - starts(pair[by_pair]) + 1
    by_key = np.argsort(key, kind="stable")
    start = starts(key[by_key])
    count, tok = count[by_key], tok[by_key]
    offset = start * (n + 1)
    top_count = np.maximum.accumulate(count + offset) - offset
    is_new_top = (rank == start) | (count > np.roll(top_count, 1))
    top_tok = tok[np.maximum.accumulate(np.where(is_new_top, rank, 0))]
    seen, earlier = rank > start, np.maximum(rank - 1, 0)
    hint, conf = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float32)
    hint[first + by_key] = np.where(seen, top_tok[earlier], 0)
    total = np.maximum(rank - start, 1).astype(np.float32)
    conf[first + by_key] = np.where(seen, top_count[earlier].astype(np.float32) / total, 0)
    return hint, conf


def best_of(fn, repeat: int, sync=lambda: None):
    times, out = [], None
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times), times, out


def main(argv=None):
    with contextlib.ExitStack() as cleanup:  # removes the record's compiled C library's folder, if one was made
        bench(argv, cleanup)


def bench(argv, cleanup: contextlib.ExitStack):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--val", required=True, help="val shard (.bin or .bin.xz)")
    ap.add_argument("--reference", default=str(RECORD), help="folder of the record's n-gram files and tokenizers/")
    ap.add_argument("--order", type=int, default=16, help="TOKEN_ORDER")
    ap.add_argument("--tile", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=None, help="score this many targets (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip", default="", help="comma list of: record,numpy,torch_cpu,cuda")
    ap.add_argument("--record-full", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: single process, like the C)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    targets = load_targets(Path(args.val), args.tile, args.tokens)
    print(f"targets:{targets.size} order:{args.order} torch_threads:{torch.get_num_threads()} repeat:{args.repeat}")
    runs = []  # (name, function, synchronise, repeat); each is printed as soon as it is measured
    if "record" not in skip:
        record = record_module(Path(args.reference), cleanup.enter_context(tempfile.TemporaryDirectory()))
        tokenizer = Path(args.reference) / "tokenizers" / TOKENIZER_NAME
        runs.append(("record_c", lambda: record_c(record, tokenizer, targets, args.order), None, args.repeat))
        if args.record_full:
            runs.append(("record_full", lambda: record.build_hints_for_targets(
                target_token_ids_np=targets, tokenizer_path=str(tokenizer), vocab_size=8192, log0=lambda *_: None,
                token_order=args.order, within_tau=99.0, within_boost=0.0, word_tau=99.0, word_boost=0.0,
                agree_add_boost=0.0), None, 1))
    if "numpy" not in skip:
        runs.append(("numpy", lambda: numpy_hints(targets, args.order), None, args.repeat))
    on_cpu = torch.from_numpy(targets.astype(np.int64))
    if "torch_cpu" not in skip:
        runs.append(("torch_cpu", lambda: tg.token_hints(on_cpu, args.order), None, args.repeat))
    if torch.cuda.is_available() and "cuda" not in skip:
        print(f"device:{torch.cuda.get_device_name()}")
        on_gpu = on_cpu.cuda()
        tg.token_hints(on_gpu, args.order)  # warm-up: CUDA context and kernels
        runs.append(("torch_cuda", lambda: tg.token_hints(on_gpu, args.order), torch.cuda.synchronize,
                     args.repeat))
    first = None
    for name, fn, sync, repeat in runs:
        best, times, out = best_of(fn, repeat, sync or (lambda: None))
        same = ""
        if name != "record_full":
            out = tuple(np.asarray(x.cpu() if torch.is_tensor(x) else x) for x in out)
            first = first or (name, out)
            same = f" equal_to_{first[0]}:{all(np.array_equal(a, b) for a, b in zip(out, first[1]))}"
        print(f"{name}: min {best:.3f}s runs [{', '.join(f'{t:.3f}' for t in times)}]{same}", flush=True)
    hint, conf = first[1]
    print(f"positions_with_hint:{int((conf > 0).sum())} fired_at_0.8:{int((conf >= np.float32(0.8)).sum())}")

if __name__ == "__main__":
    main()
