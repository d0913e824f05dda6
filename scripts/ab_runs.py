"""A/B runs of train_gpt.py on one GPU (or lanes of --nproc GPUs: below): variants (named sets of settings over a
base recipe) x seeds at a fixed wallclock, resumable, and a report per variant against the base (markdown table
and PNG).

    # the plan and the commands, nothing run
    python scripts/ab_runs.py run --workdir ab_runs/w1 --base RECIPE=2135 --seeds 1,2,3 \
        --variant qk525=QK_GAIN_INIT=5.25 --eval-variant chunk36=TTT_CHUNK_SIZE=36 --dry-run
    # the same without --dry-run runs them one after the other; --detach starts the runner in a new session
    # (setsid) and returns at once
    python scripts/ab_runs.py run --workdir ab_runs/w1 ... --detach
    # the report from whatever logs exist, as often as needed (--wait S: first wait up to S s for the runner)
    python scripts/ab_runs.py report --workdir ab_runs/w1 --md ab.md --plot ab.png [--wait 540] [--pack logs.tar.xz]

A variant is NAME=KEY=VALUE[,KEY=VALUE...] over the base (--base KEY=VALUE[,...], repeatable), or a line
`NAME KEY=VALUE ...` of a --variants file (# comments). Every KEY must be a train_gpt.py setting; the harness
owns SEED (--seeds), RUN_ID, ARTIFACT_PATH, DATA_PATH, TOKENIZER_PATH, DATA_DIR and VAL_MAX_TOKENS, and a
variant may not change MAX_WALLCLOCK_SECONDS (the comparison is at a fixed wallclock). Every run's settings are
checked by train_gpt.py's own loader before anything runs; a variant whose settings resolve to the base's, and
fewer than 3 seeds, are refused.

Eval-only variants (--eval-variant NAME=KEY=VALUE[,...], or a line `eval NAME KEY=VALUE ...`) are not trained:
each evaluates its seed's base artifact (EVAL_ONLY=1 ARTIFACT_PATH=artifacts/base_s<SEED>.golf, train_gpt.py
adopting the artifact's model config) with other TTT or n-gram tilt settings, as its own run (RUN_ID
<NAME>_s<SEED>). Both sides of a pair then score one model: the difference is the setting's effect without the
training seed's noise, for a fraction of a trained run's cost. Their keys must be evaluation settings, the fields
of train_gpt.py's Hyperparameters from TTT_ENABLED on (EVAL_KEYS); a setting that acts before the artifact exists
(training, model, quantization, compression) is refused: train it as a --variant. They run right after their
seed's base; one whose base failed, or whose base artifact is missing, is reported as not run (blocked) with
why; one measured on an artifact that has since been replaced (the base ran again: the exit records' sha256
differ) runs again. Their p is the one-sided paired t-test (seed_stats has only Welch's, which would count the
training noise that pairing removed); their pre-quant and quantized bpb, steps and bytes are the base's.

Quantize-only variants (--quant-variant NAME=KEY=VALUE[,...], or a line `quant NAME KEY=VALUE ...`) are not
trained either: each quantizes, packs and evaluates its seed's base weights again (QUANTIZE_ONLY=1
PREQUANT_PATH=models/base_s<SEED>.pt, which every base run writes: ~135 MB at the recipe's size) with other
quantization or compression settings, the fields of train_gpt.py's Hyperparameters from
GPTQ_CALIBRATION_BATCHES up to TTT_ENABLED (QUANT_KEYS): GPTQ, clip sigmas, bits, LQER, AWQ-lite, the codec.
The same settings as the base's rebuild its artifact byte for byte, so the difference is the setting's effect
on one trained model (GPTQ_CALIBRATION_BATCHES also sizes the Hessian time a training run holds back from its
steps: that part of its effect is left out), paired like an eval-only variant's (blocked while the base's
weights are missing, run again when the base ran again); their pre-quant bpb and steps are the base's, their
quantized bpb, bytes and eval time their own.

Where a TTT setting's effect lies in the documents: `report --positions` adds, per eval-only variant against the
base (and each --against), the difference a target in each bucket of positions in the document (the logs'
ttt_position_nats lines, written since session 19), and `--weigh-val VAL.bin` what they add up to with the
buckets weighted by another val's targets: the A/B's thin val stops at --val-max-doc-tokens, so it holds fewer
late positions than the whole val (its buckets past the thin val's last take that bucket's difference).

Resuming: each run is WORKDIR/logs/<NAME>_s<SEED>.txt. A rerun of the same command (any subset of the
variants and seeds, or new ones) skips finished runs (the log's closing `eval_time:... (inside:` line, no
interruption or error), sets aside unfinished ones (to WORKDIR/attempts/) and starts them again; a run that
failed (non-zero exit, not an interruption) is reported and left alone unless --retry-failed. A run cut short
after writing its artifact (its log states the artifact's bytes, the file has them: the machine went away
during its evaluation) is not run again: its evaluation is, from that artifact (RUN_ID <NAME>_s<SEED>_finish,
EVAL_ONLY=1, its settings and seed; no train shards needed); its final score, eval and TTT compile time are
that evaluation's, the rest its own log's. Runs go seed by
seed (base, then each variant), so a cut-short session leaves whole seed pairs. WORKDIR/plan.json keeps the
definitions: a name redefined, another base or another data selection is refused (use a new --workdir), and so
is a base whose settings resolve otherwise than when the workdir began (a recipe such as golf changed). To
resume on a fresh machine, bring back `report --pack FILE` (the logs and plan, one file) and unpack it into the
workdir first (`mkdir -p W && tar -xJf FILE -C W`). The pack leaves out the artifacts (~16 MB each at the
recipe's size) and the base's weights: eval-only variants of seeds trained elsewhere need
WORKDIR/artifacts/base_s<SEED>.golf back, quantize-only ones WORKDIR/models/base_s<SEED>.pt. Such a workdir
may go on from a --data of val files alone (a GPU call carries 64 MiB: three artifacts, or the train shards,
not both): its eval-only variants run, and the runs that train or quantize are reported as not run.

Data (--data, default ../shared/data/proxy2_caseops/datasets/proxy2_caseops; `.bin.xz` shards are unpacked into
WORKDIR/data): the train shards as they are, and a val subset of whole documents, every --val-every-th (8)
document no longer than --val-max-doc-tokens (8192), with its byte sidecar. PHASED_TTT_PREFIX_DOCS (the
recipe's, or a variant's, in the challenge's units) is scaled by the kept documents / 50,000 (FineWeb val).
All runs share compile caches in WORKDIR/cache (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR, and
TRITON_CACHE_AUTOTUNING=1 so that the fused MLP kernel's autotuning is done once).

GPUs: a run uses one GPU, or --nproc N of this machine (torchrun --standalone; a workdir keeps its count). The
step-counted settings follow N (a step and the Hessians take 1/N of one GPU's time). --gpus 0,1,... runs lanes
side by side, --nproc GPUs each (CUDA_VISIBLE_DEVICES): each lane takes the next run of the queue as it comes
free, and an eval-only variant waits for its seed's base. Runs side by side share the host's CPU cores (compile,
data loading, packing) and disk; whether a capped run then trains as many steps as alone is not measured here:
compare the table's train steps. At the challenge's scale, on 8 GPUs with the FineWeb CaseOps download, whole
val, the recipe's 600 s and packing:

    python scripts/ab_runs.py run --workdir ab_runs/full --nproc 8 \
        --base RECIPE=2135,MAX_WALLCLOCK_SECONDS=600,COMPRESSOR=pergroup --variant qk525=QK_GAIN_INIT=5.25 \
        --data data/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved --val-every 1 \
        --val-max-doc-tokens 1000000000 \
        --tokenizer data/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model

Scale (SCALE below, each overridable with --base): MAX_WALLCLOCK_SECONDS=60 and COMPRESSOR=brotli, and the
settings counted in steps scaled to the run's length (step_scaled: at 60 s, ~59 steps, EMA_DECAY=0.7056
and MUON_MOMENTUM_WARMUP_STEPS=18 for #2135's 0.9965 and 1,500; without them the evaluated EMA weights of a 60 s run
were 81% the initial random ones). Why:
- What a run costs, measured on one H100 (docs/BENCHMARKS.md, 2026-12-05, fifteenth and sixteenth sessions),
  RECIPE=2135 at this scale: a base run with cold caches 474-538 s from launch to exit (first step 161-200 s
  with the 20 warm-up steps, 54-55 steps of ~0.99 s, GPTQ 7-11 s, brotli 12-17 s and a second pass for the
  over-budget shrink, TTT compile warm-up 144-154 s, TTT ~55-66 s at chunk 48); with the caches warm 222 s
  (first step 44 s, TTT compile 14 s). An eval-only run whose TTT shapes are new (TTT_CHUNK_SIZE=36) 299 s, of
  which 203 s compile warm-up and 82.6 s TTT (TTT_SHORT_SCORE_FIRST_STEPS, more chunk sizes: 216 s warm-up);
  with shapes already compiled, ~100 s is expected (not measured yet). The TTT compile, not the scoring, is
  most of an eval-only run's cost.
- So 30 minutes of one GPU (start ~1.5 min, refused starts 1.5-3 min each) buy the three base seeds cold and
  little else. The caches of a session (235 MB; 8.9 MB as xz -9e) and the base artifacts (~15.8 MB each, under
  the 16 MiB a returned file may hold) come back with the pack: a later session carries them instead of the
  train shards and spends its time on eval-only variants, each ~200 s for its first seed and ~100 s for the
  others.
- 60 s of training is 54-60 steps of 786,432 tokens after the Hessian reserve (0.90-0.91 s a step on an H200,
  docs/runs/2026-12-05*/whole60_*; 0.99 s on an H100): one pass over at most 47M tokens, within 5 of
  proxy2_caseops' 7 train shards (shards 0-4: what fits the 64 MiB a GPU call carries), so no token is seen
  twice. The val subset (612 documents, 474,998 tokens, 283 TTT chunk steps at chunk 48, 66 s on an H100)
  leaves out the 29 documents over 8,192 tokens (11% of val tokens; the longest, 37,845 tokens, alone is 789
  chunk steps); the prefix is 31 documents. The phase does not scale down: its pause waits for the batches in
  flight on the other 7 virtual GPUs (TTT_RECORD_WORLD_SIZE), so 512 of the 612 documents are scored before it
  (at full scale ~2,960 of 50,000), and the SGD trains on the 31 shortest of them, 7,751 tokens, less than one
  GLOBAL_TTT_CHUNK_TOKENS chunk (the last, partial chunk is never trained on): no step (the report says so).
  Phase settings are not measured at this scale.
- What it resolves: the report gives the base's seed std s and, for n seeds each, the smallest difference
  that reaches p < 0.25 (t(0.75, 2n-2) x s x sqrt(2/n) = 0.60 s at n = 3) and p < 0.05 (1.74 s). Measured at
  this scale: s = 0.00362 over seeds 1 and 2 (0.0022 for p < 0.25), and seed 1 run twice moved 0.0025 (54 and
  55 capped steps, GPU nondeterminism). The runs see ~1% of a challenge run's tokens:
  training-side variants are measured early in training, eval-side ones (TTT) on a weak model; a difference
  found here is a candidate to confirm at full scale, not a result. An eval-only variant's paired differences
  have no training noise: their sd (the table's `sd of Δ`) is what its p rests on, and it is not known
  before the first session measures it either.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import difflib
import hashlib
import json
import lzma
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
import golflog  # noqa: E402
import seed_stats  # noqa: E402
import train_gpt as tg  # noqa: E402

TRAIN_GPT = REPO / "train_gpt.py"
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_DATA = SHARED_DATA / "proxy2_caseops" / "datasets" / "proxy2_caseops"
DEFAULT_TOKENIZER = SHARED_DATA / "tokenizers" / f"fineweb_8192_bpe{tg.CASEOPS_SUFFIX}.model"
SCALE = dict(MAX_WALLCLOCK_SECONDS="60", COMPRESSOR="brotli")  # see the docstring; --base overrides
# Settings counted in steps follow the run's length: the recipe's EMA (0.9965) and Muon momentum warm-up (1,500
# steps) are sized for the ~4,990 steps of its 600 s on 8xH100; after a 60 s run's ~59 steps that EMA would still
# hold 0.9965^59 = 81% of the initial random weights. Each is scaled by the run's steps / FULL_STEPS (the EMA's
# averaging window 1 / (1 - decay) with them) unless --base sets it (step_scaled).
FULL_STEPS = 4_990  # #2135's three seed logs: 4,983-5,001 steps in 600 s
# RECIPE=2135 on one H200, a whole 300 s run (docs/BENCHMARKS.md, tenth session): the step, and the 67 GPTQ
# Hessians' probe (the cap holds GPTQ_RESERVE_SECONDS + HESSIAN_RESERVE_FACTOR x it back: 5.24 s). On N GPUs of one
# host both divide by N (each rank a share of the micro-batches and of the calibration batches): 923 / 8 = 115 ms
# a step against the record's 120 ms on 8xH100 (its logs).
H200_SECONDS_PER_STEP, H200_HESSIAN_PROBE_SECONDS = 0.923, 3.79
VAL_EVERY, VAL_MAX_DOC_TOKENS = 8, 8192
FINEWEB_VAL_DOCS = 50_000  # the challenge's val set: what a recipe's PHASED_TTT_PREFIX_DOCS is a share of
MIN_SEEDS = 3  # the leaderboard's practical rule: p over >= 3 seeds
BASE = "base"
# a variants file's line `eval NAME KEY=VALUE ...` is an eval-only variant, `quant NAME ...` a quantize-only one
HARNESS_KEYS = ("SEED", "RUN_ID", "ARTIFACT_PATH", "DATA_PATH", "TOKENIZER_PATH", "DATA_DIR", "VAL_MAX_TOKENS",
                "EVAL_ONLY", "QUANTIZE_ONLY", "PREQUANT_PATH")
# What an eval-only variant may set: train_gpt.Hyperparameters' fields from TTT_ENABLED on (TTT and the n-gram
# tilt), all read only after the artifact exists; every field before it acts on training, the model, quantization
# or compression, or is the harness's (tests/test_ab_runs.py checks the boundary on train_gpt.py's code).
EVAL_FROM = "ttt_enabled"
_FIELDS = [f.name for f in dataclasses.fields(tg.Hyperparameters)]
EVAL_KEYS = tuple(name.upper() for name in _FIELDS[_FIELDS.index(EVAL_FROM):])
# What a quantize-only variant may set: the fields from GPTQ_CALIBRATION_BATCHES to TTT_ENABLED, read only once
# the trained weights exist (tests/test_ab_runs.py checks this boundary too)
QUANT_FROM = "gptq_calibration_batches"
QUANT_KEYS = tuple(name.upper() for name in _FIELDS[_FIELDS.index(QUANT_FROM):_FIELDS.index(EVAL_FROM)])


# the figures of a trained variant's table row, all its own
TRAINED_FIGURES = ("prequant", "quantized", "steps", "eval_s", "bytes")


class DerivedKind(NamedTuple):
    """A kind of variant that reuses its seed's base run instead of training (the other variants train)."""
    label: str  # in the report and in messages
    keys: tuple[str, ...]  # the settings it may change
    what: str  # ... in words
    flag: str  # its command-line flag
    listed: str  # the plan's list of its names
    reads: str  # the base's file it reads: "artifact" or "prequant" (its sha256 is in the exit records)
    own: tuple[str, ...]  # the figures of its table row that are its own (TRAINED_FIGURES' others are the base's)
    shared: str  # the score it shares with its base (the same file, the same evaluation): checked equal
    shared_what: str  # ... in words


DERIVED_KINDS = {
    "eval": DerivedKind("eval-only", EVAL_KEYS, "evaluation settings", "--eval-variant", "eval_only", "artifact",
                        ("eval_s",), "quantized", "roundtrip (quantized) score of its base's artifacts"),
    "quant": DerivedKind("quantize-only", QUANT_KEYS, "quantization and compression settings", "--quant-variant",
                         "quant_only", "prequant", ("quantized", "eval_s", "bytes"), "prequant",
                         "pre-quant score of its base's weights"),
}


def kind_phrase(kind: str | None) -> str:
    """'a trained', 'an eval-only', 'a quantize-only': a variant of this kind, in a sentence."""
    label = DERIVED_KINDS[kind].label if kind else "trained"
    return f"{'an' if label[0] in 'aeiou' else 'a'} {label}"
FIXED_KEYS = ("MAX_WALLCLOCK_SECONDS",)  # the base's for every variant: the comparison is at a fixed wallclock
# resolved settings that differ between the runs of one variant
PER_RUN_FIELDS = ("seed", "run_id", "artifact_path", "eval_only", "quantize_only", "prequant_path")
PASS_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_VISIBLE_DEVICES",
            "OMP_NUM_THREADS", "TRITON_INTERPRET")  # from the caller; everything else comes from the plan
# ... and the machine's settings of NCCL, PyTorch and NVSHMEM: a GPU host may need them kept (the lent H200s keep
# NVLink multicast off, NCCL_NVLS_ENABLE=0 and TORCH_SYMM_MEM_DISABLE_MULTICAST=1, for their GPUs' sake)
PASS_ENV_PREFIXES = ("NCCL_", "GLOO_", "NVSHMEM_", "TORCH_", "PYTORCH_")
# torchrun stops its ranks on these; SIGHUP left out, as the runner ignores it (a closed terminal stops nothing)
TORCHRUN_SIGNALS = dict(PET_SIGNALS_TO_HANDLE="SIGTERM,SIGINT,SIGQUIT")  # torchrun --signals-to-handle
CLOSING_LINE = re.compile(r"^eval_time:\d+ms \(inside:", re.M)  # train_gpt.py's last line of a finished run
SIGNALLED = "interrupted: KeyboardInterrupt"  # a run stopped by a signal (SIGTERM, Ctrl-C): to be run again
FINISH = "_finish"  # RUN_ID suffix of the evaluation that finishes a run cut short after writing its artifact
P_LEVELS = (0.25, 0.05)  # the resolvable differences the report states
ITEM_SPLIT = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*=)")  # a comma before the next KEY=


def fail(message: str):
    raise SystemExit(f"error: {message}")


# -----------------------------------------------------------------------------
# The plan: base, variants, seeds, each run's settings
# -----------------------------------------------------------------------------

def parse_pairs(items: list[str], where: str) -> dict[str, str]:
    """KEY=VALUE items (each may hold several, comma-separated) -> {KEY: VALUE}, names checked. A comma starts a
    new item only before KEY=: a value may hold commas (TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24)."""
    known = {f.name.upper() for f in dataclasses.fields(tg.Hyperparameters)} | set(tg.RECORD_FIXED)
    out = {}
    for item in (part for text in items for part in ITEM_SPLIT.split(text) if part.strip()):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            fail(f"{where}: {item!r} is not KEY=VALUE (e.g. QK_GAIN_INIT=5.25)")
        if key in HARNESS_KEYS:
            fail(f"{where}: {key} is set by the harness (seeds: --seeds; data: --data, --val-every; "
                 "evaluation of the base's artifacts: --eval-variant)")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            fail(f"{where}: {key} is not a train_gpt.py setting" + (f" (did you mean {close[0]}?)" if close else ""))
        out[key] = value.strip().rstrip(",")  # a trailing or doubled comma is not part of the value
    return out


def parse_variants(specs: list[str], derived: dict[str, list[str]], path: Path | None) -> tuple[dict, dict]:
    """--variant NAME=KEY=VALUE[,...], {kind: its flag's NAME=KEY=VALUE[,...] specs} of the derived kinds
    (--eval-variant, --quant-variant) and the lines `NAME KEY=VALUE ...`, `eval NAME ...`, `quant NAME ...` of a
    variants file -> ({name: settings}, {name: kind} of the derived variants)."""
    entries = [(spec.partition("=")[0], [spec.partition("=")[2]], f"--variant {spec}", None) for spec in specs]
    entries += [(spec.partition("=")[0], [spec.partition("=")[2]], f"{DERIVED_KINDS[kind].flag} {spec}", kind)
                for kind, given in derived.items() for spec in given]
    if path is not None:
        if not path.is_file():
            fail(f"--variants {path}: no such file")
        for number, text in enumerate(path.read_text().splitlines(), 1):
            words = text.split("#", 1)[0].split()
            kind = words[0] if len(words) > 1 and words[0] in DERIVED_KINDS else None
            if words:
                entries.append((words[bool(kind)], words[bool(kind) + 1:], f"{path}:{number}", kind))
    variants, kinds = {}, {}
    for name, pairs, where, kind in entries:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in (BASE, *DERIVED_KINDS):
            fail(f"{where}: the variant name must be letters, digits, '_' or '-', not '{BASE}', "
                 f"{' or '.join(repr(k) for k in DERIVED_KINDS)} (e.g. qk525=QK_GAIN_INIT=5.25)")
        if name in variants:
            fail(f"{where}: variant {name} is defined twice")
        env = parse_pairs(pairs, where)
        if not env:
            fail(f"{where}: variant {name} sets nothing (NAME=KEY=VALUE)")
        for key in FIXED_KEYS:
            if key in env:
                fail(f"{where}: {key} is the base's for every variant (the A/B is at a fixed wallclock)")
        derived = DERIVED_KINDS.get(kind)
        for key in env if derived else ():
            if key not in derived.keys:
                fail(f"{where}: {key} is not one of the {derived.what} that a {derived.flag} may change "
                     f"({derived.keys[0]} to {derived.keys[-1]} in train_gpt.py's Hyperparameters); train it as a "
                     "variant (--variant)")
        variants[name] = env
        kinds.update({name: kind} if kind else {})
    return variants, kinds


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds {text}: give whole numbers, comma-separated (e.g. 1,2,3)")
    if len(set(seeds)) < len(seeds):
        fail(f"--seeds {text}: a seed is repeated")
    if len(seeds) < MIN_SEEDS:
        fail(f"--seeds {text}: a p-value needs at least {MIN_SEEDS} seeds (e.g. --seeds 1,2,3)")
    return seeds


def run_id(name: str, seed: int) -> str:
    return f"{name}_s{seed}"


def resolve(env: dict[str, str], where: str, nproc: int) -> tg.Hyperparameters:
    """train_gpt.py's own reading of these settings (ranges, names, invariants at nproc ranks), or one error line."""
    try:
        h = tg.load_hyperparameters(env)
        tg.validate_hyperparameters(h, world_size=nproc)
    except ValueError as err:
        fail(f"{where}: {err}")
    return h


def step_scaled(h: tg.Hyperparameters, nproc: int) -> dict[str, str]:
    """The settings counted in steps, scaled for a run of h's length on nproc H200s: ITERATIONS, or fewer where the
    cap less the Hessian reserve ends it first."""
    reserve = h.gptq_reserve_seconds + tg.HESSIAN_RESERVE_FACTOR * H200_HESSIAN_PROBE_SECONDS / nproc
    capped = (h.max_wallclock_seconds - reserve) * nproc / H200_SECONDS_PER_STEP
    steps = min(h.iterations, max(1.0, capped)) if h.max_wallclock_seconds > 0 else h.iterations
    ratio = min(1.0, steps / FULL_STEPS)
    return dict(EMA_DECAY=f"{max(0.0, 1 - (1 - h.ema_decay) / ratio):.4f}",
                MUON_MOMENTUM_WARMUP_STEPS=str(round(h.muon_momentum_warmup_steps * ratio)))


def scaled_prefix(prefix: int, val_docs: int) -> int:
    """A recipe's PHASED_TTT_PREFIX_DOCS (a share of FineWeb val's documents) for the kept val documents."""
    return 0 if prefix <= 0 else max(1, round(prefix * val_docs / FINEWEB_VAL_DOCS))


def nproc(plan: dict) -> int:
    return plan.get("nproc", 1)  # a plan written before --nproc: one GPU


def kind_of(plan: dict, name: str) -> str | None:
    """A derived variant's kind ("eval", "quant"); None for the base and the trained variants."""
    return next((kind for kind, derived in DERIVED_KINDS.items() if name in plan.get(derived.listed, ())), None)


def artifact_path(name: str, seed: int) -> str:
    return f"artifacts/{run_id(name, seed)}.golf"


def prequant_path(seed: int) -> str:
    """The base run's unquantized weights (PREQUANT_PATH), which its quantize-only variants read."""
    return f"models/{run_id(BASE, seed)}.pt"


def base_file(kind: str, seed: int) -> str:
    """The file of its seed's base run that a derived variant reads."""
    return artifact_path(BASE, seed) if DERIVED_KINDS[kind].reads == "artifact" else prequant_path(seed)


def run_env(plan: dict, name: str, seed: int) -> dict[str, str]:
    """The settings of one run: base, variant, the harness's own, and the scaled TTT prefix. An eval-only
    variant evaluates the base's artifact of its seed (EVAL_ONLY=1: train_gpt.py adopts its model config); a
    quantize-only one quantizes the base's weights, which the base run writes (PREQUANT_PATH).
    VAL_MAX_TOKENS is the whole val subset: every run scores its every target, whatever its EVAL_SEQ_LEN (the
    records' cut to whole EVAL_SEQ_LEN lengths would drop a variant's own share of the last document)."""
    rid = run_id(name, seed)
    kind = kind_of(plan, name)
    env = {**plan["base"], **plan["variants"].get(name, {}), "SEED": str(seed), "RUN_ID": rid,
           "VAL_MAX_TOKENS": str(plan["data"]["val_tokens"]),
           "ARTIFACT_PATH": artifact_path(BASE if kind == "eval" else name, seed), "DATA_PATH": "data",
           "TOKENIZER_PATH": f"data/{plan['data']['tokenizer']}", **({"EVAL_ONLY": "1"} if kind == "eval" else {}),
           **({"QUANTIZE_ONLY": "1"} if kind == "quant" else {}),
           **({"PREQUANT_PATH": prequant_path(seed)} if name == BASE or kind == "quant" else {})}
    prefix = resolve(env, f"run {rid}", nproc(plan)).phased_ttt_prefix_docs
    env["PHASED_TTT_PREFIX_DOCS"] = str(scaled_prefix(prefix, plan["data"]["val_docs"]))
    return env


def check_plan(plan: dict) -> None:
    """Every run resolves; no variant resolves to the base's settings or to another variant's of its kind
    (an eval-only, a quantize-only and a trained variant of the same settings measure different things)."""
    resolved = {}
    for name in [BASE, *plan["variants"]]:
        settings = json.dumps(resolved_settings(plan, name), sort_keys=True)
        kinds = (None, *DERIVED_KINDS) if name == BASE else (kind_of(plan, name),)
        for key in ((kind, settings) for kind in kinds):
            if key in resolved:
                fail(f"variant {name} runs the same settings as {resolved[key]} (at this scale): drop it or "
                     "change it")
            resolved[key] = name


def resolved_settings(plan: dict, name: str) -> dict:
    """A variant's (or the base's) resolved settings, those that differ between its runs aside."""
    h = dataclasses.asdict(resolve(run_env(plan, name, plan["seeds"][0]), f"variant {name}", nproc(plan)))
    return {k: v for k, v in h.items() if k not in PER_RUN_FIELDS}


def merge_plan(workdir: Path, plan: dict) -> dict:
    """The plan stored in the workdir, extended by this one; a changed definition is refused."""
    path = workdir / "plan.json"
    if not path.exists():
        if not plan["data"]["train_shards"]:
            fail("--data holds no train shards (fineweb_train_*.bin[.xz]): a new workdir trains its base first. "
                 "Only a workdir whose bases trained elsewhere (its pack and artifacts brought back) goes on "
                 "without them, running its eval-only variants")
        return dict(plan, base_ran=resolved_settings(plan, BASE))  # what its runs mean, should the code change
    stored = json.loads(path.read_text())
    if not plan["data"]["train_shards"]:  # the train shards stayed behind: the same selection otherwise
        plan = dict(plan, data=dict(plan["data"], train_shards=stored["data"]["train_shards"]))
    if nproc(stored) != nproc(plan):
        fail(f"{path} holds runs on {nproc(stored)} GPU(s) each: use a new --workdir for runs on {nproc(plan)} "
             f"(or --nproc {nproc(stored)})")
    if stored["data"] != plan["data"]:
        fail(f"{path} holds runs of another data ({json.dumps(stored['data'])[:300]}): use a new --workdir")
    # the base compared by meaning: a setting given in --base at the value the stored base resolves to continues
    # it (a workdir planned before step_scaled holds the recipe's EMA_DECAY and momentum warm-up)
    was, now = resolved_settings(stored, BASE), resolved_settings(plan, BASE)
    ran = stored.get("base_ran", {})  # what the stored base meant when its runs began (absent from older plans)
    drift = ", ".join(f"{k.upper()} {ran[k]} then, {was[k]} now" for k in was if k in ran and ran[k] != was[k])
    if drift:
        fail(f"{path}'s base means other settings now than when its runs began ({drift}): train_gpt.py or its "
             "recipe changed since; use a new --workdir")
    changed = ", ".join(f"{k.upper()} {was[k]} there, {now[k]} now" for k in now if was[k] != now[k])
    if changed:
        fail(f"{path} holds runs of another base ({changed}): use a new --workdir, or give its values in --base")
    for name, env in plan["variants"].items():
        if stored["variants"].get(name, env) != env:
            fail(f"variant {name} was {stored['variants'][name]} in {path}: give the new one another name")
        if name in stored["variants"] and kind_of(stored, name) != kind_of(plan, name):
            fail(f"variant {name} was {kind_phrase(kind_of(stored, name))} variant in {path}: give the new one "
                 "another name")
    lists = {d.listed: list(dict.fromkeys([*stored.get(d.listed, []), *plan[d.listed]]))
             for d in DERIVED_KINDS.values()}
    return dict(stored, variants={**stored["variants"], **plan["variants"]}, **lists,
                seeds=stored["seeds"] + [s for s in plan["seeds"] if s not in stored["seeds"]])


# -----------------------------------------------------------------------------
# Data: the train shards and a val subset of whole documents, in WORKDIR/data
# -----------------------------------------------------------------------------

def source_files(data: Path, pattern: str) -> list[Path]:
    """The shards of one kind in --data, unpacked or `.xz`, in order (numbered names only)."""
    found = {}
    for path in sorted(data.glob(pattern + ".bin")) + sorted(data.glob(pattern + ".bin.xz")):
        found.setdefault(path.name.split(".")[0], path)
    return [found[k] for k in sorted(found)]


def shard_tokens(path: Path) -> np.ndarray:
    """A shard's tokens (its header checked by train_gpt.py's reader), `.xz` unpacked in memory."""
    if path.suffix != ".xz":
        return np.asarray(tg.read_shard(path))
    raw = lzma.decompress(path.read_bytes())
    header = np.frombuffer(raw, dtype="<i4", count=tg.SHARD_HEADER_WORDS)
    if header[0] != tg.SHARD_MAGIC or len(raw) != tg.SHARD_HEADER_WORDS * 4 + 2 * int(header[2]):
        fail(f"{path}: not a whole challenge shard once unpacked")
    return np.frombuffer(raw, dtype="<u2", offset=tg.SHARD_HEADER_WORDS * 4)


def shard_bytes(tokens: np.ndarray) -> bytes:
    header = np.zeros(tg.SHARD_HEADER_WORDS, dtype="<i4")
    header[:3] = tg.SHARD_MAGIC, tg.SHARD_VERSION, len(tokens)
    return header.tobytes() + tokens.astype("<u2").tobytes()


def select_documents(tokens: np.ndarray, bos_id: int, every: int, max_tokens: int) -> tuple[np.ndarray, int]:
    """Positions of the kept val documents' tokens: every `every`-th document (1-based) of at most
    `max_tokens` tokens, whole. The longest documents cost the most TTT time (one chunk step per chunk)."""
    starts = np.flatnonzero(tokens == bos_id)
    if len(starts) == 0 or starts[0] != 0:
        fail("the val shard does not start with BOS: not a stream of whole documents")
    ends = np.append(starts[1:], len(tokens))
    keep = [(s, e) for i, (s, e) in enumerate(zip(starts, ends)) if i % every == every - 1 and e - s <= max_tokens]
    if not keep:
        fail(f"--val-every {every} --val-max-doc-tokens {max_tokens} keep no val document")
    return np.concatenate([np.arange(s, e) for s, e in keep]), len(keep)


def plan_data(args, bos_id: int) -> tuple[dict, dict[str, bytes]]:
    """The data selection (stored in the plan) and the val files to write {name: bytes}."""
    if not args.data.is_dir():
        fail(f"--data {args.data}: no such folder (the shards: fineweb_train_*.bin[.xz], fineweb_val_*.bin[.xz])")
    if not args.tokenizer.is_file():
        fail(f"--tokenizer {args.tokenizer}: no such file")
    val, sidecars = source_files(args.data, "fineweb_val_[0-9]*"), source_files(args.data, "fineweb_val_bytes_*")
    train = source_files(args.data, "fineweb_train_*")
    if not val or len(sidecars) not in (0, len(val)):  # no train shards: a session of eval-only runs (merge_plan)
        fail(f"--data {args.data}: need val shards (found {len(val)}), a byte sidecar for each or none (found "
             f"{len(sidecars)})")
    # the val shards are one stream, as train_gpt.py reads them (an export may cut a document between two)
    tokens = np.concatenate([shard_tokens(p) for p in val])
    keep, docs = select_documents(tokens, bos_id, args.val_every, args.val_max_doc_tokens)
    files = {val[0].name.split(".")[0] + ".bin": shard_bytes(tokens[keep])}
    if sidecars:
        nbytes = np.concatenate([shard_tokens(p) for p in sidecars])
        if len(nbytes) != len(tokens):
            fail(f"--data {args.data}: the byte sidecars hold {len(nbytes)} entries, the val shards {len(tokens)} "
                 "tokens: not one export")
        files[sidecars[0].name.split(".")[0] + ".bin"] = shard_bytes(nbytes[keep])
    data = dict(val_every=args.val_every, val_max_doc_tokens=args.val_max_doc_tokens, val_docs=docs,
                val_tokens=len(keep), val_sha256={n: hashlib.sha256(b).hexdigest() for n, b in files.items()},
                train_shards=[p.name.split(".")[0] + ".bin" for p in train], tokenizer=args.tokenizer.name)
    return data, files


def write_data(args, workdir: Path, files: dict[str, bytes]) -> None:
    """WORKDIR/data: the val subset, the tokenizer, the train shards (unpacked from .xz, or linked)."""
    folder = workdir / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():  # rewritten only when different: a runner may be reading them
        if not (folder / name).is_file() or (folder / name).read_bytes() != blob:
            (folder / name).write_bytes(blob)
    shutil.copyfile(args.tokenizer, folder / args.tokenizer.name)
    for path in source_files(args.data, "fineweb_train_*"):
        target = folder / (path.name.split(".")[0] + ".bin")
        if target.exists():
            continue
        if path.suffix != ".xz":
            target.symlink_to(path.resolve())
            continue
        print(f"unpacking {path}", flush=True)
        part = target.with_suffix(".part")
        with lzma.open(path) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        part.rename(target)


# -----------------------------------------------------------------------------
# Runs: their state from their files, one at a time in the foreground or in a detached runner
# -----------------------------------------------------------------------------

def run_state(workdir: Path, rid: str) -> tuple[str, str]:
    """done (a finished, healthy log), failed (an error, or a non-zero exit that no signal caused), or pending
    (never run, cut short, stopped by a signal): with why."""
    log, exit_file = workdir / "logs" / f"{rid}.txt", workdir / "logs" / f"{rid}.exit.json"
    code = json.loads(exit_file.read_text()).get("returncode") if exit_file.exists() else None
    text = log.read_text(errors="replace") if log.exists() else ""
    problem = golflog.failure(text) if text else None
    if problem and SIGNALLED not in problem:
        return "failed", problem
    if not problem and CLOSING_LINE.search(golflog.run_lines(text)):
        return "done", ""
    if code not in (None, 0) and not problem:
        return "failed", f"exit code {code}: see console/{rid}.txt"
    return "pending", problem or ("cut short (no closing eval_time line)" if text else "not run")


def set_aside(workdir: Path, rid: str) -> None:
    """Move an unfinished attempt's files to WORKDIR/attempts/<RUN_ID>.<N>.* and drop its artifact (train_gpt.py
    refuses to start over an existing log or artifact) and its unquantized weights; a whole run's attempt takes
    the evaluation that finished it along (it scored the artifact about to be replaced)."""
    if not rid.endswith(FINISH):
        set_aside(workdir, rid + FINISH)
    attempts = workdir / "attempts"
    files = {"log.txt": workdir / "logs" / f"{rid}.txt", "exit.json": workdir / "logs" / f"{rid}.exit.json",
             "console.txt": workdir / "console" / f"{rid}.txt"}
    if any(f.exists() for f in files.values()):
        attempts.mkdir(exist_ok=True)
        n = 1 + max((int(p.name.split(".")[1]) for p in attempts.glob(f"{rid}.*")), default=0)
        for label, f in files.items():
            if f.exists():
                f.rename(attempts / f"{rid}.{n}.{label}")
    for f in [*(workdir / "artifacts").glob(f"{rid}.*"), *(workdir / "models").glob(f"{rid}.*")]:
        f.unlink()


def cache_env(workdir: Path) -> dict[str, str]:
    """Compile caches shared by the workdir's runs: Inductor's graphs, Triton's kernels and its autotuning."""
    cache = workdir.resolve() / "cache"
    return dict(TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"), TRITON_CACHE_DIR=str(cache / "triton"),
                TRITON_CACHE_AUTOTUNING="1")


def child_env(workdir: Path, env: dict[str, str]) -> dict[str, str]:
    passed = {k: v for k, v in os.environ.items() if k in PASS_ENV or k.startswith(PASS_ENV_PREFIXES)}
    return {**passed, "PYTHONUNBUFFERED": "1", **cache_env(workdir), **env}


def launcher(gpus: int) -> list[str]:
    """The command that starts train_gpt.py on this many GPUs of this machine."""
    if gpus == 1:
        return [sys.executable, str(TRAIN_GPT)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", str(TRAIN_GPT)]


# The runner's runs in progress (one per lane, each waited on by a thread) and its stop: a stopped runner
# terminates them and writes no exit record (each then counts as cut short, to be run again).
IN_PROGRESS: set[subprocess.Popen] = set()
STOPPED: set[subprocess.Popen] = set()  # the runs the stop terminated (a run that had ended keeps its exit)
STOPPING = threading.Event()
RUNS_LOCK = threading.Lock()  # a run starts, or the stop takes the runs, never both at once


def run_one(workdir: Path, env: dict[str, str], gpus: int = 1) -> int | None:
    """train_gpt.py in WORKDIR on `gpus` GPUs; its console to console/<RUN_ID>.txt, its exit to
    logs/<RUN_ID>.exit.json. Returns the exit code, or None when the runner stopped it."""
    rid = env["RUN_ID"]
    for sub in ("logs", "console", "artifacts", "models"):
        (workdir / sub).mkdir(exist_ok=True)
    t0 = time.time()
    with open(workdir / "console" / f"{rid}.txt", "w") as console:
        with RUNS_LOCK:
            if STOPPING.is_set():  # the stop came between this run's dispatch and its start
                return None
            proc = subprocess.Popen(launcher(gpus), cwd=workdir, env={**child_env(workdir, env), **TORCHRUN_SIGNALS},
                                    stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            IN_PROGRESS.add(proc)
        try:
            code = proc.wait()
        except BaseException:  # stopped while waiting in the caller's own thread (Ctrl-C)
            proc.terminate()
            proc.wait()
            raise
        finally:
            with RUNS_LOCK:
                IN_PROGRESS.discard(proc)
    if proc in STOPPED:
        return None
    exit_file = workdir / "logs" / f"{rid}.exit.json"
    # the files a base run writes and its derived variants read (DERIVED_KINDS): which versions a run saw
    files = dict(artifact=env["ARTIFACT_PATH"], prequant=env.get("PREQUANT_PATH"))
    shas = {f"{what}_sha256": tg.file_sha256(workdir / path) if path and (workdir / path).is_file() else None
            for what, path in files.items()}
    exit_file.write_text(json.dumps(dict(returncode=code, seconds=round(time.time() - t0, 1),
                                         host=socket.gethostname(), gpus=env.get("CUDA_VISIBLE_DEVICES"),
                                         artifact_path=env["ARTIFACT_PATH"], **shas)))
    return code


def stop_runs() -> None:
    """Terminate the runs in progress (train_gpt.py logs the signal and stops; torchrun passes it to its ranks),
    and start no other."""
    with RUNS_LOCK:
        STOPPING.set()
        running = [proc for proc in IN_PROGRESS if proc.poll() is None]
        STOPPED.update(running)
    for proc in running:
        proc.terminate()


def exit_record(workdir: Path, rid: str) -> dict:
    path = workdir / "logs" / f"{rid}.exit.json"
    return json.loads(path.read_text()) if path.exists() else {}


def artifact_lines(workdir: Path, plan: dict, name: str, seed: int) -> dict[str, str] | None:
    """For a run that packs its own artifact (the base, a trained or quantize-only variant) cut short or stopped
    by a signal (pending) after writing it: the fields of its log's artifact lines (model bytes, total, limit);
    else None. Its evaluation is then run from the artifact (EVAL_ONLY=1, the run's settings and seed: TTT draws
    from generators seeded by SEED, so it scores as the whole run would have), not the whole run again."""
    rid = run_id(name, seed)
    log = workdir / "logs" / f"{rid}.txt"
    if kind_of(plan, name) == "eval" or not log.is_file() or run_state(workdir, rid)[0] != "pending":
        return None
    run = golflog.run_lines(log.read_text(errors="replace"))
    total = golflog.line(run, "artifact_total_bytes")
    return {**golflog.fields(golflog.line(run, "artifact_model_bytes")), **golflog.fields(total)} if total else None


def artifact_here(workdir: Path, name: str, seed: int, stated: dict[str, str] | None) -> bool:
    """The run's artifact is here with the bytes its log's artifact lines (artifact_lines) state."""
    artifact = workdir / artifact_path(name, seed)
    return bool(stated) and artifact.is_file() and stated.get("artifact_model_bytes") == str(artifact.stat().st_size)


def finishable(workdir: Path, plan: dict, name: str, seed: int) -> bool:
    """A run cut short after writing its artifact whose artifact is here as its log states: its evaluation can
    run."""
    return artifact_here(workdir, name, seed, artifact_lines(workdir, plan, name, seed))


def needs_train_shards(workdir: Path, plan: dict, name: str, seed: int) -> bool:
    """Starting this run needs the train shards: it trains or quantizes (not eval-only), and is not a run cut
    after writing its artifact (finishable: only evaluated)."""
    return kind_of(plan, name) != "eval" and not finishable(workdir, plan, name, seed)


def result_state(workdir: Path, plan: dict, name: str, seed: int) -> tuple[str, str]:
    """run_state of a run, or for one cut short after writing its artifact, that of the evaluation finishing it
    (a finished evaluation stands without the artifact: a pack carries logs alone); one whose artifact is gone
    before its evaluation ran is to be trained again, one over the size limit failed (as the whole run would)."""
    rid = run_id(name, seed)
    stated = artifact_lines(workdir, plan, name, seed)
    if stated is None:
        return run_state(workdir, rid)
    total, limit = (golflog.number(stated.get(k)) for k in ("artifact_total_bytes", "limit"))
    if total is not None and limit is not None and total > limit:
        return "failed", f"artifact over budget: {total:,.0f} bytes > {limit:,.0f} (its log)"
    state, why = run_state(workdir, rid + FINISH)
    if state == "done":
        return state, f"cut short after writing its artifact; evaluated from it by {rid}{FINISH}"
    if not artifact_here(workdir, name, seed, stated):
        return run_state(workdir, rid)
    said = {"pending": "to be evaluated from it", "failed": "its evaluation from it failed"}[state]
    return state, f"cut short after writing its artifact, {said} by {rid}{FINISH} ({why})"


def launch(workdir: Path, plan: dict, name: str, seed: int) -> dict[str, str]:
    """The settings of the run to start for this variant and seed: its own, or for a run cut short after writing
    its artifact (finishable), those of the evaluation that finishes it: EVAL_ONLY=1 on that artifact."""
    env = run_env(plan, name, seed)
    if not finishable(workdir, plan, name, seed):
        return env
    env = {k: v for k, v in env.items() if k not in ("QUANTIZE_ONLY", "PREQUANT_PATH")}
    return dict(env, RUN_ID=env["RUN_ID"] + FINISH, EVAL_ONLY="1")


def base_blocker(workdir: Path, plan: dict, kind: str, seed: int) -> str | None:
    """Why a derived variant of this kind and seed cannot run now: its base run is not done, or the base's file
    it reads (the artifact, the unquantized weights) is gone."""
    rid, needed = run_id(BASE, seed), base_file(kind, seed)
    state, why = result_state(workdir, plan, BASE, seed)
    if state != "done":
        return f"not run: base {rid} {'failed (' + why + ')' if state == 'failed' else 'not done yet'}"
    if not (workdir / needed).is_file():
        return (f"not run: the base's {needed} is missing (the base ran elsewhere, or before it wrote one?): "
                f"bring it back, or move logs/{rid}.* away to train the base again")
    return None


def paired_state(workdir: Path, plan: dict, name: str, seed: int) -> tuple[str, str]:
    """run_state, and for a derived variant: a finished run on another version of the base's file than the
    present one (the base ran again) is pending; one not run is blocked while its base is not done or that file
    is gone."""
    rid, kind = run_id(name, seed), kind_of(plan, name)
    state, why = result_state(workdir, plan, name, seed)
    if kind is None:
        return state, why
    key = f"{DERIVED_KINDS[kind].reads}_sha256"
    base_rid = run_id(BASE, seed)  # the base's exit, or that of the evaluation finishing it
    present = (exit_record(workdir, base_rid) or exit_record(workdir, base_rid + FINISH)).get(key)
    measured = exit_record(workdir, rid).get(key)
    if state == "done" and measured and present and measured != present:
        return "pending", f"measured on an earlier {base_file(kind, seed)}, whose base ran again since"
    if state == "pending":
        blocker = base_blocker(workdir, plan, kind, seed)
        return ("blocked", blocker) if blocker else (state, why)
    return state, why


def queue(plan: dict, names: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """Seed by seed, the base first, then its derived variants (on its artifact or weights), then the trained
    ones: a session cut short leaves whole pairs."""
    ordered = sorted(names, key=lambda name: kind_of(plan, name) is None)
    return [(name, seed) for seed in seeds for name in [BASE, *ordered]]


def runner_pid(workdir: Path) -> int | None:
    """The pid of a live runner of this workdir on this host (another process), or None."""
    lock = workdir / "runner.json"
    held = json.loads(lock.read_text()) if lock.exists() else {}
    pid = held.get("pid")
    return pid if held.get("host") == socket.gethostname() and pid != os.getpid() and _alive(pid) else None


def take_lock(workdir: Path) -> Path:
    """One runner per workdir: a live one is refused; a stale lock (a runner gone) is taken over."""
    pid = runner_pid(workdir)
    if pid is not None:
        fail(f"a runner (pid {pid}) is already working in {workdir}: wait for it (report --wait) or stop it first")
    lock = workdir / "runner.json"
    lock.write_text(json.dumps(dict(host=socket.gethostname(), pid=os.getpid(), started=time.time())))
    return lock


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


NO_TRAIN_SHARDS = "not run: it trains or quantizes, and WORKDIR/data lacks the train shards (--data held none)"


def train_shards_here(workdir: Path, plan: dict) -> bool:
    return all((workdir / "data" / name).is_file() for name in plan["data"]["train_shards"])


def why_run(workdir: Path, plan: dict, name: str, seed: int, retry_failed: bool) -> str | None:
    """Why this run is to run now (its state's reason), or None, said, when it is not to run."""
    state, why = paired_state(workdir, plan, name, seed)
    kind = kind_of(plan, name)
    blocker = state == "failed" and retry_failed and kind and base_blocker(workdir, plan, kind, seed)
    if blocker:
        state, why = "blocked", blocker
    starts = state == "pending" or (state == "failed" and retry_failed)
    if starts and not train_shards_here(workdir, plan) and needs_train_shards(workdir, plan, name, seed):
        state, why = "blocked", NO_TRAIN_SHARDS
    if state in ("done", "blocked") or (state == "failed" and not retry_failed):
        rerun = "; --retry-failed reruns it" if state == "failed" else ""
        print(f"{run_id(name, seed)}: {state}{' (' + why + rerun + ')' if why else ''}", flush=True)
        return None
    return why


def run_queue(workdir: Path, plan: dict, todo: list[tuple[str, int]], retry_failed: bool,
              lanes: list[str | None]) -> None:
    """The runs of todo, in its order, on the lanes (each a CUDA_VISIBLE_DEVICES value; None: the runner's own
    GPUs), one run a lane at a time: a lane that comes free takes the next run that can start (an eval-only
    variant waits while its seed's base is queued or running)."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGHUP, signal.SIGTERM)}  # given back after
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup-friendly: a closed terminal does not stop the runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the runs in progress too, then exit
    lock = take_lock(workdir)
    STOPPING.clear()
    STOPPED.clear()
    waiting, free = list(todo), list(lanes)
    running = {}  # future -> ((variant, seed), lane)
    pool = ThreadPoolExecutor(max_workers=len(lanes))
    try:
        while waiting or running:
            queued = list(waiting)
            for position, (name, seed) in enumerate(queued):
                if not free:
                    break
                ahead = ({run_id(*item) for item in queued[:position] if item in waiting}
                         | {run_id(*item) for item, _ in running.values()})
                if kind_of(plan, name) and run_id(BASE, seed) in ahead:
                    continue  # the first waiting run never waits: nothing is ahead of it
                waiting.remove((name, seed))
                why = why_run(workdir, plan, name, seed, retry_failed)
                if why is None:
                    continue
                env, lane = launch(workdir, plan, name, seed), free.pop(0)
                rid = env["RUN_ID"]  # the run, or the evaluation finishing it
                set_aside(workdir, rid)
                print(f"{time.strftime('%H:%M:%S')} {rid}: running{f' on GPUs {lane}' if lane else ''} ({why})",
                      flush=True)
                env.update({"CUDA_VISIBLE_DEVICES": lane} if lane else {})
                running[pool.submit(run_one, workdir, env, nproc(plan))] = ((name, seed), lane)
            if running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    (name, seed), lane = running.pop(future)
                    free.append(lane)
                    print(f"{time.strftime('%H:%M:%S')} {run_id(name, seed)}: exit {future.result()}, "
                          f"{result_state(workdir, plan, name, seed)[0]}", flush=True)
    finally:
        if running:
            stop_runs()
        pool.shutdown(wait=True)
        lock.unlink(missing_ok=True)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


# -----------------------------------------------------------------------------
# Report: per variant, from whatever logs exist
# -----------------------------------------------------------------------------

def run_record(workdir: Path, plan: dict, name: str, seed: int) -> dict:
    """A run's figures from its log; for one finished from its artifact (finishable), the training and packing
    figures from its own log, the scores' (final, eval and TTT compile time) from the evaluation's."""
    rid = run_id(name, seed)
    state, why = paired_state(workdir, plan, name, seed)
    exit_file = workdir / "logs" / f"{rid}.exit.json"
    wall = json.loads(exit_file.read_text()).get("seconds") if exit_file.exists() else None
    rec = dict(name=name, seed=seed, rid=rid, state=state, why=why, wall=wall, path=workdir / "logs" / f"{rid}.txt")
    if state != "done":
        return rec
    trained = facts = golflog.facts(golflog.read_log(rec["path"]))
    if run_state(workdir, rid)[0] != "done":  # finished by its evaluation: the scores are there
        rec["path"] = workdir / "logs" / f"{rid}{FINISH}.txt"
        facts = golflog.facts(golflog.read_log(rec["path"]))
    bpb = {label: score["bpb"] for label, score in facts["scores"].items()}
    cut = {label: score["bpb"] for label, score in trained["scores"].items()}
    number = golflog.number
    sources = [trained["sources"]] + ([facts["sources"]] if facts["sources"] != trained["sources"] else [])
    rec.update(final=seed_stats.read_log(rec["path"])["bpb"], prequant=cut.get("final_prequant_exact"),
               quantized=cut.get("final_roundtrip_exact", bpb.get("final_roundtrip_exact")),
               finish_gap=(abs(cut["final_roundtrip_exact"] - bpb["final_roundtrip_exact"])
                           if trained is not facts and "final_roundtrip_exact" in cut else None),
               steps=number(trained["train"].get("steps")), eval_s=_seconds(facts["eval"].get("eval_time")),
               bytes=number(trained["total"].get("artifact_total_bytes")),
               first_step=number(trained["first_step"].get("first_step_done_since_launch")),
               ttt_compile=number(facts["ttt_compile"].get("ttt_compile_warmup_seconds")),
               code=hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:12],
               gpu=gpu_kind(facts["smi"]), sgd=facts["global_sgd"], config=trained["config"],
               positions=position_sums(facts))
    return rec


def gpu_kind(smi: dict | None) -> str | None:
    """The GPUs that evaluated a run (its final scores' log), e.g. '1x NVIDIA H100 80GB HBM3'; None on a CPU."""
    if not smi:
        return None
    return ", ".join(f"{n}x {name}" for name, n in collections.Counter(smi["gpus"]).items())


def position_sums(facts: dict) -> dict | None:
    """The final TTT's ttt_position_nats line (nats and targets per position bucket) and the val's bytes per
    target (from the final score's nats and bpb), or None (a log from before the line)."""
    f, score = facts["positions"], facts["scores"].get("final_ttt_exact")
    if "nats" not in f or not score or not score["bpb"] or score["nats"] is None:
        return None
    return dict(edges=[int(x) for x in f["edges"].split(",")], nats=[float(x) for x in f["nats"].split(",")],
                targets=[int(x) for x in f["targets"].split(",")],
                bytes_per_target=score["nats"] / (score["bpb"] * math.log(2)))


def _seconds(ms: str | None) -> float | None:
    value = golflog.number(ms)
    return None if value is None else value / 1000


def paired_p(differences: list[float]) -> float:
    """One-sided paired t-test p that the mean difference (variant - base) is below 0; an exact tie as
    seed_stats.one_sided_p takes it."""
    mean, sd = statistics.mean(differences), statistics.stdev(differences)
    if sd == 0:
        return 0.0 if mean < 0 else 1.0
    return float(seed_stats.stats.t.cdf(mean / (sd / math.sqrt(len(differences))), len(differences) - 1))


def summarize_variant(runs: list[dict], base_runs: list[dict], kind: str | None = None) -> dict:
    """seed_stats' numbers: the variant's mean and std over its finished seeds; against the base over the
    seeds both finished: the difference of means (the mean paired difference; paired_sd their std) and the
    one-sided p that the variant's mean final val_bpb is below the base's (margin 0), from 3 pairs on: Welch's
    (seed_stats) for a trained variant, the paired t-test for a derived one (seed_stats has none): both sides of
    a pair come from one trained model, so the training seed's noise, which Welch's test would count, is not in
    the differences. A trained variant's paired t-test p is there too (p_paired), for reading only: a seed gives
    both sides the same initial weights and data order where the variant leaves them alone.
    An eval-only variant's pre-quant and quantized bpb, steps and bytes are its base's (not repeated), a
    quantize-only one's pre-quant bpb and steps; base_gap says how far the score it shares with its base is from
    the base's (DerivedKind.shared: an eval-only variant's roundtrip of the same artifact, a quantize-only
    one's pre-quant score of the same weights)."""
    done = [r for r in runs if r["state"] == "done"]
    finals = [r["final"] for r in done]
    out = dict(done=len(done), seeds=len(runs), final=finals, mean=statistics.mean(finals) if finals else None,
               std=statistics.stdev(finals) if len(finals) > 1 else None, delta=None, p=None, p_paired=None,
               matched=0, paired=[], paired_sd=None)
    derived = DERIVED_KINDS.get(kind)
    for key in derived.own if derived else TRAINED_FIGURES:
        values = [r[key] for r in done if r.get(key) is not None]
        out[key] = statistics.mean(values) if values else None
    out["kind"] = kind
    if runs is base_runs:
        return out
    base = {r["seed"]: r for r in base_runs if r["state"] == "done"}
    matched = [r for r in done if r["seed"] in base]
    out["matched"] = len(matched)
    out["paired"] = [r["final"] - base[r["seed"]]["final"] for r in matched]
    out["paired_sd"] = statistics.stdev(out["paired"]) if len(matched) > 1 else None
    if matched:
        out["delta"] = statistics.mean(out["paired"])
    shared = derived.shared if derived else None
    gaps = [abs(r[shared] - base[r["seed"]][shared]) for r in matched
            if shared and r.get(shared) is not None and base[r["seed"]].get(shared) is not None]
    out["base_gap"] = max(gaps) if gaps else None
    if kind and len(matched) >= MIN_SEEDS:
        out["p"] = paired_p(out["paired"])
    elif len(matched) >= MIN_SEEDS:
        sides = [[base[r["seed"]] for r in matched], matched]
        result = seed_stats.compare(*[seed_stats.read_side([r["path"] for r in rs], side, [r["config"] for r in rs])
                                      for rs, side in zip(sides, ("old", "new"))], 0.0)
        out["p"], out["p_paired"] = result["bpb"]["p_value"], paired_p(out["paired"])
    return out


def collect(workdir: Path) -> tuple[dict, dict, list[dict]]:
    path = workdir / "plan.json"
    if not path.exists():
        fail(f"--workdir {workdir}: no plan.json (not an ab_runs workdir, or never run)")
    plan = json.loads(path.read_text())
    names = [BASE, *sorted(plan["variants"], key=lambda name: kind_of(plan, name) is None)]
    runs = [run_record(workdir, plan, name, seed) for seed in plan["seeds"] for name in names]
    by_name = {name: [r for r in runs if r["name"] == name] for name in names}
    return plan, {name: summarize_variant(rs, by_name[BASE], kind_of(plan, name))
                  for name, rs in by_name.items()}, runs


def resolvable(std: float | None, n: int) -> str:
    """The smallest difference of means that reaches each p level with n seeds a side at this std."""
    if std is None or n < 2:
        return "the base's seed std is not known yet (fewer than 2 finished base seeds)"
    cells = [f"p < {p}: {seed_stats.stats.t.ppf(1 - p, 2 * n - 2) * std * math.sqrt(2 / n):.5f}" for p in P_LEVELS]
    return f"base seed std {std:.5f} bpb; with {n} seeds a side a difference reaches " + ", ".join(cells)


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(plan: dict, stats: dict, runs: list[dict], workdir: Path) -> str:
    data, base = plan["data"], plan["base"]
    kept = "every document" if data["val_every"] == 1 else f"every {data['val_every']}th document"
    lines = [f"# A/B runs: {workdir.name}", "",
             f"Base: `{' '.join(f'{k}={v}' for k, v in base.items())}`; seeds {', '.join(map(str, plan['seeds']))}. "
             f"Val: {data['val_docs']} documents, {data['val_tokens']:,} tokens ({kept} of at most "
             f"{data['val_max_doc_tokens']} tokens); train shards: {len(data['train_shards'])}. "
             f"PHASED_TTT_PREFIX_DOCS scaled by {data['val_docs']}/{FINEWEB_VAL_DOCS}.", "",
             f"Final = post-TTT val_bpb (mean ± std over finished seeds); Δ = variant - base over the seeds both "
             f"finished (negative: the variant is better), sd of Δ its std over the seeds (when far below the "
             f"seeds' std, pairing removes seed noise that the unpaired Welch test still counts); p = one-sided Welch p that "
             f"the variant's mean is below the base's ({resolvable(stats[BASE]['std'], len(plan['seeds']))}); "
             f"beside it the one-sided paired t-test's p over the seeds (a seed gives both sides the same initial "
             f"weights and data order where the variant leaves them alone), to read, not the rule.", "",
             f"Eval-only variants (settings `eval-only: ...`) are not trained: each evaluates its seed's base artifact "
             f"(EVAL_ONLY=1), so Δ is the setting's effect on one model, free of training noise; their p (`paired`) "
             f"is the one-sided paired t-test on the differences, their pre-quant and quantized bpb, steps and bytes "
             f"are the base's (`= base`), and eval s is their own, on this val only: its documents stop at "
             f"{data['val_max_doc_tokens']} tokens, and a ratio of eval s does not carry to the whole val, whose long "
             f"documents take most of the TTT time (project it with scripts/ttt_cost.py). Quantize-only variants "
             f"(`quantize-only: ...`) "
             f"quantize, pack and evaluate each seed's base weights again (QUANTIZE_ONLY=1): paired likewise, "
             f"their pre-quant bpb and steps are the base's, their quantized bpb, eval s and bytes their own.", "",
             "| variant | settings | seeds done | final bpb | Δ vs base | sd of Δ | p | pre-quant bpb | quantized bpb | "
             "train steps | eval s | artifact bytes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in stats.items():
        settings = " ".join(f"{k}={v}" for k, v in plan["variants"].get(name, {}).items()) or "(the base)"
        final = "-" if s["mean"] is None else f"{s['mean']:.5f} ± {_f(s['std'], '.5f')}"
        p = _f(s["p"], ".4f") if s["p"] is not None or name == BASE else f"- ({s['matched']} pairs)"
        derived = DERIVED_KINDS.get(s["kind"])
        own = derived.own if derived else TRAINED_FIGURES  # the others are the base's
        trained = [_f(s[key], spec) if key in own else "= base"
                   for key, spec in (("prequant", ".5f"), ("quantized", ".5f"), ("steps", ".1f"))]
        size = _f(s["bytes"], ",.0f") if "bytes" in own else "= base"
        if s["kind"]:
            settings = f"{derived.label}: {settings}"
            p += " paired" if s["p"] is not None else ""
        elif s["p_paired"] is not None:
            p += f" (paired {s['p_paired']:.4f})"
        lines.append(f"| {name} | {settings} | {s['done']}/{s['seeds']} | {final} | {_f(s['delta'], '+.5f')} | "
                     f"{_f(s['paired_sd'], '.5f')} | {p} | {' | '.join(trained)} | {_f(s['eval_s'], '.1f')} | {size} |")
    lines += ["", "Runs (first step: seconds from launch, compile included; wall: the whole run):", "",
              "| run | state | final bpb | steps | first step s | TTT compile s | eval s | wall s | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['rid']} | {r['state']} | {_f(r.get('final'), '.5f')} | {_f(r.get('steps'), '.0f')} | "
                     f"{_f(r.get('first_step'), '.1f')} | {_f(r.get('ttt_compile'), '.1f')} | "
                     f"{_f(r.get('eval_s'), '.1f')} | {_f(r['wall'], '.0f')} | {r['why'][:100]} |")
    for name, s in stats.items():
        if s.get("base_gap"):  # the same file and evaluator score the same; kernels may differ in the last bits
            what = DERIVED_KINDS[s["kind"]].shared_what
            lines += ["", f"NOTE: {name}'s own {what} differs from the base's by up to {s['base_gap']:.2e} bpb: "
                      "not the same file, or a nondeterministic evaluation."]
    gaps = {r["rid"]: r["finish_gap"] for r in runs if r.get("finish_gap")}
    if gaps:  # one artifact, one evaluator: the roundtrip score again, to the last digit but for the kernels
        lines += ["", f"NOTE: evaluated again from their artifacts, {', '.join(gaps)} scored them up to "
                  f"{max(gaps.values()):.2e} bpb away from their own roundtrip score before the cut: a "
                  "nondeterministic evaluation, or not the same file."]
    idle = [r["rid"] for r in runs if r.get("sgd") and not any(steps for _, steps in r["sgd"])]
    if idle:  # e.g. a prefix of one GLOBAL_TTT_CHUNK_TOKENS chunk or less (the last, partial chunk never trains)
        most = max(tokens for r in runs if r["rid"] in idle for tokens, _ in r["sgd"])
        lines += ["", f"NOTE: the phased TTT's global SGD made 0 steps in {', '.join(idle)} (SGD data of at most "
                  f"{most:,} tokens): their phases trained nothing, so a PHASED_TTT_* or GLOBAL_TTT_* variant "
                  "whose runs made no step measures nothing here."]
    kinds = {}  # GPU kind -> the variants with a run evaluated on it
    for r in runs:
        if r.get("gpu"):
            kinds.setdefault(r["gpu"], {})[r["name"]] = None
    if len(kinds) > 1:
        listed = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in kinds.items())
        lines += ["", f"WARNING: the finished runs were evaluated on {len(kinds)} kinds of GPU ({listed}): eval s and "
                  "TTT compile s compare within a kind only, and the scores of different kinds may round "
                  "differently."]
    codes = {r["code"] for r in runs if r.get("code")}
    if len(codes) > 1:
        lines += ["", f"WARNING: the finished runs ran {len(codes)} different versions of train_gpt.py/kernels.py "
                  "(their logs' embedded sources differ): the comparison mixes code changes."]
    return "\n".join(lines) + "\n"


def against(plan: dict, runs: list[dict], ref: str) -> str:
    """Each other eval-only variant against the eval-only variant ref, paired on the same artifacts as against
    the base: a candidate built on a stack (the stack's settings and its own) reads as its own effect over it."""
    evaluated = [name for name in plan["variants"] if kind_of(plan, name) == "eval"]
    if ref not in evaluated:
        fail(f"--against {ref}: not an eval-only variant of this workdir (its eval-only variants: "
             f"{', '.join(evaluated) or 'none'}); only those share the base's artifacts seed by seed")
    by_name = {name: [r for r in runs if r["name"] == name] for name in evaluated}
    mine = plan["variants"][ref]
    lines = [f"## Against {ref}", "", f"Eval-only variants against {ref} on the same artifacts: Δ = variant - {ref} "
             "over the seeds both finished (negative: better), p the one-sided paired t-test; settings: where the "
             f"variant's differ from {ref}'s.", "",
             f"| variant | settings over {ref}'s | seeds done | Δ vs {ref} | sd of Δ | p | eval s ({ref}: "
             f"{_f(summarize_variant(by_name[ref], by_name[ref], 'eval')['eval_s'], '.1f')}) |",
             "|---|---|---|---|---|---|---|"]
    for name in evaluated:
        if name == ref:
            continue
        s = summarize_variant(by_name[name], by_name[ref], "eval")
        theirs = plan["variants"][name]
        over = [f"{k}={v}" for k, v in theirs.items() if mine.get(k) != v]
        over += [f"without {k}" for k in mine if k not in theirs]
        p = _f(s["p"], ".4f") if s["p"] is not None else f"- ({s['matched']} pairs)"
        lines.append(f"| {name} | {' '.join(over) or '(the same)'} | {s['done']}/{s['seeds']} | "
                     f"{_f(s['delta'], '+.5f')} | {_f(s['paired_sd'], '.5f')} | {p} | {_f(s['eval_s'], '.1f')} |")
    return "\n".join(lines) + "\n"


def val_positions(path: Path, bos_id: int) -> np.ndarray:
    """Targets per position bucket of a val shard (--weigh-val), bucketed as train_gpt's ttt_position_nats."""
    try:
        tokens = torch.from_numpy(shard_tokens(path).astype(np.int64))
    except (OSError, ValueError, lzma.LZMAError) as e:
        fail(f"--weigh-val {path}: {e}")
    if len(tokens) < 2 or tokens[0] != bos_id:
        fail(f"--weigh-val {path}: not a stream of whole documents (it must start with BOS {bos_id})")
    return torch.bincount(tg.position_buckets(tokens, bos_id), minlength=len(tg.POSITION_EDGES) + 1).numpy()


def by_position(plan: dict, runs: list[dict], ref: str, weigh: tuple[Path, np.ndarray] | None) -> str:
    """Each eval-only variant against ref (the base or an eval-only variant) per position bucket: the mean over
    matched seeds of the per-target difference in nats, and the difference in bpb both on this val and, with
    weigh (--weigh-val and its val_positions), with the buckets weighted by that val's targets (a thin val
    under-weighs late positions)."""
    names = [name for name in plan["variants"] if kind_of(plan, name) == "eval" and name != ref]
    mine = {r["seed"]: r["positions"] for r in runs if r["name"] == ref and r["state"] == "done" and r.get("positions")}
    edges, counts = (next(iter(mine.values()))[k] for k in ("edges", "targets")) if mine else (None, None)
    rows = []
    for name in names:
        pairs = [(r["positions"], mine[r["seed"]]) for r in runs
                 if r["name"] == name and r["state"] == "done" and r.get("positions") and r["seed"] in mine]
        if not pairs:
            continue
        if any(side["edges"] != edges or side["targets"] != counts for pair in pairs for side in pair):
            fail(f"--positions: the ttt_position_nats lines of {name} and {ref} count other buckets or targets (runs "
                 "of other train_gpt.py versions or another val): they do not pair")
        targets = np.array(counts, dtype=np.float64)
        per_target = np.mean([(np.array(v["nats"]) - np.array(b["nats"])) / np.maximum(targets, 1)
                              for v, b in pairs], axis=0)
        nats_per_bpb = math.log(2) * np.mean([b["bytes_per_target"] for _, b in pairs])  # per target
        rows.append((name, len(pairs), per_target, per_target @ targets / targets.sum() / nats_per_bpb, nats_per_bpb))
    if not rows:
        return (f"## By position in the document, against {ref}\n\nNo eval-only variant has seeds paired with {ref} "
                "whose logs have the ttt_position_nats line (logs of train_gpt.py before it lack it).\n")
    targets = np.array(counts)
    kept = np.flatnonzero(targets)
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip([0, *edges], edges)] + [f"{edges[-1]}+"]
    weights = None
    if weigh is not None:
        if list(edges) != list(tg.POSITION_EDGES):
            fail(f"the logs bucket positions at {edges}, this train_gpt.py at {list(tg.POSITION_EDGES)}: weigh them "
                 "with the train_gpt.py that ran them")
        weights = weigh[1].astype(np.float64)
        last = kept[-1]  # buckets this val has no targets in take the last one it has
    lines = [f"## By position in the document, against {ref}", "",
             f"Per eval-only variant: Δ nats a target ×1000 in each bucket of target positions (mean over the seeds "
             f"paired with {ref}), and the Δ bpb they add up to on this val"
             + (f" and with the buckets weighted by the targets of `{weigh[0]}` (its buckets past this val's last, "
                f"{labels[last]}, take that bucket's Δ; bytes a target as on this val)" if weights is not None else "")
             + ".", "",
             "| variant | pairs | " + " | ".join(f"{labels[b]} ({targets[b]:,})" for b in kept) + " | Δ bpb here |"
             + (" Δ bpb weighted |" if weights is not None else ""),
             "|---|---|" + "---|" * (len(kept) + 1 + (weights is not None))]
    for name, n, per_target, here, nats_per_bpb in rows:
        cells = " | ".join(f"{per_target[b] * 1e3:+.3f}" for b in kept)
        line = f"| {name} | {n} | {cells} | {here:+.5f} |"
        if weights is not None:
            filled = np.where(targets > 0, per_target, per_target[last])
            line += f" {filled @ weights / weights.sum() / nats_per_bpb:+.5f} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def plot(plan: dict, stats: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    names = list(stats)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    for i, name in enumerate(names):
        s = stats[name]
        left.scatter([i] * len(s["final"]), s["final"], color="C0", s=18)
        if s["mean"] is not None:
            left.errorbar([i + 0.15], [s["mean"]], yerr=[s["std"] or 0], fmt="s", color="C1", capsize=4)
        if s["delta"] is not None:
            right.bar(i, s["delta"], color="C2" if s["delta"] < 0 else "C3", alpha=0.6)
            right.scatter([i] * len(s["paired"]), s["paired"], color="black", s=12, zorder=3)
            if s["p"] is not None:
                right.annotate(f"p={s['p']:.3f}", (i, s["delta"]), ha="center", fontsize=8,
                               va="top" if s["delta"] < 0 else "bottom")
    for ax in (left, right):
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.grid(alpha=0.3)
    left.set_ylabel("final (post-TTT) val_bpb")
    left.set_title("per seed (dots), mean ± std (squares)")
    right.axhline(0, color="black", linewidth=0.8)
    right.set_ylabel("variant - base, val_bpb (matched seeds)")
    right.set_title("variant - base (bar: mean, dots: seeds; < 0: better)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def pack(workdir: Path, path: Path) -> None:
    """plan.json and every log and exit record, one .tar.xz (the sources the logs embed compress away)."""
    with tarfile.open(path, "w:xz") as tar:
        tar.add(workdir / "plan.json", "plan.json")
        for f in sorted((workdir / "logs").glob("*")):
            tar.add(f, f"logs/{f.name}")


# -----------------------------------------------------------------------------
# Command line
# -----------------------------------------------------------------------------

def make_plan(args) -> tuple[dict, dict[str, bytes]]:
    given = parse_pairs(args.base, "--base")
    if args.nproc < 1:
        fail(f"--nproc {args.nproc}: give the GPUs a run uses, at least 1")
    if tg.MICRO_BATCHES % args.nproc:  # train_gpt.py's rule, said in this script's terms
        fail(f"--nproc {args.nproc}: a run's GPUs must divide its {tg.MICRO_BATCHES} micro-batches (1, 2, 4 or 8)")
    h = resolve({**SCALE, **given, "DATA_PATH": str(args.data), "TOKENIZER_PATH": str(args.tokenizer)}, "--base",
                args.nproc)
    scaled = {k: v for k, v in step_scaled(h, args.nproc).items() if k not in given}
    base = {**SCALE, **scaled, **given}  # check_plan resolves it
    variants, kinds = parse_variants(args.variant, {"eval": args.eval_variant, "quant": args.quant_variant},
                                     args.variants)
    seeds = parse_seeds(args.seeds)
    data, files = plan_data(args, h.bos_id)
    lists = {derived.listed: [name for name, k in kinds.items() if k == kind]
             for kind, derived in DERIVED_KINDS.items()}
    plan = dict(base=base, variants=variants, **lists, seeds=seeds, data=data, nproc=args.nproc)
    check_plan(plan)
    return plan, files


def command_line(env: dict[str, str], gpus: int) -> str:
    return " ".join(f"{k}={v}" for k, v in env.items()) + " " + " ".join(launcher(gpus))


def gpu_lanes(gpus: str | None, per_run: int) -> list[str | None]:
    """--gpus 0,1,2,3 with --nproc 2 -> ["0,1", "2,3"]: the CUDA_VISIBLE_DEVICES of each lane; none given: one
    lane on the runner's own GPUs."""
    if gpus is None:
        return [None]
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids) or len(set(ids)) < len(ids):
        fail(f"--gpus {gpus}: give distinct GPU numbers, comma-separated (e.g. --gpus 0,1)")
    if len(ids) % per_run:
        fail(f"--gpus {gpus}: {len(ids)} GPUs do not make lanes of --nproc {per_run}")
    return [",".join(ids[i:i + per_run]) for i in range(0, len(ids), per_run)]


def cmd_run(args, argv: list[str]) -> int:
    plan, files = make_plan(args)
    lanes = gpu_lanes(args.gpus, args.nproc)
    workdir = args.workdir
    merged = merge_plan(workdir, plan)
    todo = queue(merged, list(plan["variants"]), plan["seeds"])
    if args.dry_run:
        lanes_said = f"{len(lanes)} at a time (GPUs {' | '.join(lanes)})" if lanes != [None] else "one at a time"
        print(f"workdir {workdir}: {len(todo)} runs, seed by seed, {lanes_said}; val {plan['data']['val_docs']} "
              f"documents, {plan['data']['val_tokens']:,} tokens; {len(plan['data']['train_shards'])} train shards; "
              f"each run also gets {' '.join(f'{k}={v}' for k, v in cache_env(workdir).items())}")
        # the runner's test (why_run), before write_data: this --data's train shards or those already unpacked
        trains = bool(plan["data"]["train_shards"]) or train_shards_here(workdir, merged)
        for name, seed in todo:
            state, why = paired_state(workdir, merged, name, seed)
            base_pending = result_state(workdir, merged, BASE, seed)[0] == "pending"
            if state == "blocked" and base_pending and (trains or finishable(workdir, merged, BASE, seed)):
                state = "pending"  # its base runs (or is finished) first
            if state == "pending" and not trains and needs_train_shards(workdir, merged, name, seed):
                state, why = "blocked", NO_TRAIN_SHARDS
            note = f" # {why}" if state == "blocked" else ""
            env = launch(workdir, merged, name, seed)
            print(f"[{state}] (cd {workdir} && {command_line(env, nproc(merged))}){note}")
        return 0
    if runner_pid(workdir) is not None:
        take_lock(workdir)  # refused, before any file is touched
    write_data(args, workdir, files)
    (workdir / "plan.json").write_text(json.dumps(merged, indent=1))
    if args.detach:
        rest = [a for a in argv if a != "--detach"]
        with open(workdir / "runner.txt", "a") as out:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *rest], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        print(f"runner pid {proc.pid} started detached; its output: {workdir / 'runner.txt'}; "
              f"report: python {Path(__file__).name} report --workdir {workdir}")
        return 0
    try:
        run_queue(workdir, merged, todo, args.retry_failed, lanes)
    except OSError as err:  # writing a run's files: the other lanes' runs were stopped (cut short, run again)
        fail(f"the runner stopped: {err}")
    print(markdown(*collect(workdir), workdir))
    return 0


def cmd_report(args) -> int:
    deadline = time.time() + args.wait
    while time.time() < deadline and runner_pid(args.workdir) is not None:
        time.sleep(5)
    plan, stats, runs = collect(args.workdir)
    text = markdown(plan, stats, runs, args.workdir) + "".join("\n" + against(plan, runs, ref) for ref in args.against)
    if args.positions:
        weigh = None  # the weighing val, read once for every table
        if args.weigh_val:
            weigh = args.weigh_val, val_positions(args.weigh_val, resolve(plan["base"], "--base", 1).bos_id)
        text += "".join("\n" + by_position(plan, runs, ref, weigh) for ref in [BASE, *args.against])
    if args.md:
        args.md.write_text(text)
    if args.plot:
        plot(plan, stats, args.plot)
    if args.pack:
        pack(args.workdir, args.pack)
    print(text)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="plan and run (or --dry-run, --detach)")
    run.add_argument("--workdir", type=Path, required=True, help="the runs' folder (logs, data, caches)")
    run.add_argument("--base", action="append", default=[], help="KEY=VALUE[,...]: the base recipe's settings")
    run.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE[,KEY=VALUE]")
    run.add_argument("--eval-variant", action="append", default=[],
                     help="NAME=KEY=VALUE[,...]: evaluation settings only, run on the base's artifacts")
    run.add_argument("--quant-variant", action="append", default=[],
                     help="NAME=KEY=VALUE[,...]: quantization settings only, run on the base's unquantized weights")
    run.add_argument("--variants", type=Path,
                     help="a file of lines `NAME KEY=VALUE ...`, `eval NAME KEY=VALUE ...`, `quant NAME KEY=VALUE ...`")
    run.add_argument("--seeds", default="1,2,3", help="comma-separated, at least 3 (default 1,2,3)")
    run.add_argument("--nproc", type=int, default=1,
                     help="GPUs of this machine each run uses (torchrun --standalone); 8: the challenge's scale")
    run.add_argument("--gpus", help="run lanes side by side: these GPUs (e.g. 0,1,2,3), --nproc of them a lane; "
                                    "default: one run at a time on the visible GPUs")
    run.add_argument("--data", type=Path, default=DEFAULT_DATA, help="train and val shards (.bin or .bin.xz)")
    run.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER)
    run.add_argument("--val-every", type=int, default=VAL_EVERY, help="keep every Nth val document")
    run.add_argument("--val-max-doc-tokens", type=int, default=VAL_MAX_DOC_TOKENS, help="longest val document kept")
    run.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    run.add_argument("--detach", action="store_true", help="start the runner in a new session and return")
    run.add_argument("--retry-failed", action="store_true", help="run again the runs that failed")
    rep = sub.add_parser("report", help="the table (and plot) from whatever logs exist")
    rep.add_argument("--workdir", type=Path, required=True)
    rep.add_argument("--md", type=Path, help="write the markdown table here")
    rep.add_argument("--plot", type=Path, help="write the PNG here")
    rep.add_argument("--wait", type=float, default=0.0, help="first wait up to S seconds for the runner to end")
    rep.add_argument("--pack", type=Path, help="plan and logs as one .tar.xz, to resume elsewhere")
    rep.add_argument("--against", action="append", default=[], metavar="NAME",
                     help="also a table of the eval-only variants against this eval-only one, paired (e.g. "
                          "candidates built on a stack against the stack)")
    rep.add_argument("--positions", action="store_true",
                     help="also the eval-only variants' differences by position in the document (against the base "
                          "and each --against), from the logs' ttt_position_nats lines")
    rep.add_argument("--weigh-val", type=Path, metavar="VAL.bin",
                     help="with --positions: also weigh the position buckets by this val shard's targets (e.g. "
                          "the whole val, where the A/B ran a thin one)")
    env = sub.add_parser("cache-env", help="print the compile-cache variables its runs get (for `export $(...)`)")
    env.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "cache-env":
        print(" ".join(f"{k}={v}" for k, v in cache_env(args.workdir).items()))
        return 0
    if args.command == "report" and args.weigh_val and not args.positions:
        fail("--weigh-val weighs the --positions table: give --positions too")
    if args.command == "run":
        if args.val_every < 1 or args.val_max_doc_tokens < 1:
            fail("--val-every and --val-max-doc-tokens must be at least 1")
        return cmd_run(args, argv)
    return cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
