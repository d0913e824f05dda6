"""Our phased doc-LoRA TTT evaluator against the record's (its own code, run as the oracle) on the same
weights and the same validation documents: both bpbs, their difference, per-document losses, both scoring
times (compile excluded; warm-ups on random tokens before each clock) and their ratio, and a projected
8xH100 FineWeb-val scoring time.

GPU (the lead's command; ARTIFACT from a golfrun run, the val shard and tokenizer of proxy2):
    python scripts/bench_ttt_vs_reference.py --artifact logs/RUN_ID.golf \
        --val ../shared/data/proxy2/datasets/proxy2_sp8192/fineweb_val_000000.bin \
        --tokenizer ../shared/data/tokenizers/fineweb_8192_bpe.model
CPU, toy size (what tests/test_oracle_ttt.py runs): add --toy (random weights, a few short documents).
Two GPUs at once (the record's evaluator on one, ours on the other, the same documents), then compare:
    CUDA_VISIBLE_DEVICES=0 python scripts/bench_ttt_vs_reference.py ... --only record --save rec.json &
    CUDA_VISIBLE_DEVICES=1 python scripts/bench_ttt_vs_reference.py ... --only ours --save ours.json
    python scripts/bench_ttt_vs_reference.py --compare rec.json ours.json
Our config variables in the environment apply to both (e.g. PHASED_TTT_PREFIX_DOCS with --max-docs).

Both run at world size 1 with TTT_RECORD_WORLD_SIZE=1, so they compute the same thing: the record's
1-GPU result. Projection method (printed for the whole val shard only, whose 4,926 documents
have FineWeb's length distribution, with PHASED_TTT_PREFIX_DOCS scaled like the documents): FineWeb val has
50,000 documents, so each phase holds 50,000 / (documents here) times as many batches of the same lengths,
shared by 8 GPUs: the phase lasts max(its batch seconds x that ratio / 8, its slowest batch); the global SGD
passes train on that many times more documents, also split over 8 GPUs. A subset dominated by one very long
document (the first 600 documents hold the shard's longest, 32,862 tokens) makes the ratio estimate
meaningless: measure the time ratio on a subset, project from the whole shard.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
import profile_vs_reference as pvr  # noqa: E402
import record_oracle as ro  # noqa: E402
import train_gpt as tg  # noqa: E402

FINEWEB_VAL_DOCS = 50_000
TOY = dict(NUM_LAYERS="4", MODEL_DIM="64", NUM_HEADS="4", NUM_KV_HEADS="2", ROPE_DIMS="8", XSA_LAST_N="4",
           LOOP_START="1", LOOP_END="2", NUM_LOOPS="1", PARALLEL_START_LAYER="3", TRAIN_SEQ_LEN="128",
           EVAL_SEQ_LEN="128",
           TTT_LORA_RANK="4", TTT_LORA_ALPHA="6", TTT_LORA_LR="0.01", TTT_BATCH_SIZE="4", TTT_CHUNK_SIZE="16",
           TTT_EVAL_SEQ_LEN="64", PHASED_TTT_PREFIX_DOCS="9", PHASED_TTT_NUM_PHASES="2",
           GLOBAL_TTT_CHUNK_TOKENS="512", GLOBAL_TTT_LR="0.01")
TOY_DOC_TOKENS = (24, 300)  # toy documents: lengths drawn in this range (several longer than the context)


def record_model(R, env: dict, script: Path, ours: tg.GPT, device):
    """The record's GPT (fp32) holding our weights."""
    model = ro.build_record_model(R, env, script).float()
    ro.copy_our_weights(ours, model)
    model.looping_active = ours.looping
    return model.to(device)


class RecordProbe:
    """Per-document nats of the record's evaluator, read (not changed) by wrapping its batch claim and its
    score accumulation: row b of a chunk step belongs to document b of the batch just claimed."""

    def __init__(self, R):
        self.R, self.nats, self.batch = R, {}, None
        build, claim, accumulate = R._build_ttt_global_batches, R._claim_next_batch, R._accumulate_bpb

        def build_and_keep(*args, **kwargs):
            self.queue = build(*args, **kwargs)
            return self.queue

        def claim_and_note(path, queue_len):
            idx = claim(path, queue_len)
            self.batch = self.queue[idx][1] if idx < queue_len else None
            return idx

        def accumulate_and_read(ptl, x, y, offsets, lens, pos_idx, *rest, **kwargs):
            pos = pos_idx[: x.size(1)].unsqueeze(0)
            mask = (pos >= offsets.unsqueeze(1)) & (pos < (offsets + lens).unsqueeze(1))
            for row, (_, (start, _)) in enumerate(self.batch):
                self.nats[start] = self.nats.get(start, 0.0) + float((ptl[row].double() * mask[row]).sum())
            return accumulate(ptl, x, y, offsets, lens, pos_idx, *rest, **kwargs)

        R._build_ttt_global_batches, R._claim_next_batch, R._accumulate_bpb = (
            build_and_keep, claim_and_note, accumulate_and_read)


@contextlib.contextmanager
def record_ngram_module(script: Path):
    """#2135's n-gram module (it builds its C library beside itself) imported from a temporary copy, as the
    record's evaluator imports it by name: the shared reference folder is never written."""
    saved = sys.modules.get("online_ngram_tilt")
    try:
        with tempfile.TemporaryDirectory() as folder:
            ro.load_ngram_tilt(Path(script).parent, folder, "online_ngram_tilt")
            yield
    finally:
        sys.modules.pop("online_ngram_tilt", None)
        if saved is not None:
            sys.modules["online_ngram_tilt"] = saved


def our_doc_nats(scores: torch.Tensor, tokens: np.ndarray, bos_id: int) -> dict:
    starts, lengths = tg.find_documents(tokens, bos_id)
    s = scores.double().cpu().numpy()
    return {int(a): float(s[a:a + n - 1].sum()) for a, n in zip(starts, lengths)}


def toy_stream(tokens: np.ndarray, n_docs: int, seed: int = 0) -> np.ndarray:
    """Positions in the val stream of n_docs real documents, each cut to a random length (BOS kept), one
    after the other (index the tokens and the byte sidecar with them)."""
    starts = np.flatnonzero(tokens == 1)
    rng = np.random.default_rng(seed)
    docs = []
    for a, b in zip(starts[:n_docs], starts[1:n_docs + 1]):
        docs.append(np.arange(a, min(b, a + int(rng.integers(*TOY_DOC_TOKENS)))))
    return np.concatenate(docs)


def sidecar_bpb(scores: torch.Tensor, val_bytes: np.ndarray) -> float:
    """bpb of per-target nats with the byte sidecar's bytes (target t is token t + 1), as #2135 counts."""
    return float(scores.double().sum()) / math.log(2) / float(val_bytes[1:].astype(np.float64).sum())


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def record_forward(rmodel, device):
    """The record's TTT forward as its main() compiles it: with dynamic shapes, one graph per hint variant,
    each compiled at its first call (#2135's hint variant compiles on its clock, as in its run)."""
    compiled = {}

    def fwd(x, y, lora, hint_ids=None):
        variant = hint_ids is not None
        if variant not in compiled:
            compiled[variant] = torch.compile(
                lambda x, y, lora, *hint: rmodel.forward_ttt(x, y, lora=lora, **({"hint_ids": hint[0]} if hint
                                                                                  else {})), dynamic=True)
        return compiled[variant](x, y, lora, *([hint_ids] if variant else []))
    return fwd


def record_warm_up(R, rh, rmodel, fwd, device) -> None:
    """The record's main() before its TTT clock: rotary tables primed (at the TTT context, or YaRN's length),
    then a chunk-sized and a full-window step on random tokens with its LoRA flags and its AdamW."""
    for block in rmodel.blocks:
        rotary = block.attn.rotary
        if getattr(rh, "rope_yarn", False):
            rotary(rh.train_batch_tokens // rh.grad_accum_steps, device, torch.bfloat16)
            continue
        rotary._cos_cached = rotary._sin_cached = None
        rotary._seq_len_cached = 0
        rotary(rh.ttt_eval_seq_len, device, torch.bfloat16)
    lora = R.BatchedTTTLoRA(rh.ttt_batch_size, rmodel, rh.ttt_lora_rank, k_lora=rh.ttt_k_lora,
                            mlp_lora=rh.ttt_mlp_lora, o_lora=rh.ttt_o_lora).to(device)
    opt = torch.optim.AdamW(lora.parameters(), lr=rh.ttt_lora_lr, betas=(rh.ttt_beta1, rh.ttt_beta2), eps=1e-10,
                            weight_decay=rh.ttt_weight_decay, fused=True)
    for T in (rh.ttt_chunk_size, rh.ttt_eval_seq_len):
        x, y = (torch.randint(0, rh.vocab_size, (rh.ttt_batch_size, T), device=device) for _ in range(2))
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            fwd(x, y, lora=lora)[:, :min(rh.ttt_chunk_size, T)].mean(-1).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.empty_cache()


def run_record(R, rh, rmodel, val_data, device, compile_it: bool):
    """The record's evaluator as its main() runs it: compile warm-up on random tokens, then the clock."""
    fwd = rmodel.forward_ttt
    R.BOS_ID = 1
    warm = 0.0
    if compile_it:
        fwd = record_forward(rmodel, device)
        t0 = time.perf_counter()
        record_warm_up(R, rh, rmodel, fwd, device)
        synchronize()
        warm = time.perf_counter() - t0
    probe = RecordProbe(R)
    t0 = time.perf_counter()
    _, bpb = R.eval_val_ttt_phased(rh, rmodel, device, val_data, forward_ttt_train=fwd)
    synchronize()
    return bpb, probe.nats, time.perf_counter() - t0, warm


def run_ours(model, tokens, tables, h, device, compile_it: bool, batch_seconds: list | None = None):
    ctx = tg.DistContext(device=device) if device.type == "cuda" else tg.DistContext()
    chunk_fn, warm = tg.ttt_chunk_losses, 0.0
    if compile_it:
        t0 = time.perf_counter()
        chunk_fn = tg.compile_ttt(h, device)
        tg.warm_up_ttt(chunk_fn, model, h, ctx)
        warm = time.perf_counter() - t0
    if batch_seconds is not None:  # the projection's per-batch times (a sync per batch: measurement only)
        inner = tg.ttt_batch

        def timed(state, docs, A):
            synchronize()
            t = time.perf_counter()
            inner(state, docs, A)
            synchronize()
            batch_seconds.append(time.perf_counter() - t)
        tg.ttt_batch = timed
    t0 = time.perf_counter()
    lines = []

    def log(line: str) -> None:
        lines.append(line)
        print(line, flush=True)
    _, bpb, scores = tg.evaluate_ttt(model, tokens, tables, h, ctx, log, chunk_fn)
    synchronize()
    if batch_seconds is not None:
        tg.ttt_batch = inner
    return bpb, scores, time.perf_counter() - t0, warm, lines, chunk_fn


PROFILE_ROWS = 25  # ops in the profile's table


def profile_batch(model, tokens, tables, h, device, chunk_fn, q: int, unprofiled: float) -> str:
    """Batch q of the plan (serving order) scored again under torch.profiler: per chunk step its wall time, the
    device's busy time and kernel launches (a step whose device idles is paying host overhead), then the ops
    that took the most device (on a CPU: host) time. unprofiled: the batch's seconds in the measured run (the
    profiler's own host cost is the difference)."""
    ctx = tg.DistContext(device=device) if device.type == "cuda" else tg.DistContext()
    plan = tg.plan_ttt(tokens, h)
    hints = tg.ngram_hints(tokens, h, device) if h.ngram_tilt_enabled else None
    state = tg.new_ttt_state(model, tokens, tables, h, ctx, chunk_fn, plan, hints)
    docs = plan.batches[q]
    model.eval()
    model.requires_grad_(False)
    kinds = torch.profiler.ProfilerActivity
    activities = [kinds.CPU] + [kinds.CUDA] * (device.type == "cuda")
    synchronize()
    t0 = time.perf_counter()
    with tg.weights_cast_for_scoring(model, device), torch.profiler.profile(activities=activities) as prof:
        tg.ttt_batch(state, docs, tg.batch_adapters(state, 0, len(docs)))
        synchronize()
    wall = time.perf_counter() - t0
    model.requires_grad_(True)
    model.train()
    events = prof.key_averages()
    on_device = pvr.kernel_rows(events)  # GPU annotations left out: they span kernels counted in their own rows
    busy = sum(r["us"] for r in on_device) / 1e6
    steps = max(state.chunk_steps, 1)
    sort = "self_device_time_total" if on_device else "self_cpu_time_total"
    busy_line = (f"device_busy:{busy / steps * 1e3:.1f} ms a step ({busy / wall:.0%} of the wall) "
                 f"kernels:{sum(r['count'] for r in on_device) / steps:.0f} a step" if on_device
                 else "device: none (CPU)")
    return (f"profile batch:{q} rows:{len(docs)} longest_doc:{int(plan.lengths[docs].max())} "
            f"chunk_steps:{state.chunk_steps} wall:{wall:.2f}s ({wall / steps * 1e3:.1f} ms a step; unprofiled "
            f"{unprofiled / steps * 1e3:.1f}) {busy_line}\n"
            + events.table(sort_by=sort, row_limit=PROFILE_ROWS))


SUBSET_PROJECTION = ("projected_8xH100_fineweb_seconds: none (a subset of the val shard: its document lengths "
                     "are not FineWeb's; project from the whole shard, without --max-docs, --skip-docs, --toy)")


def projected_8gpu_seconds(plan, batch_seconds, total_seconds, n_docs) -> tuple[float, float, float]:
    """(projected seconds, its phases' part, the measured SGD seconds) of 8-GPU FineWeb-val scoring, from this
    run's per-batch times (see the module docstring)."""
    scale, first, phases = FINEWEB_VAL_DOCS / n_docs, 0, 0.0
    for end in plan.phase_ends:
        times = batch_seconds[first:end]
        # FineWeb's phase holds `scale` times as many batches of these lengths, shared by 8 GPUs; a phase
        # lasts at least as long as its slowest batch (a batch runs on one GPU)
        phases += max(scale * sum(times) / 8, max(times, default=0.0))
        first = end
    sgd = total_seconds - sum(batch_seconds)  # the global SGD passes: their documents scale too, split over 8
    return phases + scale * sgd / 8, phases, sgd


def project_8gpu(plan, batch_seconds, total_seconds, n_docs) -> str:
    projected, phases, sgd = projected_8gpu_seconds(plan, batch_seconds, total_seconds, n_docs)
    scale = FINEWEB_VAL_DOCS / n_docs
    return (f"projected_8xH100_fineweb_seconds:{projected:.1f} (phases: max(batch seconds x {scale:.2f} docs "
            f"ratio / 8 GPUs, slowest batch) = {phases:.1f}s, + SGD {sgd:.1f}s x {scale:.2f} / 8)")


def compare(record: dict, ours: dict) -> str:
    """The comparison lines of two results (record's and ours, same documents)."""
    docs = sorted(set(ours["nats"]) | set(record["nats"]))
    diff = np.array([abs(ours["nats"].get(k, 0.0) - record["nats"].get(k, 0.0)) for k in docs])
    rel = diff / np.maximum(np.abs([record["nats"].get(k, 0.0) for k in docs]), 1e-30)
    return (f"record val_bpb:{record['bpb']:.6f} scoring_seconds:{record['seconds']:.2f} "
            f"compile_warmup_seconds:{record['warm']:.1f}\n"
            f"ours val_bpb:{ours['bpb']:.6f} scoring_seconds:{ours['seconds']:.2f} "
            f"compile_warmup_seconds:{ours['warm']:.1f}\n"
            f"bpb_difference:{ours['bpb'] - record['bpb']:+.6f} worst_doc_nats_difference:{diff.max():.6f} "
            f"time_ratio_ours_over_record:{ours['seconds'] / record['seconds']:.3f}\n"
            f"doc_nats_relative_difference median_relative:{np.median(rel):.2e} "
            f"p99_relative:{np.percentile(rel, 99):.2e} worst_relative:{rel.max():.2e} (over {len(docs)} documents)")


def save(path: str, result: dict) -> None:
    Path(path).write_text(json.dumps({**result, "nats": {str(k): v for k, v in result["nats"].items()}}))


def load(path: str) -> dict:
    result = json.loads(Path(path).read_text())
    return {**result, "nats": {int(k): v for k, v in result["nats"].items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--val")
    ap.add_argument("--tokenizer")
    ap.add_argument("--val-bytes", help="#2135's CaseOps byte sidecar of --val: both bpbs count its bytes")
    ap.add_argument("--artifact", help="golfrun artifact; without it, --toy random weights")
    ap.add_argument("--toy", action="store_true", help="toy model and documents (CPU); environment variables "
                    "of ours override the toy config (e.g. TTT_LORA_LR=0 GLOBAL_TTT_LR=0: scoring alone)")
    ap.add_argument("--docs", type=int, default=24, help="--toy: number of documents")
    ap.add_argument("--max-docs", type=int, default=0, help="only the first N documents of --val (0: all)")
    ap.add_argument("--skip-docs", type=int, default=0, help="leave out the first N documents of --val (e.g. a "
                    "subset for the time ratio without the shard's longest document)")
    ap.add_argument("--reference", type=Path, default=ro.RECORD_1886,
                    help="the record's script (or the folder of record_1886_train_gpt.py); the FA3 shim beside it")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--only", choices=("record", "ours"), help="run one evaluator (one per GPU, then --compare)")
    which.add_argument("--no-record", action="store_const", const="ours", dest="only", help="same as --only ours")
    ap.add_argument("--save", help="write this run's result (bpb, seconds, per-document nats; ours when both "
                                   "run) as JSON")
    ap.add_argument("--profile", type=int, nargs="+", metavar="Q", help="after our run, score batch Q of the plan "
                    "(0: the longest documents) again under torch.profiler: wall, device-busy time and kernels a "
                    "chunk step, and the top ops (several Q: each)")
    ap.add_argument("--compare", nargs=2, metavar=("RECORD_JSON", "OURS_JSON"), help="compare two saved results")
    args = ap.parse_args(argv)
    if args.compare:
        print(compare(load(args.compare[0]), load(args.compare[1])))
        return 0
    if args.profile and args.only == "record":
        ap.error("--profile breaks down our evaluator's time: not with --only record")
    if not (args.val and args.tokenizer):
        ap.error("--val and --tokenizer are required (or --compare)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    toy_env = dict(TOY) if args.toy else {}
    known = {f.name.upper() for f in dataclasses.fields(tg.Hyperparameters)}
    ours_env = {k: v for k, v in os.environ.items() if k in known}
    h = tg.load_hyperparameters({**toy_env, **ours_env, "TTT_RECORD_WORLD_SIZE": "1",  # the environment over --toy
                                 "COMPILE": str(int(device.type == "cuda")), "TOKENIZER_PATH": args.tokenizer})
    overridden = sorted(k for k in toy_env if k in ours_env and ours_env[k] != toy_env[k])
    if overridden:
        print("toy config overridden by the environment: " + " ".join(f"{k}={ours_env[k]}" for k in overridden))
    if args.artifact:  # the artifact's own model config (an env var that contradicts it is refused)
        quantized, stored = tg.load_artifact(args.artifact)
        h, notes = tg.adopt_artifact_config(h, stored, ours_env)
        print("\n".join(notes))
    tokens = tg.read_shard(args.val).astype(np.int64)
    val_bytes = tg.read_shard(args.val_bytes) if args.val_bytes else None
    if args.toy:
        kept = toy_stream(tokens, args.docs)
        tokens, val_bytes = tokens[kept], None if val_bytes is None else val_bytes[kept]
    if args.max_docs or args.skip_docs:
        starts = np.append(np.flatnonzero(tokens == h.bos_id), len(tokens))
        first = starts[min(args.skip_docs, len(starts) - 1)]
        end = starts[min(args.skip_docs + args.max_docs, len(starts) - 1)] if args.max_docs else len(tokens)
        tokens, val_bytes = tokens[first:end], None if val_bytes is None else val_bytes[first:end]
        if len(tokens) < 2:
            raise SystemExit(f"--skip-docs {args.skip_docs} leaves no document of --val")
    torch.manual_seed(0)
    ours = tg.GPT(h)
    if args.artifact:
        ours.load_state_dict(tg.dequantize(quantized))
    else:
        with torch.no_grad():  # random but not degenerate: the zero-initialised outputs get weights
            for p in ours.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    ours.looping = h.num_loops > 0
    ours = ours.to(device)
    ours.configure_kernels(device, h.fused_ce_enabled, fused_mlp=False, fused_qk=False)  # as train_gpt evaluates
    tables = tg.build_byte_tables(tg.load_tokenizer(args.tokenizer, h.vocab_size)).to(device)
    plan = tg.plan_ttt(tokens, h)
    for q in args.profile or ():
        if not 0 <= q < len(plan.batches):
            raise SystemExit(f"--profile {q}: the plan has batches 0..{len(plan.batches) - 1}")
    whole_shard = not (args.toy or args.max_docs or args.skip_docs)  # a projection needs the shard's lengths
    print(f"documents:{len(plan.starts)} tokens:{len(tokens)} batches:{len(plan.batches)} "
          f"longest_doc:{plan.lengths.max()} phase_ends:{plan.phase_ends} device:{device}", flush=True)
    compile_it = device.type == "cuda"
    results = {}
    if args.only != "ours":
        script = ro.script_in(args.reference)
        # the record's settings we fix (e.g. #2135's n-gram channels other than the token one) at their value
        fixed = {name: value for name, (value, _) in tg.RECORD_FIXED.items() if name in ro.record_env_names(script)}
        record_env = ro.record_env_for(h, script, base=dict(FUSED_CE_ENABLED="0"), RUN_ID=f"bench{os.getpid()}",
                                       **fixed)
        R = ro.import_record(record_env, script, name=f"record_ttt_{os.getpid()}", eager_newton_schulz=False)
        rh = R.Hyperparameters()
        rmodel = record_model(R, record_env, script, ours, device)
        if device.type == "cuda":
            rmodel = rmodel.bfloat16()
            R.restore_fp32_params(rmodel)
        for p in rmodel.parameters():
            p.requires_grad_(False)
        val = ro.RecordValData(R, tokens, args.tokenizer, h.vocab_size, device, val_bytes)
        torch.manual_seed(h.seed)  # the record draws its LoRA A from the global generator; ours from SEED
        with record_ngram_module(script) if getattr(rh, "ngram_tilt_enabled", False) else contextlib.nullcontext():
            bpb, nats, seconds, warm = run_record(R, rh, rmodel, val, device, compile_it)
        results["record"] = dict(bpb=bpb, nats=nats, seconds=seconds, warm=warm)
        print(f"record val_bpb:{bpb:.6f} scoring_seconds:{seconds:.2f} compile_warmup_seconds:{warm:.1f}", flush=True)
    if args.only != "record":
        state = {k: v.clone() for k, v in ours.state_dict().items()}
        torch.manual_seed(1)
        batch_seconds = []
        bpb, scores, seconds, warm, _, chunk_fn = run_ours(ours, tokens, tables, h, device, compile_it,
                                                          batch_seconds)
        bpb = bpb if val_bytes is None else sidecar_bpb(scores, val_bytes)  # ours' byte tables: no sidecar yet
        ours.load_state_dict(state)
        results["ours"] = dict(bpb=bpb, nats=our_doc_nats(scores, tokens, h.bos_id), seconds=seconds, warm=warm,
                               projection=(project_8gpu(plan, batch_seconds, seconds, len(plan.starts))
                                           if whole_shard else SUBSET_PROJECTION),
                               batch_seconds=batch_seconds, settings={**toy_env, **ours_env},
                               resolved=dataclasses.asdict(h))
        peak = (f" peak_memory_gib:{torch.cuda.max_memory_allocated(device) / 2**30:.1f}" if device.type == "cuda"
                else "")  # warm-up and scoring: what TTT_BATCH_SIZE is bounded by
        print(f"ours val_bpb:{bpb:.6f} scoring_seconds:{seconds:.2f} compile_warmup_seconds:{warm:.1f}{peak}")
        print(results["ours"]["projection"])
    if len(results) == 2:
        print(compare(results["record"], results["ours"]))
    if args.save:
        save(args.save, results[args.only] if args.only else results["ours"])
    for q in args.profile or ():  # after the save: the scoring above is the measurement, this its breakdown
        print(profile_batch(ours, tokens, tables, h, device, chunk_fn, q, batch_seconds[q]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
