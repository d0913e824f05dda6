"""Build a record folder in the challenge's format from train_gpt.py logs (at least 3 seeds of one configuration).

    python scripts/make_record.py --name SP8192_Golfrun --author "Ada" --github-id ada \
        logs/seed42.txt logs/seed314.txt logs/seed1337.txt

Writes records/track_10min_16mb/<date>_<name>/ when the runs beat the best published result of their tokenizer
family by the challenge's bar (0.005 nats at p < 0.01), else records/track_non_record_16mb/<date>_<name>/:
- train_gpt.py: the shipped file, ONE self-contained script built (ship.build_shipped_file) from the source
  embedded in the logs, not from the working tree; its size must equal the code_bytes every log counted;
- requirements.txt (with what decompresses the artifact's code matrices: the lrzip program, the zpaq package);
  the logs (train_seed<N>.log);
- README.md, every statement read from the logs: results, the significance test, the configuration and the
  settings that differ from the recipe's defaults (the defaults of the code the logs embed), a technique summary
  of what the logged configuration enabled (either recipe's stack and the candidate settings), the Issue #1017
  conditions (the n-gram tilt's and CaseOps' byte counting included), hardware and versions, the reproduction
  commands, the recipe's lineage as credits;
- submission.json: the fields of the merged April 2026 records.
Refuses: fewer than 3 seeds, a log given twice, a repeated seed or one run under two seeds, logs of different
configurations or code, interrupted/NaN/crashed runs, a log that contradicts itself (a fact stated twice with two
values: scores, seed, hardware, byte parts, times, the configuration against the logged code), non-8-GPU runs
(unless --allow-other-hardware), an artifact over 16,000,000 bytes, training data read after 600 s, evaluation
over 600 s, and names or dates that would write outside --out.
"""

import argparse
import dataclasses
import datetime
import functools
import hashlib
import importlib.util
import json
import math
import re
import statistics
import sys
import tempfile
from pathlib import Path

import golflog
import seed_stats

REPO = Path(__file__).resolve().parents[1]
RECORD_TRACK, NON_RECORD_TRACK = "10min_16mb", "non_record_16mb"
MIN_SEEDS = 3  # the challenge asks for enough runs to show p < 0.01; the records give 3 seeds
RECORD_GPUS = 8  # the track's hardware: 8xH100 SXM
LIMITS = dict(bytes_total=16_000_000, train_data_end_seconds=600.0, train_ms=600_000, eval_ms=600_000)
LIMIT_NAMES = dict(bytes_total="artifact bytes (model + shipped train_gpt.py)",
                   train_data_end_seconds="train_data_access_end_seconds (last read of training data)",
                   train_ms="train_time ms", eval_ms="eval_time ms")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Settings that say where a run reads and writes, not what it does: they are not part of a configuration.
LOCATION_FIELDS = {"run_id", "artifact_path", "data_dir", "data_path", "tokenizer_path"}
# Settings that pick the defaults of the others (SMOKE=1's toy sizes; RECIPE's stack once train_gpt has it).
PRESET_FIELDS = ("recipe", "smoke")
DEFAULT_RECIPE = "1886"  # the recipe of logs that do not name one: train_gpt's defaults reproduce PR #1886
RUN_ID_SEED = re.compile(r"seed[_-]?(\d+)(?!\d)", re.I)  # a RUN_ID such as seed42 or fce_seed_42 names the seed
DATA_COMMANDS = {family: f"python scripts/download_data.py --variant {family} --train-shards 80"
                 for family in ("sp8192", "caseops")}  # the tokenizer families download_data.py fetches
ROUNDING = 0.5e-8  # the final lines print val_loss and val_bpb with 8 decimals
REQUIREMENTS = """\
# Python 3.10+. On the GPU machine, torch with CUDA (the record used 8xH100 SXM, CUDA 12.8).
torch>=2.10
triton>=3.5
numpy
sentencepiece
brotli
# optional, faster attention on Hopper: FlashAttention 3 (flash_attn_interface); PyTorch's varlen attention otherwise
"""
# The codecs of a per-group artifact's code matrices (train_gpt.CODES_CODECS), as a README names them, and what a
# reproduction needs installed beside requirements.txt to decompress them.
CODES_NAMES = {"lrzip": "lrzip's ZPAQ back end, level 9", "zpaq": "ZPAQ (the zpaq package)", "brotli": "brotli-11",
               "lzma": "lzma"}
CODES_SYSTEM_NEEDS = {"lrzip": "apt-get install lrzip"}
CODES_PIP_NEEDS = {"zpaq": "zpaq"}
# Each recipe's lineage, from its record's README and ../shared/reference/LEADERBOARD.md: (key in submission.json's
# attribution, component, origin). #2135 stacks on the lineage #1886 also comes from: its rows, then #1886's.
GATED_ATTN_CREDIT = ("gated_attn", "GatedAttn, per-row int8 gates", "PR #1768, PR #1767")  # #1886's gate, off in #2135
LINEAGE_1886 = [
    ("lora_ttt_warm_start", "Alpha-scaled LoRA TTT with warm-start A", "PR #1768, PR #1767"),
    ("fused_softcap_ce", "Fused softcapped cross-entropy Triton kernel, MIN_LR 0.10, GPTQ reserve", "PR #1787 (@nprime06)"),
    ("varlen_attention_fused_mlp_doc_lora_ttt", "VarLen attention, fused Triton MLP, per-document LoRA TTT",
     "PR #1530 (@samacqua)"),
    ("phased_ttt", "Phased TTT with global SGD between phases", "PR #1610 (@romeerp), @dexhunter"),
    ("depth_recurrence_parallel_residuals", "Depth recurrence, parallel residuals",
     "PR #1493 (@bigbag), PR #1523 (@EthanYangTW)"),
    ("polar_express_ns", "Polar Express Newton-Schulz coefficients", "PR #1344"),
    ("legal_ttt_framework", "Score-first (legal) TTT framework", "PR #549 (@abaybektursun)"),
    ("sp8192_gptq_sdclip", "SP8192, GPTQ with SDClip", "PR #1394 (@clarkkev)"),
]
CREDITS = {
    "1886": [("base_stack", "The stack reproduced here: fused softcap CE + TTT weight decay 2.0", "PR #1886"),
             GATED_ATTN_CREDIT, *LINEAGE_1886],
    "2135": [("base_stack", "The stack reproduced here: PR #2130's with 32 GPTQ calibration batches",
              "PR #2135 (@codemath3000)"),
             ("ngram_tilt_asym_logit", "The stack #2135 changed one setting of: token-only n-gram tilt, "
              "AsymLogit, one TTT phase over 2,500 documents, 2,560-token context, no K LoRA, on PR #1797 / PR #1855",
              "PR #2130 (@codemath3000)"),
             ("ngram_tilt_legality", "The token-only n-gram tilt's legality precedent", "PR #1514"),
             ("asym_logit", "AsymLogit rescale", "PR #1923"),
             ("setting_values", "Setting values of PR #2130 (MATRIX_LR 0.028, LQER group 32, ...)",
              "PR #2060 (@S0urC10ud)"),
             ("one_ttt_phase", "One TTT phase", "PR #2014 (@simonbissonnette)"),
             ("smear_gate_lqer_asym", "SmearGate, LQER asymmetric rank 4: the base of PR #2130", "PR #1797 (@dexhunter)"),
             ("per_group_compression", "Per-group compression", "PR #1855 (@codemath3000)"),
             ("caseops", "CaseOps tokenizer, byte sidecar accounting", "PR #1729, PR #1736"),
             *LINEAGE_1886],
}
# golfrun's recipe: #2135's stack; credit_rows adds the candidates it enables from its config (TTT_GRAD_STEPS)
CREDITS["golf"] = [("base_stack", "The stack built on: PR #2135's", "PR #2135 (@codemath3000)"), *CREDITS["2135"][1:]]


# The candidate settings (issue 27) a run may enable over its recipe, with their origin (README.md's candidate
# table): (key, component, origin, the resolved setting that enables it, its value when off).
CANDIDATE_CREDITS = [
    ("progressive_context", "Progressive training context", "PR #2014 (@simonbissonnette)", "train_seq_schedule", ""),
    ("short_doc_ttt_chunks", "Short-document TTT chunks", "PR #2014 (@simonbissonnette)",
     "ttt_short_score_first_steps", ""),
    ("mlp_output_gate", "Per-block MLP output gate", "PR #1941", "mlp_gate_enabled", "False"),
    ("awq_lite", "AWQ-lite", "PR #1908 (in PR #1945 and PR #2014)", "awq_lite_enabled", "False"),
    ("token_max_prob", "The n-gram tilt's boost capped at TOKEN_MAX_PROB", "golfrun", "token_max_prob", "1.0"),
    ("ttt_grad_steps", "More than one TTT Adam step per scored chunk", "golfrun (the setting is in PR #2135's code, "
     "run there at 1)", "ttt_grad_steps", "1"),
    ("ttt_grad_steps_tokens", "The later TTT Adam steps kept to each document's first tokens", "golfrun",
     "ttt_grad_steps_tokens", "0"),
    ("ttt_chunk_size", "A TTT chunk size other than the records' 48 (PR #1966 ran 36)", "PR #1966", "ttt_chunk_size",
     "48"),
    ("ttt_grad_chunk_only", "TTT's gradient through the scored chunk only", "golfrun", "ttt_grad_chunk_only",
     "False"),
    ("ttt_batch_size", "TTT batches of other than the records' 64 documents", "golfrun", "ttt_batch_size", "64"),
]


def credit_rows(recipe: str, config: dict) -> list[tuple[str, str, str]]:
    """The recipe's lineage, then the candidates the run enabled."""
    return CREDITS.get(recipe, []) + [(key, component, origin) for key, component, origin, name, off
                                      in CANDIDATE_CREDITS if config.get(name, off) != off]


def credits(recipe: str, config: dict) -> str:
    rows = "".join(f"| {component} | {origin} |\n" for _, component, origin in credit_rows(recipe, config))
    return (f"| Component | Origin |\n|---|---|\n{rows}" if rows else
            f"Recipe {recipe_label(recipe)}: see its record.")


def recipe_label(recipe: str) -> str:
    """A record's recipe by its PR number (#2135), golfrun's own by its name."""
    return f"#{recipe}" if recipe.isdigit() else f"RECIPE={recipe} (golfrun's own)"


ATTENTION = dict(fa3="FlashAttention 3 (flash_attn_interface; its version is not logged)",
                 torch_varlen="PyTorch's varlen attention (no FlashAttention)",
                 sdpa_padded="PyTorch scaled_dot_product_attention on padded rows (no FlashAttention)")


# ---- reading one log ----

def _required(value, path: Path, what: str):
    if value is None:
        raise SystemExit(f"{path}: no {what} in the log (crashed or unfinished run?)")
    return value


def parse_log(path: Path) -> dict:
    """The facts of one log (golflog.facts) and the numbers a record states, or SystemExit naming what is missing."""
    text = golflog.read_log(path)
    problem = golflog.failure(text)
    if problem:
        raise SystemExit(f"{path}: {problem}: not a valid record run")
    run = dict(golflog.facts(text), log=Path(path))
    config, lines = run["config"], run["lines"]
    run["seed"] = int(_required(golflog.seed(golflog.run_lines(text)), path, "seed"))
    untrained = [name.upper() for name in ("eval_only", "quantize_only") if _on(config, name)]
    if untrained:
        raise SystemExit(f"{path}: a {untrained[0]}=1 run (no training of its own): a record needs the logs of the "
                         "training runs")
    for name, what in (("env", "versions line"), ("model", "model_params line"), ("train", "train_time line"),
                       ("data_end", "train_data_access_end_seconds line (a run of older code?)"),
                       ("bytes", "artifact_model_bytes line"), ("total", "artifact_total_bytes line"),
                       ("eval", "total eval_time line")):
        _required(lines[name], path, what)
    labels = golflog.FINAL_LABELS if _on(config, "ttt_enabled") else golflog.FINAL_LABELS[:2]
    for label in labels:
        score = run["scores"].get(label)
        _required(score if score and None not in score.values() else None, path, f"{label} line")
    run["labels"] = labels
    number = golflog.number
    run.update(steps_done=number(run["train"].get("steps")), train_ms=number(run["train"].get("train_time")),
               train_data_end_seconds=number(run["data_end"]["train_data_access_end_seconds"]),
               eval_ms=number(run["eval"].get("eval_time")), bytes_total=number(run["total"]["artifact_total_bytes"]),
               bytes_model=number(run["bytes"]["artifact_model_bytes"]),
               bytes_code=number(run["bytes"].get("code_bytes")),
               world_size=number(run["env"].get("world_size")))
    for key in ("steps_done", "train_ms", "train_data_end_seconds", "eval_ms", "bytes_total", "bytes_model",
                "bytes_code", "world_size"):
        _required(run[key], path, key.replace("_", " "))
    for key in ("steps_done", "train_ms", "eval_ms", "bytes_total", "bytes_model", "bytes_code", "world_size"):
        run[key] = int(run[key])
    scores = run["scores"]
    run["prequant"], run["quantized"] = (scores[label]["bpb"] for label in golflog.FINAL_LABELS[:2])
    run["score"], run["val_loss"] = scores[labels[-1]]["bpb"], scores[labels[-1]]["nats"]
    run["hardware"] = hardware(run)
    return run


def hardware(run: dict) -> str:
    """'8x NVIDIA H100 80GB HBM3' from the nvidia-smi table, '1x CPU' for a CPU run."""
    world_size, device = run["world_size"], run["env"].get("device", "")
    if not device.startswith("cuda"):
        return f"{world_size}x CPU"
    names = sorted(set(run["smi"]["gpus"])) if run["smi"] else []
    return f"{world_size}x {' / '.join(names) or 'CUDA GPU (nvidia-smi unavailable)'}"


# ---- a log that states a fact twice must state it once: each check returns what disagrees, or None ----

def bytes_per_token(score: dict) -> float:
    """The validation bytes per token that a final line's val_loss (nats per token) and val_bpb imply."""
    return score["nats"] / (score["bpb"] * math.log(2))


def scores_agree(run: dict) -> str | None:
    """The final lines score the same validation tokens and bytes: each implies one bytes-per-token ratio
    (val_loss / val_bpb / ln 2), equal within the 8-decimal rounding. A hand-edited score breaks it."""
    labels = run["labels"]
    scores = {label: run["scores"][label] for label in labels}

    def agree(a, b):
        tolerance = sum(ROUNDING / s[key] for s in (scores[a], scores[b]) for key in ("nats", "bpb"))
        return abs(bytes_per_token(scores[a]) / bytes_per_token(scores[b]) - 1) <= 2 * tolerance

    disagreeing = {a: sum(not agree(a, b) for b in labels) for a in labels}
    odd = max(reversed(labels), key=disagreeing.get)  # ties: the later line (the score), the one worth editing
    if disagreeing[odd] == 0:
        return None
    other = next(b for b in labels if not agree(odd, b))
    return (f"'{run['lines'][odd]}' implies {bytes_per_token(scores[odd]):.6f} validation bytes per token "
            f"(val_loss / val_bpb / ln 2), '{run['lines'][other]}' {bytes_per_token(scores[other]):.6f}: both score "
            "the same tokens and bytes (a val_bpb or val_loss edited by hand?)")


def seed_agrees(run: dict) -> str | None:
    """A RUN_ID that names a seed (seed42, run_seed_42) names the logged one."""
    named = RUN_ID_SEED.search(run["config"].get("run_id", ""))
    if named and int(named.group(1)) != run["seed"]:
        return f"'seed:{run['seed']}' but 'run_id:{run['config']['run_id']}' names seed {int(named.group(1))}"
    return None


def device_agrees(run: dict) -> str | None:
    """The versions line's device against the CUDA build, the nvidia-smi table (logged on GPUs only), the
    attention backend, the peak-memory line (GPUs only) and the micro-batch split (8 = ranks x accumulation)."""
    env, model, lines = run["env"], run["model"], run["lines"]
    on_gpu = env.get("device", "").startswith("cuda")
    smi, world_size = run["smi"], run["world_size"]
    if on_gpu and env.get("cuda") in (None, "None"):
        return f"'{lines['env']}' says device {env.get('device')} but a torch without CUDA (cuda:None)"
    if on_gpu and smi is None and not lines["no_smi"]:
        return (f"'{lines['env']}' says device {env.get('device')} but the log has no nvidia-smi table (a GPU run "
                "logs one)")
    if on_gpu and smi and len(smi["gpus"]) < world_size:
        return f"'{lines['env']}' says world_size {world_size} but the nvidia-smi table lists {len(smi['gpus'])} GPU(s)"
    if not on_gpu and smi:
        return f"'{lines['env']}' says device {env.get('device')} but the log has an nvidia-smi table ('{smi['line']}')"
    if not on_gpu and model.get("attention_backend") != "sdpa_padded":
        return f"'{lines['env']}' says a CPU but '{lines['model']}' names a GPU attention backend"
    if bool(lines["peak"]) != on_gpu:
        return f"'{lines['env']}' and {'no' if on_gpu else 'the'} GPU peak-memory line ({lines['peak'] or 'absent'})"
    micro, accum = (int(golflog.number(model.get(key)) or 0) for key in ("micro_batch_tokens", "grad_accum_steps"))
    batch = int(run["config"].get("train_batch_tokens", "0"))
    if not micro or world_size * accum * micro != batch:
        return (f"'{lines['env']}' says world_size {world_size} but '{lines['model']}' splits "
                f"TRAIN_BATCH_TOKENS={batch} into {batch // micro if micro else '?'} micro-batches of which each of "
                f"the {world_size} rank(s) runs {accum}")
    return None


def bytes_add_up(run: dict) -> str | None:
    """Model + code = total; the raw code bytes = the parts = the sources the log embeds; the limit is the rule's."""
    parts, lines = run["bytes"], run["lines"]
    if run["bytes_model"] + run["bytes_code"] != run["bytes_total"]:
        return (f"'{lines['total']}' is not the sum of artifact_model_bytes and code_bytes in '{lines['bytes']}' "
                f"({run['bytes_model'] + run['bytes_code']})")
    raw = {k.removeprefix("raw_"): int(v) for k, v in parts.items() if k.startswith("raw_") and v.isdigit()}
    if str(sum(raw.values())) != parts.get("code_raw_bytes"):
        return f"'{lines['bytes']}': code_raw_bytes is not the sum of its raw_ parts ({sum(raw.values())})"
    embedded = {name: len(source.encode()) for name, source in run["sources"].items()}
    if raw != embedded:
        return f"'{lines['bytes']}' counts raw bytes {raw}, but the sources the log embeds are {embedded} bytes"
    if run["total"].get("limit") != str(LIMITS["bytes_total"]):
        return f"'{lines['total']}' states a limit other than the challenge's {LIMITS['bytes_total']}"
    return None


def times_add_up(run: dict) -> str | None:
    """The eval total holds the roundtrip and TTT evaluations (and TTT's own timing); training data ends after
    training, whose time the data line restates; the step lines fit inside training."""
    lines, scores = run["lines"], run["scores"]
    parts = [label for label in run["labels"] if label != "final_prequant_exact"]  # prequant precedes the clock
    if sum(scores[label]["ms"] for label in parts) > run["eval_ms"] + len(parts):  # each part rounded to 1 ms
        return (f"{' and '.join(repr(lines[label]) for label in parts)} take longer than the whole evaluation "
                f"'{lines['eval']}'")
    ttt_seconds = golflog.number(run["ttt_timing"].get("seconds"))
    ttt_ms = scores.get("final_ttt_exact", {}).get("ms")
    if "final_ttt_exact" in parts and ttt_seconds is not None and ttt_seconds > ttt_ms / 1000 + 0.05:
        return f"'{lines['ttt_timing']}' is longer than '{lines['final_ttt_exact']}'"
    training = run["training_seconds"]
    if training is None or abs(training - run["train_ms"] / 1000) > 0.006:
        return f"'{lines['data_end']}' restates training as {training} s, '{lines['train']}' says {run['train_ms']} ms"
    if run["train_data_end_seconds"] < training:
        return f"'{lines['data_end']}' ends the training data before training ended"
    return None


def training_agrees(run: dict) -> str | None:
    """The train_time line against itself (steps x step_avg, tokens per second), the step lines and the config."""
    train, lines, config, steps = run["train"], run["lines"], run["config"], run["steps_done"]
    seconds = run["train_ms"] / 1000
    step_avg, rate = golflog.number(train.get("step_avg")), golflog.number(train.get("tokens_per_second"))
    if step_avg is None or abs(step_avg * max(steps, 1) - run["train_ms"]) > 1 + 0.005 * steps:
        return f"'{lines['train']}': step_avg x steps is not train_time"
    tokens = steps * int(config.get("train_batch_tokens", "0"))
    if rate is None or abs(rate - tokens / max(seconds, 1e-9)) > 1 + 2e-3 * rate:
        return f"'{lines['train']}': tokens_per_second is not steps x TRAIN_BATCH_TOKENS / train_time"
    if golflog.number(train.get("cap")) != golflog.number(config.get("max_wallclock_seconds")):
        return f"'{lines['train']}' states a cap other than max_wallclock_seconds:{config.get('max_wallclock_seconds')}"
    iterations = int(config.get("iterations", "0"))
    if steps > iterations:
        return f"'{lines['train']}' ran more steps than iterations:{iterations}"
    for step in run["steps"]:
        if step["iterations"] != iterations or step["step"] > steps or step["ms"] > run["train_ms"]:
            return f"'{step['line']}' does not fit '{lines['train']}' (iterations:{iterations})"
    return None


SELF_CHECKS = (scores_agree, seed_agrees, device_agrees, bytes_add_up, times_add_up, training_agrees)


def check_log(run: dict) -> None:
    for check in SELF_CHECKS:
        problem = check(run)
        if problem:
            raise SystemExit(f"{run['log']}: the log contradicts itself: {problem}. Not a valid record run")


# ---- the configuration against the code the log embeds ----

@functools.lru_cache(maxsize=4)
def logged_module(train_source: str, kernels_source: str):
    """The train_gpt module of the logged source (its defaults, not the working tree's)."""
    digest = hashlib.sha256((train_source + kernels_source).encode()).hexdigest()[:12]
    with tempfile.TemporaryDirectory(prefix="logged_code_") as folder:
        for name, source in (("train_gpt.py", train_source), ("kernels.py", kernels_source)):
            (Path(folder) / name).write_text(source)
        spec = importlib.util.spec_from_file_location(f"logged_train_gpt_{digest}", Path(folder) / "train_gpt.py")
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
        sys.path.insert(0, folder)
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(folder)
    return module


def env_value(value: str) -> str:
    return {"True": "1", "False": "0"}.get(value, value)


def recipe_env(config: dict) -> dict[str, str]:
    """The variables that pick the defaults (RECIPE, SMOKE) as the log states them."""
    return {name.upper(): env_value(config[name]) for name in PRESET_FIELDS
            if config.get(name) not in (None, "", "False", "0", DEFAULT_RECIPE)}


def settings(run: dict, environ: dict) -> dict[str, str]:
    """{setting: value as the log prints it} of the logged code's config under `environ`."""
    module = logged_module(run["sources"]["train_gpt.py"], run["sources"]["kernels.py"])
    try:
        h = module.load_hyperparameters(environ)
    except (ValueError, SystemExit) as err:
        raise SystemExit(f"{run['log']}: the logged code refuses the logged configuration ({err}): a setting "
                         "edited by hand?") from None
    return {f.name: str(getattr(h, f.name)) for f in dataclasses.fields(h)
            if f.name not in LOCATION_FIELDS | golflog.PER_SEED_FIELDS}


def configuration(run: dict) -> dict:
    """The settings that differ from the recipe's defaults, and the environment that reproduces the logged
    configuration with the logged code; refuses a configuration that code would not produce."""
    config = {k: v for k, v in run["config"].items() if k not in LOCATION_FIELDS | golflog.PER_SEED_FIELDS}
    presets = recipe_env(config)
    recipe = settings(run, {k: v for k, v in presets.items() if k != "SMOKE"})
    preset = settings(run, presets)
    unknown = sorted(config.keys() - preset.keys())
    missing = sorted(preset.keys() - config.keys())
    if unknown or missing:
        raise SystemExit(f"{run['log']}: the logged configuration and the logged code disagree: "
                         + "; ".join(f"{what}: {', '.join(names)}" for what, names in (
                             ("settings the code does not have", unknown), ("settings the log lacks", missing))
                                     if names))
    env = dict(presets, **{k.upper(): env_value(v) for k, v in config.items()
                           if v != preset[k] and k not in PRESET_FIELDS})
    reproduced = settings(run, env)
    wrong = [k for k in config if reproduced[k] != config[k]]
    if wrong:
        raise SystemExit(f"{run['log']}: the logged code does not reproduce the logged setting(s) "
                         f"{', '.join(f'{k}:{config[k]}' for k in wrong)} (it makes "
                         f"{', '.join(f'{k}:{reproduced[k]}' for k in wrong)}): a setting edited by hand?")
    return dict(recipe=config.get("recipe") or DEFAULT_RECIPE, env=env,
                differences={k: (config[k], recipe[k]) for k in config if config[k] != recipe[k]})


# ---- a set of logs: one configuration, one code, one hardware, each seed once and each run once ----

def check_limits(run: dict) -> None:
    for key, limit in LIMITS.items():
        if run[key] > limit:
            raise SystemExit(f"{run['log']}: {LIMIT_NAMES[key]} {run[key]:,} is over the challenge limit {limit:,}: "
                             "not a valid record")


def same_run(a: dict, b: dict) -> str | None:
    """Two seeds' runs differ in their training losses and their final losses; equal ones are one run twice."""
    losses = [[s["loss"] for s in r["steps"]] for r in (a, b)]
    if len(losses[0]) > 1 and losses[0] == losses[1]:
        return f"the same training losses ('{a['steps'][0]['line']}' ... in both)"
    for label in a["labels"]:
        if a["scores"][label]["nats"] == b["scores"].get(label, {}).get("nats"):
            return f"the same final loss ('{a['lines'][label]}' in both)"
    return None


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
    for i, run in enumerate(runs):
        for other in runs[:i]:
            same = same_run(other, run)
            if same:
                raise SystemExit(f"{run['log']} (seed {run['seed']}) and {other['log']} (seed {other['seed']}) are "
                                 f"one run: {same}. A seed relabelled by hand?")
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
        on_record_gpus = run["world_size"] == RECORD_GPUS and run["smi"] is not None
        if not (on_record_gpus or allow_other_hardware):
            raise SystemExit(f"{run['log']} ran on {run['hardware']}: a record runs on {RECORD_GPUS} GPUs (8xH100 "
                             "SXM); pass --allow-other-hardware to package it anyway")


def shipped_file(runs: list[dict]) -> bytes:
    """The shipped train_gpt.py, built from the sources the logs embed (in their order) by the checkout's ship.py;
    its size must be what each run counted."""
    sys.path.insert(0, str(REPO))
    import ship
    shipped = ship.build_shipped_file(runs[0]["sources"])
    minified = {name: ship.minify_source(text, name) for name, text in runs[0]["sources"].items()}
    assert ship.shipped_sources(shipped) == minified, "the shipped file does not hold the logs' source"
    for run in runs:
        if run["bytes_code"] != len(shipped):
            raise SystemExit(f"{run['log']}: the run counted code_bytes:{run['bytes_code']}, but the file built from "
                             f"its logged source is {len(shipped)} bytes (another brotli/lzma version than the "
                             "run's?): "
                             "build the record with the run's environment")
    return shipped


# ---- significance against the best published result of the run's tokenizer family ----

def tokenizer_family(config: dict) -> str:
    """'caseops' for a CaseOps tokenizer (its path or a caseops setting says so), else 'sp<vocab size>'."""
    caseops = _on(config, "caseops_enabled") or "caseops" in config.get("tokenizer_path", "").lower()
    return "caseops" if caseops else f"sp{config.get('vocab_size', '?')}"


def significance(runs: list[dict], baseline: dict) -> dict:
    new = dict(nats=[r["val_loss"] for r in runs], bpb=[r["score"] for r in runs])
    result = seed_stats.compare(baseline, new, seed_stats.RULE_MARGIN_NATS)
    nats, bpb = result["nats"], result["bpb"]
    beats = nats["p_value"] < seed_stats.RULE_P
    line = (f"Against {baseline['name']} (published per-seed val_bpb {', '.join(f'{b:.8f}' for b in baseline['bpb'])}"
            f"; in nats with its own {baseline.get('bytes_per_token', 'logged')} bytes per token): improvement "
            f"{bpb['old_mean'] - bpb['new_mean']:+.5f} bpb ({nats['old_mean'] - nats['new_mean']:+.5f} nats), bar "
            f"{seed_stats.RULE_MARGIN_NATS} nats, one-sided Welch p = {nats['p_value']:.3g}: "
            f"{'beats' if beats else 'does not beat'} it by {seed_stats.RULE_MARGIN_NATS} nats at p < "
            f"{seed_stats.RULE_P} (the challenge's rule).")
    if not beats:
        line += " **Not a record**: this folder is a non-record submission (track_non_record_16mb)."
    return dict(beats=beats, line=line)


def default_baseline(runs: list[dict]) -> dict:
    family = tokenizer_family(runs[0]["config"])
    if family not in seed_stats.BASELINES:
        raise SystemExit(f"no published baseline for the tokenizer family {family} (known: "
                         f"{', '.join(seed_stats.BASELINES)}): give --baseline-submission")
    return seed_stats.BASELINES[family]


# ---- the README: every statement from the logs ----

def techniques(run: dict) -> list[str]:
    """What the run did, read from its resolved configuration, its model line and its GPTQ line (the codec)."""
    c, model = run["config"], run["model"]
    return [*model_techniques(c, model), *training_techniques(c, model), artifact_technique(c, run),
            *evaluation_techniques(c)]


def _on(c: dict, name: str) -> bool:
    return c.get(name) == "True"


def _count(n: int | str, noun: str) -> str:
    return f"{n} {noun}{'s' * (int(n) != 1)}"


def model_techniques(c: dict, model: dict) -> list[str]:
    layers, loops = int(c["num_layers"]), int(c["num_loops"])
    head_dim = int(c["model_dim"]) // int(c["num_heads"])
    caseops = " CaseOps tokens (case as operator tokens)" if tokenizer_family(c) == "caseops" else " tokens"
    out = [f"SP{c['vocab_size']}{caseops}, a {layers} x {c['model_dim']} GPT, {c['num_heads']} query / "
           f"{c['num_kv_heads']} key-value heads, MLP x{c['mlp_mult']} with LeakyReLU({c['leaky_relu_slope']})^2, "
           f"{model['model_params']} parameters",
           f"partial RoPE ({c['rope_dims']} of {head_dim} dims per head), QK gain init {c['qk_gain_init']}, "
           f"logit softcap {c['logit_softcap']}"
           + (f" (AsymLogit: a softcap for positive and one for negative logits in evaluation, stored in the "
              f"artifact; as in #2135's code no optimizer moves them, so both stay {c['logit_softcap']} and the "
              "scores are the single softcap's)" if _on(c, "asym_logit_rescale") else "") + ", tied embeddings"]
    if int(c["xsa_last_n"]):
        out.append(f"exclusive self-attention (XSA) in the last {c['xsa_last_n']} layers")
    if _on(c, "gated_attn_enabled"):
        out.append("per-head sigmoid gate on the attention output")
    if _on(c, "sparse_attn_gate_enabled"):
        out.append(f"sparse attention output gate: per head, from the first {c['gate_window']} channels of the "
                   f"normed input (scale {c['sparse_attn_gate_scale']})")
    if _on(c, "smear_gate_enabled"):
        out.append("SmearGate: a gated share of the previous token's embedding"
                   + (", never into a document's first token" if _on(c, "smear_gate_bos_fix") else
                      " (across document boundaries in packed rows, as #2135 ran)"))
    if _on(c, "mlp_gate_enabled"):
        out.append(f"per-block MLP output gate, from the first {c['gate_window']} channels of the block's residual "
                   "(before the MLP's norm)")
    if loops:
        out.append(f"depth recurrence: layers {c['loop_start']}-{c['loop_end']} run {loops + 1} times from "
                   f"{float(c['enable_looping_at']):.0%} of training")
    if 0 < int(c["parallel_start_layer"]) < layers:  # 0: no lanes (train_gpt's and the record's meaning)
        out.append(f"two parallel residual lanes from layer {c['parallel_start_layer']}")
    if _on(c, "skip_gates_enabled"):
        out.append("U-Net skips with gates")
    return out


def training_techniques(c: dict, model: dict) -> list[str]:
    rewarm = int(c.get("seq_change_warmup_steps", 0))
    context = (f"progressive training context {c['train_seq_schedule']} (tokens@progress"
               + (f"; the learning rate climbs back over {_count(rewarm, 'step')} after each switch" if rewarm else "")
               + ")" if c.get("train_seq_schedule") else f"training context {c['train_seq_len']} tokens")
    clip = float(c["grad_clip_norm"])
    clipped = (f"; gradients clipped to norm {c['grad_clip_norm']} "
               + ("once, after the rank average" if _on(c, "grad_clip_mean") else "per micro-batch")) if clip else ""
    out = [f"{context}; Muon{' (Polar Express Newton-Schulz)' if _on(c, 'polar_express_ns') else ''} for matrices, "
           f"lr {c['matrix_lr']}, weight decay {c['muon_wd']}; Adam (beta2 {c['beta2']}) for embeddings and scalars"
           f"{clipped}; warmdown {c['warmdown_frac']} of the wallclock schedule to min lr x{c['min_lr']}; EMA "
           f"{c['ema_decay']}"]
    kernels = [name for name, key in (("softcapped cross-entropy", "fused_ce"), ("MLP", "fused_mlp"))
               if model.get(key) == "1"]
    if kernels:
        out.append(f"fused Triton kernels in training: {', '.join(kernels)}")
    return out


def artifact_technique(c: dict, run: dict) -> str:
    out = (f"GPTQ int{c['matrix_bits']} matrices and int{c['embed_bits']} embedding (SDClip {c['mlp_clip_sigmas']}"
           f"/{c['attn_clip_sigmas']}/{c['embed_clip_sigmas']} sigmas, {c['gptq_calibration_batches']} "
           "calibration batches")
    if _on(c, "awq_lite_enabled"):
        out += (f"; AWQ-lite: the {c['awq_lite_group_top_k']} most salient group(s) of {c['awq_lite_group_size']} "
                f"input channels in int{c['awq_lite_bits']}")
    out += ")"
    if _on(c, "lqer_enabled"):
        factors = (f", its factors U S in int2 (one scale) and V in int4 (a scale each in groups of "
                   f"{c['lqer_asym_group']})" if _on(c, "lqer_asym_enabled") else "")
        out += (f"; LQER: a rank-{c['lqer_rank']} correction of the quantization error of the {c['lqer_top_k']} "
                f"worst matrices{factors}")
    codec, codes = run["quantize"].get("codec", ""), codes_codec(run)
    if codes:
        return out + (f"; per-group compression: the code matrices row-sorted and transposed, compressed with "
                      f"{CODES_NAMES.get(codes, codes)}, the rest with {codec.partition('+')[0]}")
    return out + f"; {codec or 'brotli'}" + (f" quality {c['brotli_quality']}" if codec in ("", "brotli") else "")


def evaluation_techniques(c: dict) -> list[str]:
    out = [f"evaluation context {c['eval_seq_len']} tokens"]
    if not _on(c, "ttt_enabled"):
        return out
    adapted = [name for name, key in (("keys", "ttt_k_lora"), ("attention output", "ttt_o_lora"),
                                      ("MLP", "ttt_mlp_lora")) if _on(c, key)]
    phases = int(c["phased_ttt_num_phases"])
    chunks = f"{c['ttt_chunk_size']}-token chunks"
    if c.get("ttt_short_score_first_steps"):
        chunks += f" (shorter for short documents: longest tokens:chunk {c['ttt_short_score_first_steps']})"
    steps, limit = int(c["ttt_grad_steps"]), int(c.get("ttt_grad_steps_tokens", 0))
    within = (f" on the chunks that end within their document's first {limit} tokens, one on later chunks"
              if limit else "")
    if _on(c, "ttt_grad_chunk_only"):
        chunks += (" (each Adam step backpropagates through the chunk's tokens only, over the keys and values of the "
                   "context that its scoring pass computed)")
    out.append(f"score-first test-time training with {c['ttt_eval_seq_len']} tokens of context: per-document LoRA "
               f"rank {c['ttt_lora_rank']} on queries, values, {', '.join(adapted) or 'nothing else'} and the LM head "
               f"(alpha {c['ttt_lora_alpha']}, lr {c['ttt_lora_lr']}, beta2 {c['ttt_beta2']}, weight decay "
               f"{c['ttt_weight_decay']}{', warm-start A' if _on(c, 'ttt_warm_start_a') else ''}) on {chunks}"
               + (f", {_count(steps, 'Adam step')} a chunk{within} (each later one "
                  + ("on its own gradient)" if _on(c, "ttt_grad_steps_clean") else "adding its gradient to the "
                     "earlier ones', as #2135's code)") if steps > 1 else ""))
    if phases:
        out.append(f"{_count(phases, 'phase')} over the first {c['phased_ttt_prefix_docs']} documents: after "
                   f"{'it' if phases == 1 else 'each'}, global SGD (lr {c['global_ttt_lr']}, "
                   f"{_count(c['global_ttt_epochs'], 'step')} per {c['global_ttt_chunk_tokens']}-token chunk) on the "
                   "documents scored so far")
    if _on(c, "ngram_tilt_enabled"):
        cap = float(c["token_max_prob"])
        out.append(f"token n-gram tilt: where the order-{c['token_order']} statistics of the validation tokens before "
                   f"a position predict the next token with confidence >= {c['token_threshold']}, its logit is raised by "
                   f"{c['token_boost']}" + (f" (never past probability {c['token_max_prob']})" if cap < 1 else "")
                   + " and the distribution renormalised"
                   + ("; its hints computed before the eval timer, so not counted in eval_time (#2135 counts them)"
                      if _on(c, "ngram_hint_precompute_outside") else ""))
    return out


def legality(c: dict) -> str:
    ttt = _on(c, "ttt_enabled")
    tilt = ttt and _on(c, "ngram_tilt_enabled")
    if ttt:
        adapt = ("each chunk of a document is scored, and its score is final, before the LoRA Adam step(s) on that "
                 "chunk; the global SGD after a phase uses only documents already scored")
    else:
        adapt = "no test-time training: the quantized model scores the validation set as it is"
    lora = ", and the LoRA that scores a chunk has learned only from earlier chunks of the same document" if ttt else ""
    hint = "; the n-gram tilt's hint for position t is read from the tokens before t" if tilt else ""
    tilted = (" plus the n-gram tilt's boost on one hinted token, then renormalised (a distribution summing to 1)"
              if tilt else "")
    counted = ("the val byte sidecar's: each token's original UTF-8 bytes, before the CaseOps transform"
               if _on(c, "caseops_enabled") else "the tokenizer's pieces")  # train_gpt reads the sidecar only then
    return f"""- **Condition 1 (causal):** every prediction at position t uses tokens before t only: causal attention
  within each document{lora}{hint}.
- **Condition 2 (full normalised distribution):** each token is scored with a softmax over all {c['vocab_size']}
  pieces of the softcapped logits{tilted}; bytes per token are {counted}.
- **Condition 3 (score before update):** {adapt}.
- **Condition 4 (single pass):** one left-to-right pass over the validation set, no rescoring.
- No validation data during training; training data is last read at the GPTQ Hessians
  (`train_data_access_end_seconds` in each log)."""


def codes_codec(run: dict) -> str:
    """The codec of a per-group artifact's code matrices, from the GPTQ line (`codec:brotli+lrzip`); "" if none."""
    return run["quantize"].get("codec", "").partition("+")[2]


def seeds_codes_codecs(runs: list[dict]) -> list[str]:
    """Every seed's codes codec (the codec a run used is the best one its machine had: seeds from two machines
    may differ)."""
    return sorted({codes_codec(run) for run in runs})


def requirements(runs: list[dict]) -> str:
    """REQUIREMENTS, and what decompresses the code matrices of each seed's artifact."""
    codecs = seeds_codes_codecs(runs)
    text = REQUIREMENTS + "".join(f"{CODES_PIP_NEEDS[codec]}\n" for codec in codecs if codec in CODES_PIP_NEEDS)
    return text + "".join(f"# and a system program: {CODES_SYSTEM_NEEDS[codec]} (the artifact's code matrices are "
                          f"{codec}-compressed)\n" for codec in codecs if codec in CODES_SYSTEM_NEEDS)


def versions(run: dict) -> str:
    env, smi = run["env"], run["smi"]
    driver = f"; driver {smi['driver']} (CUDA {smi['cuda']})" if smi else ""
    cuda = "no CUDA" if env.get("cuda") in (None, "None") else f"CUDA {env.get('cuda')}"
    return (f"Python {env.get('python')}, PyTorch {env.get('torch')} ({cuda}), Triton "
            f"{env.get('triton')}{driver}; attention: {ATTENTION.get(run['model'].get('attention_backend'), '?')}")


def seed_codecs(runs: list[dict]) -> str:
    """The artifacts' codec, or each seed's where they differ (a run packs with the best codec its machine has;
    the stack above names the first seed's)."""
    codecs = {r["seed"]: r["quantize"].get("codec") or "brotli" for r in runs}
    if len(set(codecs.values())) == 1:
        return next(iter(codecs.values()))
    return "by seed: " + ", ".join(f"{seed} {codec}" for seed, codec in codecs.items())


def readme(name: str, blurb: str, runs: list[dict], sig: dict, conf: dict, family: str) -> str:
    first, c = runs[0], runs[0]["config"]
    rows = "\n".join(f"| {r['seed']} | {r['steps_done']} | {r['train_ms'] / 1000:.1f} | "
                     f"{r['train_data_end_seconds']:.1f} "
                     f"| {r['prequant']:.5f} | {r['quantized']:.5f} | **{r['score']:.8f}** | {r['eval_ms'] / 1000:.1f} "
                     f"| {r['bytes_total']:,} |" for r in runs)
    scores = [r["score"] for r in runs]
    differences = "\n".join(f"| {k.upper()} | {v} | {d} |" for k, (v, d) in sorted(conf["differences"].items()))
    differences = (f"| setting | this run | recipe default |\n|---|---|---|\n{differences}" if differences else
                   "None: every setting is the recipe's default.")
    env = " ".join(f"{k}={v}" for k, v in conf["env"].items())
    launch = f"torchrun --standalone --nproc_per_node={first['world_size']} train_gpt.py"
    seeds = " ".join(str(r["seed"]) for r in runs)
    data = DATA_COMMANDS.get(family, f"# the {family} data (not downloadable by golfrun's scripts/download_data.py)")
    cap = float(c["max_wallclock_seconds"])
    system = "".join(f"\n{CODES_SYSTEM_NEEDS[codec]}" for codec in seeds_codes_codecs(runs)
                     if codec in CODES_SYSTEM_NEEDS)
    return f"""# {name}

**val_bpb: {statistics.mean(scores):.8f}** (mean of {len(runs)} seeds, std {statistics.stdev(scores):.8f};
{first['labels'][-1]} in each log)

{blurb}

## Results

| seed | steps | train s | training data until s | pre-quant bpb | quantized bpb | score bpb | eval s | artifact bytes |
|---|---|---|---|---|---|---|---|---|
{rows}

{sig['line']}

Artifact bytes = the compressed quantized model ({seed_codecs(runs)}) + the size of the
shipped `train_gpt.py` ({first['bytes_code']:,} bytes: the `train_gpt.py` and `kernels.py` the logs embed,
{int(first['bytes']['code_raw_bytes']):,} bytes, minified and compressed into one self-extracting file).
"Training data until" is the last read of training data (the GPTQ Hessians are collected inside the training
clock).

## Configuration

Recipe {recipe_label(conf['recipe'])}; training for at most {c['iterations']} steps{
    f' or {cap:g} s' if cap else ' (no time cap)'}
(the steps each seed ran are in the table); validation {'the whole set' if c['val_max_tokens'] == '0' else
f"the first {c['val_max_tokens']} tokens"} ({first['model']['val_tokens']} scored tokens); test-time training
{'on' if _on(c, 'ttt_enabled') else 'off'}. Techniques, from the logged configuration:

{chr(10).join(f'- {t}' for t in techniques(first))}

## What is new against the recipe

The settings that differ from the defaults of recipe {recipe_label(conf['recipe'])} (the defaults of the code the
logs embed; the seed, the run id and the data and artifact paths aside):

{differences}

## Legality (Issue #1017)

{legality(c)}

## Hardware

{first['hardware']}; {versions(first)}. Limits met by every seed: train <= 600 s, training data <= 600 s, eval <=
600 s, artifact <= 16,000,000 bytes.

## Reproduction

From a golfrun checkout (the data script is golfrun's `scripts/download_data.py`), then this folder's
`train_gpt.py`:

```bash
pip install -r requirements.txt{system}
{data}
for SEED in {seeds}; do SEED=$SEED {env + ' ' if env else ''}{launch}; done
```

Each log lists the resolved configuration and embeds the source of `train_gpt.py` and `kernels.py` (identical in
every log; the shipped `train_gpt.py` extracts it minified: the same syntax tree less docstrings and
the annotations nothing reads).

## Credits

{credits(conf['recipe'], c)}"""


def submission(name: str, author: str, github_id: str, date: str, blurb: str, runs: list[dict], track: str,
               recipe: str) -> dict:
    scores, losses = [r["score"] for r in runs], [r["val_loss"] for r in runs]
    return dict(
        author=author, github_id=github_id, name=name, date=date, track=track, blurb=blurb,
        val_bpb=round(statistics.mean(scores), 8), val_bpb_std=round(statistics.stdev(scores), 8),
        val_loss=round(statistics.mean(losses), 8), val_loss_std=round(statistics.stdev(losses), 8),
        seeds=[r["seed"] for r in runs],
        seed_results={str(r["seed"]): dict(val_bpb=round(r["score"], 8), val_loss=round(r["val_loss"], 8),
                                           pre_quant_val_bpb=round(r["prequant"], 8),
                                           quantized_val_bpb=round(r["quantized"], 8), steps=r["steps_done"],
                                           train_time_seconds=r["train_ms"] / 1000,
                                           train_data_access_end_seconds=r["train_data_end_seconds"],
                                           eval_time_seconds=r["eval_ms"] / 1000, artifact_bytes=r["bytes_total"])
                      for r in runs},
        hardware=runs[0]["hardware"], pytorch_version=runs[0]["env"].get("torch"),
        bytes_total=max(r["bytes_total"] for r in runs), bytes_model=max(r["bytes_model"] for r in runs),
        bytes_code=runs[0]["bytes_code"],
        compliance=dict(train_under_600s=True, train_data_access_under_600s=True, eval_under_600s=True,
                        artifact_under_16mb=True, score_first_ttt=_on(runs[0]["config"], "ttt_enabled"),
                        no_val_data_in_training=True, three_seeds=len(runs) >= MIN_SEEDS),
        attribution={key: origin for key, _, origin in credit_rows(recipe, runs[0]["config"])},
    )


def check_folder_name(name: str, date: str) -> None:
    if not SAFE_NAME.match(name):
        raise SystemExit(f"--name {name!r}: use letters, digits, '.', '_' and '-' only (it names the folder)")
    try:
        datetime.date.fromisoformat(date)
    except ValueError:
        raise SystemExit(f"--date {date!r}: give an ISO date such as 2026-04-30") from None


def record_folder(out_root: Path, date: str, name: str, track: str = RECORD_TRACK) -> Path:
    """records/track_<track>/<date>_<name> inside out_root, or SystemExit for names that would leave it."""
    check_folder_name(name, date)
    root = (out_root / f"track_{track}").resolve()
    folder = (root / f"{date}_{name}").resolve()
    if folder.parent != root:
        raise SystemExit(f"{folder} is outside {root}: choose another --name/--date")
    if folder.exists():
        raise SystemExit(f"{folder} exists: remove it or choose another --name/--date")
    return folder


def make_record(logs, name, author, github_id, blurb, out_root: Path, date: str, allow_other_hardware=False,
                baseline: dict | None = None) -> Path:
    check_folder_name(name, date)
    runs = [parse_log(Path(p)) for p in logs]
    for run in runs:
        check_log(run)
    check_runs(runs, allow_other_hardware)
    runs.sort(key=lambda r: r["seed"])
    shipped = shipped_file(runs)
    conf = configuration(runs[0])
    family = tokenizer_family(runs[0]["config"])
    sig = significance(runs, baseline or default_baseline(runs))
    track = RECORD_TRACK if sig["beats"] else NON_RECORD_TRACK
    folder = record_folder(Path(out_root), date, name, track)
    folder.mkdir(parents=True)
    (folder / "train_gpt.py").write_bytes(shipped)
    (folder / "requirements.txt").write_text(requirements(runs))
    for run in runs:
        (folder / f"train_seed{run['seed']}.log").write_bytes(run["log"].read_bytes())
    (folder / "README.md").write_text(readme(name, blurb, runs, sig, conf, family))
    (folder / "submission.json").write_text(json.dumps(
        submission(name, author, github_id, date, blurb, runs, track, conf["recipe"]), indent=2) + "\n")
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
                        help="the previous record's submission.json for the significance line (default: the best "
                             "published result of the logs' tokenizer family, seed_stats.BASELINES)")
    args = parser.parse_args(argv)
    baseline = None
    if args.baseline_submission:
        baseline = dict(seed_stats.published_scores(args.baseline_submission), name=str(args.baseline_submission))
    print(make_record(args.logs, args.name, args.author, args.github_id, args.blurb, args.out, args.date,
                      args.allow_other_hardware, baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
