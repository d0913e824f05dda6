"""Build a record folder in the challenge's format from train_gpt.py logs (at least 3 seeds of one configuration).

    python scripts/make_record.py --name SP8192_Golfrun --author "Ada" --github-id ada \
        logs/seed42.txt logs/seed314.txt logs/seed1337.txt

Writes records/track_10min_16mb/<date>_<name>/:
- train_gpt.py: the shipped file, ONE self-contained script built (train_gpt.build_shipped_file) from the source
  embedded in the logs, not from the working tree; its size must equal the code_bytes every log counted;
- requirements.txt; the logs (train_seed<N>.log);
- README.md: method, the Issue #1017 conditions and how each is met, hardware, reproduction, credits, the
  per-seed table and the significance line against the previous record's published per-seed scores;
- submission.json: the fields of the merged April 2026 records (track, per-seed results, mean, std, hardware,
  bytes, compliance, attribution).
Refuses: fewer than 3 seeds, a log given twice or a repeated seed, logs of different configurations or code,
interrupted/NaN/crashed runs, non-8-GPU runs (unless --allow-other-hardware), an artifact over 16,000,000 bytes,
training data read after 600 s, evaluation over 600 s, and names or dates that would write outside --out.
"""

import argparse
import datetime
import json
import re
import statistics
import sys
from pathlib import Path

import golflog
import seed_stats

REPO = Path(__file__).resolve().parents[1]
TRACK = "10min_16mb"
MIN_SEEDS = 3  # the challenge asks for enough runs to show p < 0.01; the records give 3 seeds
RECORD_GPUS = 8  # the track's hardware: 8xH100 SXM
LIMITS = dict(bytes_total=16_000_000, train_data_end_seconds=600.0, train_ms=600_000, eval_ms=600_000)
LIMIT_NAMES = dict(bytes_total="artifact bytes (model + shipped train_gpt.py)",
                   train_data_end_seconds="train_data_access_end_seconds (last read of training data)",
                   train_ms="train_time ms", eval_ms="eval_time ms")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# The record we reproduce (PR #1886), its published per-seed val_bpb: the default significance baseline.
PREVIOUS_RECORD = dict(name="PR #1886 (Fused softcap CE + TTT weight decay 2.0)",
                       bpb={"1337": 1.07009653, "42": 1.06919893, "314": 1.06942136})
REQUIREMENTS = """\
# Python 3.10+. On the GPU machine, torch with CUDA (the record used 8xH100 SXM, CUDA 12.8).
torch>=2.10
triton>=3.5
numpy
sentencepiece
brotli
# optional, faster attention on Hopper: FlashAttention 3 (flash_attn_interface); PyTorch's varlen attention otherwise
"""
CREDITS = """\
| Component | Origin |
|---|---|
| The stack reproduced here: fused softcap CE + TTT weight decay 2.0 | PR #1886 |
| GatedAttn, per-row int8 gates, alpha-scaled LoRA TTT with warm-start A | PR #1768, PR #1767 |
| Fused softcapped cross-entropy Triton kernel, MIN_LR 0.10, GPTQ reserve | PR #1787 (@nprime06) |
| VarLen attention, fused Triton MLP, per-document LoRA TTT | PR #1530 (@samacqua) |
| Phased TTT with global SGD between phases | PR #1610 (@romeerp), @dexhunter |
| Depth recurrence, parallel residuals | PR #1493 (@bigbag), PR #1523 (@EthanYangTW) |
| Polar Express Newton-Schulz coefficients | PR #1344 |
| Score-first (legal) TTT framework | PR #549 (@abaybektursun) |
| SP8192, GPTQ with SDClip | PR #1394 (@clarkkev) |
"""
ATTRIBUTION = {
    "base_stack": "PR #1886 (fused softcap CE + TTT weight decay 2.0)",
    "gated_attn_lora_ttt_warm_start": "PR #1768, PR #1767",
    "fused_softcap_ce": "@nprime06 (PR #1787)",
    "varlen_attention_fused_mlp_doc_lora_ttt": "@samacqua (PR #1530)",
    "phased_ttt": "@romeerp (PR #1610), @dexhunter",
    "depth_recurrence_parallel_residuals": "@bigbag (PR #1493), @EthanYangTW (PR #1523)",
    "polar_express_ns": "PR #1344",
    "legal_ttt_framework": "@abaybektursun (PR #549)",
    "sp8192_gptq_sdclip": "@clarkkev (PR #1394)",
}


def _required(value, path: Path, what: str):
    if value is None:
        raise SystemExit(f"{path}: no {what} in the log (crashed or unfinished run?)")
    return value


def _find(text: str, pattern: str, path: Path, what: str) -> str:
    return _required(re.search(pattern, text, re.M), path, what).group(1)


def hardware(text: str) -> tuple[int, str]:
    """(world size, device description) from the log's environment line and nvidia-smi table."""
    match = re.search(r"^python:\S+ torch:(\S+) .*? world_size:(\d+) device:(\S+)", text, re.M)
    if match is None:
        return 0, "unknown"
    world_size, device = int(match.group(2)), match.group(3)
    if not device.startswith("cuda"):
        return world_size, f"{world_size}x CPU"
    gpu = re.search(r"^\|\s+\d+\s+(NVIDIA [^|]*?)\s+(?:On|Off)\s+\|", text, re.M)
    return world_size, f"{world_size}x {gpu.group(1).strip() if gpu else 'CUDA GPU'}"


def parse_log(path: Path) -> dict:
    text = golflog.read_log(path)
    problem = golflog.failure(text)
    if problem:
        raise SystemExit(f"{path}: {problem}: not a valid record run")
    lines = golflog.run_lines(text)
    run = dict(log=Path(path), seed=_required(golflog.seed(lines), path, "seed"))
    run["config"] = golflog.resolved_config(text)
    run["sources"] = golflog.embedded_sources(text)
    run["steps"] = int(_find(lines, r"^train_time:\d+ms steps:(\d+)", path, "train_time line"))
    run["train_ms"] = int(_find(lines, r"^train_time:(\d+)ms steps:", path, "train_time line"))
    run["train_data_end_seconds"] = float(_find(lines, r"^train_data_access_end_seconds:([0-9.]+)", path,
                                                "train_data_access_end_seconds line (a run of older code?)"))
    scores = {label: _required(golflog.final_score(lines, label), path, label) for label in golflog.FINAL_LABELS}
    run["prequant"], run["quantized"], run["ttt"] = (scores[label][1] for label in golflog.FINAL_LABELS)
    run["val_loss"] = scores["final_ttt_exact"][0]
    run["eval_ms"] = int(_find(lines, r"^eval_time:(\d+)ms \(", path, "total eval_time line"))
    run["bytes_total"] = int(_find(lines, r"^artifact_total_bytes:(\d+)", path, "artifact_total_bytes"))
    run["bytes_code"] = int(_find(lines, r"^artifact_model_bytes:\d+ code_bytes:(\d+)", path, "code_bytes"))
    run["bytes_model"] = int(_find(lines, r"^artifact_model_bytes:(\d+)", path, "artifact_model_bytes"))
    run["torch"] = _find(lines, r"^python:\S+ torch:(\S+)", path, "versions line")
    run["world_size"], run["hardware"] = hardware(lines)
    return run


def check_limits(run: dict) -> None:
    for key, limit in LIMITS.items():
        if run[key] > limit:
            raise SystemExit(f"{run['log']}: {LIMIT_NAMES[key]} {run[key]:,} is over the challenge limit {limit:,}: "
                             "not a valid record")


def check_runs(runs: list[dict], allow_other_hardware: bool) -> None:
    """One configuration, one code, one hardware, each seed once, at least MIN_SEEDS seeds."""
    paths = [r["log"].resolve() for r in runs]
    for i, path in enumerate(paths):
        if path in paths[:i]:
            raise SystemExit(f"{runs[i]['log']} is given twice: give each seed's log once")
    seeds = [r["seed"] for r in runs]
    for i, seed in enumerate(seeds):
        if seed in seeds[:i]:
            other = runs[seeds.index(seed)]["log"]
            raise SystemExit(f"{runs[i]['log']} and {other} are both seed {seed}: give each seed's log once")
    if len(runs) < MIN_SEEDS:
        raise SystemExit(f"{len(runs)} seed(s) given: a record needs at least {MIN_SEEDS} seeds of one "
                         "configuration (the significance test needs their spread)")
    first = runs[0]
    for run in runs:
        check_limits(run)
        diff = golflog.config_differences(first["config"], run["config"])
        if diff:
            raise SystemExit(f"{run['log']} is not a seed of the configuration of {first['log']}: it differs in "
                             f"{', '.join(diff[:8])}")
        if set(run["sources"]) != {"train_gpt.py", "kernels.py"}:
            raise SystemExit(f"{run['log']}: the log does not embed both train_gpt.py and kernels.py")
        if run["sources"] != first["sources"]:
            changed = [n for n in first["sources"] if first["sources"][n] != run["sources"].get(n)]
            raise SystemExit(f"{run['log']} ran other code than {first['log']} ({', '.join(changed)} differ): "
                             "every seed must run the shipped file")
        if run["hardware"] != first["hardware"]:
            raise SystemExit(f"{run['log']} ran on {run['hardware']}, {first['log']} on {first['hardware']}")
        on_record_gpus = run["world_size"] == RECORD_GPUS and not run["hardware"].endswith("CPU")
        if not (on_record_gpus or allow_other_hardware):
            raise SystemExit(f"{run['log']} ran on {run['hardware']}: a record runs on {RECORD_GPUS} GPUs (8xH100 "
                             "SXM); pass --allow-other-hardware to package it anyway")


def shipped_file(runs: list[dict]) -> bytes:
    """The shipped train_gpt.py, built from the sources the logs embed; its size must be what each run counted."""
    sys.path.insert(0, str(REPO))
    import train_gpt
    shipped = train_gpt.build_shipped_file(runs[0]["sources"])
    minified = {name: train_gpt.minify_source(text, name) for name, text in runs[0]["sources"].items()}
    assert train_gpt.shipped_sources(shipped) == minified, "the shipped file does not hold the logs' source"
    for run in runs:
        if run["bytes_code"] != len(shipped):
            raise SystemExit(f"{run['log']}: the run counted code_bytes:{run['bytes_code']}, but the file built from "
                             f"its logged source is {len(shipped)} bytes (another brotli/lzma version than the run's?): "
                             "build the record with the run's environment")
    return shipped


def significance(runs: list[dict], baseline: dict) -> str:
    new = dict(nats=[r["val_loss"] for r in runs], bpb=[r["ttt"] for r in runs])
    old = dict(nats=baseline.get("nats"), bpb=baseline["bpb"])
    result = seed_stats.compare(old, new, seed_stats.RULE_MARGIN_NATS)
    nats, bpb = result["nats"], result["bpb"]
    return (f"Against {baseline['name']} (published per-seed val_bpb {', '.join(f'{b:.8f}' for b in old['bpb'])}): "
            f"improvement {bpb['old_mean'] - bpb['new_mean']:+.5f} bpb ({nats['old_mean'] - nats['new_mean']:+.5f} "
            f"nats), bar {seed_stats.RULE_MARGIN_NATS} nats = {bpb['margin']:.5f} bpb, one-sided Welch "
            f"p = {nats['p_value']:.3g}: {'beats' if nats['p_value'] < seed_stats.RULE_P else 'does not beat'} it "
            f"by {seed_stats.RULE_MARGIN_NATS} nats at p < {seed_stats.RULE_P} (the challenge's rule).")


def readme(name: str, blurb: str, runs: list[dict], significance_line: str) -> str:
    rows = "\n".join(f"| {r['seed']} | {r['steps']} | {r['train_ms'] / 1000:.1f} | {r['train_data_end_seconds']:.1f} | "
                     f"{r['prequant']:.5f} | {r['quantized']:.5f} | **{r['ttt']:.8f}** | {r['eval_ms'] / 1000:.1f} | "
                     f"{r['bytes_total']:,} |" for r in runs)
    scores = [r["ttt"] for r in runs]
    first = runs[0]
    seeds_cmd = "\n".join(f"SEED={r['seed']} torchrun --standalone --nproc_per_node={first['world_size']} train_gpt.py"
                          for r in runs)
    return f"""# {name}

**val_bpb: {statistics.mean(scores):.8f}** (mean of {len(runs)} seeds, std {statistics.stdev(scores):.8f})

{blurb}

## Results

| seed | steps | train s | training data until s | pre-quant bpb | quantized bpb | post-TTT bpb | eval s | artifact bytes |
|---|---|---|---|---|---|---|---|---|
{rows}

{significance_line}

Artifact bytes = the brotli-compressed quantized model + the size of the shipped `train_gpt.py` ({first['bytes_code']:,}
bytes: the `train_gpt.py` and `kernels.py` of the logs, {sum(len(s.encode()) for s in first['sources'].values()):,} bytes,
minified (no comments, docstrings or blank lines) and compressed into one self-extracting file). "Training data until" is the last read of training data (the GPTQ
Hessians are collected inside the training clock).

## Method

An SP8192 GPT (11 x 512, GQA 8/4, partial RoPE, QK-norm with gain, XSA, per-head gated attention, LeakyReLU(0.5)^2
MLP, depth recurrence of layers 3-5, parallel residual lanes, U-Net skips, tied embeddings, logit softcap 30),
trained for 600 s with Muon (Polar Express Newton-Schulz) and Adam on a wallclock schedule with EMA; GPTQ int6
matrices and int7 embedding with SDClip, brotli-compressed; evaluated with phased, score-first, per-document LoRA
test-time training (rank 128, alpha 144, warm-start A, weight decay 2.0, global SGD between 3 phases). The fused
softcapped cross-entropy and fused MLP Triton kernels are used in training only.

## Legality (Issue #1017)

- **Condition 1 (causal):** every prediction at position t uses tokens before t only: causal attention within
  each document, and the LoRA that scores a chunk has learned only from earlier chunks of the same document
  (and, between phases, from documents already scored).
- **Condition 2 (full normalised distribution):** each token is scored with a softmax over all 8192 pieces of the
  softcapped logits (eager `30 * tanh(logits / 30)`, no fused kernel in evaluation); bytes per token come from
  the tokenizer's pieces.
- **Condition 3 (score before update):** each 48-token chunk is scored, and its score is final, before the LoRA
  Adam step on that chunk; the global SGD after a phase uses only documents already scored.
- **Condition 4 (single pass):** one left-to-right pass over the validation set, no rescoring.
- No validation data during training; training data is last read at the GPTQ Hessians, inside the 600 s
  (`train_data_access_end_seconds` in each log).

## Hardware

{first['hardware']}, PyTorch {first['torch']}. Train <= 600 s, eval <= 600 s, artifact <= 16,000,000 bytes (all seeds).

## Reproduction

```bash
pip install -r requirements.txt
python data/cached_challenge_fineweb.py --variant sp8192   # or golfrun's scripts/download_data.py --variant sp8192
{seeds_cmd}
```

Every setting is the script's default except the seed; each log lists the resolved configuration and embeds the
source of `train_gpt.py` and `kernels.py` (identical in every log; the shipped `train_gpt.py` extracts it minified:
the same syntax tree without docstrings).

## Credits

{CREDITS}"""


def submission(name: str, author: str, github_id: str, date: str, blurb: str, runs: list[dict]) -> dict:
    scores, losses = [r["ttt"] for r in runs], [r["val_loss"] for r in runs]
    return dict(
        author=author, github_id=github_id, name=name, date=date, track=TRACK, blurb=blurb,
        val_bpb=round(statistics.mean(scores), 8), val_bpb_std=round(statistics.stdev(scores), 8),
        val_loss=round(statistics.mean(losses), 8), val_loss_std=round(statistics.stdev(losses), 8),
        seeds=[r["seed"] for r in runs],
        seed_results={str(r["seed"]): dict(val_bpb=round(r["ttt"], 8), val_loss=round(r["val_loss"], 8),
                                           pre_quant_val_bpb=round(r["prequant"], 8),
                                           quantized_val_bpb=round(r["quantized"], 8), steps=r["steps"],
                                           train_time_seconds=r["train_ms"] / 1000,
                                           train_data_access_end_seconds=r["train_data_end_seconds"],
                                           eval_time_seconds=r["eval_ms"] / 1000, artifact_bytes=r["bytes_total"])
                      for r in runs},
        hardware=runs[0]["hardware"], pytorch_version=runs[0]["torch"],
        bytes_total=max(r["bytes_total"] for r in runs), bytes_model=max(r["bytes_model"] for r in runs),
        bytes_code=runs[0]["bytes_code"],
        compliance=dict(train_under_600s=True, train_data_access_under_600s=True, eval_under_600s=True,
                        artifact_under_16mb=True, score_first_ttt=True, no_val_data_in_training=True,
                        three_seeds=len(runs) >= MIN_SEEDS),
        attribution=ATTRIBUTION,
    )


def record_folder(out_root: Path, date: str, name: str) -> Path:
    """records/track_10min_16mb/<date>_<name> inside out_root, or SystemExit for names that would leave it."""
    if not SAFE_NAME.match(name):
        raise SystemExit(f"--name {name!r}: use letters, digits, '.', '_' and '-' only (it names the folder)")
    try:
        datetime.date.fromisoformat(date)
    except ValueError:
        raise SystemExit(f"--date {date!r}: give an ISO date such as 2026-04-30") from None
    root = (out_root / f"track_{TRACK}").resolve()
    folder = (root / f"{date}_{name}").resolve()
    if folder.parent != root:
        raise SystemExit(f"{folder} is outside {root}: choose another --name/--date")
    if folder.exists():
        raise SystemExit(f"{folder} exists: remove it or choose another --name/--date")
    return folder


def make_record(logs, name, author, github_id, blurb, out_root: Path, date: str, allow_other_hardware=False,
                baseline: dict | None = None) -> Path:
    folder = record_folder(Path(out_root), date, name)
    runs = [parse_log(Path(p)) for p in logs]
    check_runs(runs, allow_other_hardware)
    runs.sort(key=lambda r: r["seed"])
    shipped = shipped_file(runs)
    line = significance(runs, baseline or dict(name=PREVIOUS_RECORD["name"], bpb=list(PREVIOUS_RECORD["bpb"].values())))
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_bytes(shipped)
    (folder / "requirements.txt").write_text(REQUIREMENTS)
    for run in runs:
        (folder / f"train_seed{run['seed']}.log").write_bytes(run["log"].read_bytes())
    (folder / "README.md").write_text(readme(name, blurb, runs, line))
    (folder / "submission.json").write_text(json.dumps(submission(name, author, github_id, date, blurb, runs),
                                                       indent=2) + "\n")
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="train_gpt.py logs, one per seed (at least 3)")
    parser.add_argument("--name", required=True, help="folder name part: letters, digits, '.', '_', '-'")
    parser.add_argument("--author", required=True)
    parser.add_argument("--github-id", required=True)
    parser.add_argument("--blurb", default="golfrun: a readable reproduction of the 'Fused softcap CE + TTT weight "
                                           "decay 2.0' stack.")
    parser.add_argument("--out", type=Path, default=REPO / "records")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="ISO date, the folder's prefix")
    parser.add_argument("--allow-other-hardware", action="store_true",
                        help="package runs that did not run on 8 GPUs (not a valid record; for rehearsals)")
    parser.add_argument("--baseline-submission", type=Path,
                        help="the previous record's submission.json for the significance line (default: PR #1886's "
                             "published per-seed scores)")
    args = parser.parse_args(argv)
    baseline = None
    if args.baseline_submission:
        baseline = dict(seed_stats.published_scores(args.baseline_submission), name=str(args.baseline_submission))
    print(make_record(args.logs, args.name, args.author, args.github_id, args.blurb, args.out, args.date,
                      args.allow_other_hardware, baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
