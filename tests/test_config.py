"""Hyperparameters from the environment: types, 0/1 booleans, unknown knob-like names, smoke overrides, the
record's names and meanings (walked over its seed logs), range checks, and the loop knobs VAL_LOSS_EVERY,
TRAIN_LOG_EVERY and MAX_WALLCLOCK_SECONDS=0."""

import dataclasses
import re
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import train_gpt as tg


def test_defaults_are_the_record():
    h = tg.load_hyperparameters({})
    assert (h.num_layers, h.model_dim, h.num_heads, h.num_kv_heads, h.vocab_size) == (11, 512, 8, 4, 8192)
    assert h.ttt_weight_decay == 2.0 and h.matrix_lr == 0.026 and h.train_batch_tokens == 786_432


def test_env_values_are_typed():
    h = tg.load_hyperparameters({"SEED": "42", "MATRIX_LR": "0.01", "TTT_ENABLED": "0", "RUN_ID": "x"})
    assert (h.seed, h.matrix_lr, h.ttt_enabled, h.run_id) == (42, 0.01, False, "x")


@pytest.mark.parametrize("text", ["2", "true", "", "yes"])
def test_booleans_are_zero_or_one_only(text):
    with pytest.raises(ValueError, match="0 or 1"):
        tg.load_hyperparameters({"TTT_ENABLED": text})


def test_bad_number_names_the_variable():
    with pytest.raises(ValueError, match="SEED"):
        tg.load_hyperparameters({"SEED": "abc"})


@pytest.mark.parametrize("typo, nearest", [("TTT_WEIGTH_DECAY", "TTT_WEIGHT_DECAY"),
                                           ("MATRX_LR", "MATRIX_LR"), ("NUM_LAYER", "NUM_LAYERS")])
def test_unknown_knob_names_the_nearest(typo, nearest):
    with pytest.raises(ValueError, match=f"unknown hyperparameter env var {typo}.*{nearest}"):
        tg.load_hyperparameters({typo: "1"})


def test_unknown_name_in_our_family_is_an_error():
    with pytest.raises(ValueError, match="TTT_SOMETHING_NEW"):
        tg.load_hyperparameters({"TTT_SOMETHING_NEW": "1"})


def test_foreign_variables_are_ignored():
    h = tg.load_hyperparameters({"PATH": "/bin", "RANK": "0", "CUDA_VISIBLE_DEVICES": "0", "HOME": "/root"})
    assert h.seed == 1337


def test_smoke_overrides_only_unset_fields():
    h = tg.load_hyperparameters({"SMOKE": "1", "MODEL_DIM": "96"})
    assert h.model_dim == 96 and h.num_layers == tg.SMOKE_OVERRIDES["num_layers"]


def test_world_size_must_divide_eight():
    h = tg.load_hyperparameters({})
    assert tg.validate_hyperparameters(h, 2) == 4
    with pytest.raises(ValueError, match="divide 8"):
        tg.validate_hyperparameters(h, 3)


def test_batch_must_split_into_whole_sequences():
    h = tg.load_hyperparameters({"TRAIN_BATCH_TOKENS": "100000"})
    with pytest.raises(ValueError, match="TRAIN_BATCH_TOKENS"):
        tg.validate_hyperparameters(h, 1)


# ---- the recipes: each record's settings, names and values (issue 13 item 4, issue 23 item 1) ----

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
RECIPE_LOGS = {"1886": sorted(REFERENCE.glob("record_1886_seed*.log")),
               "2135": sorted(REFERENCE.glob("record_2135/train_seed*.log"))}
RECIPE_RUNS = [(recipe, log) for recipe, logs in RECIPE_LOGS.items() for log in logs]
# Logged entries that name one run, not a configuration: the seed (each log has its own) and paths.
RUN_SPECIFIC = {"seed", "run_id", "data_dir", "data_path", "tokenizer_path"}
TINY_MODEL = dict(NUM_LAYERS="2", MODEL_DIM="32", NUM_HEADS="2", NUM_KV_HEADS="1", ROPE_DIMS="8", XSA_LAST_N="2",
                  LOOP_START="0", LOOP_END="1", NUM_LOOPS="1", PARALLEL_START_LAYER="1", VOCAB_SIZE="64")


def record_dump(log_path: Path) -> dict[str, str]:
    """The record's `Hyperparameters:` block as {name: logged text}."""
    lines = log_path.read_text().splitlines()
    start = lines.index("Hyperparameters:") + 1
    dump = {}
    for line in lines[start:]:
        if not line.strip():
            continue
        if not line.startswith("  "):
            break
        name, _, value = line.strip().partition(":")
        dump[name] = value.strip()
    return dump


def record_launch_env(log_path: Path) -> dict[str, str]:
    """The env vars of the record's command: #1886's log prints them ("Extra args:"), #2135's README shows them."""
    extra = [l for l in log_path.read_text().splitlines() if l.startswith("Extra args:")]
    if extra:
        return dict(arg.split("=", 1) for arg in extra[0].split(":", 1)[1].split())
    readme = (log_path.parent / "README.md").read_text()
    return dict(m.groups() for m in re.finditer(r"^ +([A-Z_0-9]+)=(\S+) *\\?$", readme, re.M)
                if m.group(1) not in ("SEED", "PYTORCH_CUDA_ALLOC_CONF", "NCCL_NET"))


def as_env(text: str) -> str:
    return {"True": "1", "False": "0"}.get(text, text)


def logged_value(text: str, kind: str):
    return {"bool": lambda t: t == "True", "int": lambda t: int(float(t)), "float": float, "str": str}[kind](text)


def classify(dump: dict[str, str]) -> tuple[dict, set]:
    """Our fields among the logged names, and the record's derived entries; fails on a name that is neither
    one of ours, nor derived, nor one of the record's settings that we fix at its value."""
    fields = {f.name: f.type for f in dataclasses.fields(tg.Hyperparameters)}
    derived = {n for n in dump if n.upper() in tg.RECORD_DERIVED}
    unclassified = [n for n in dump if n not in fields and n not in derived and n.upper() not in tg.RECORD_FIXED]
    assert not unclassified, f"record settings neither accepted nor explained: {unclassified}"
    assert derived >= {"rank", "world_size", "grad_accum_steps", "datasets_dir", "train_files"}
    return fields, derived


@pytest.mark.skipif(not RECIPE_RUNS, reason="needs ../shared/reference")
@pytest.mark.parametrize("recipe, log_path", RECIPE_RUNS, ids=lambda p: getattr(p, "stem", p))
def test_every_default_of_a_recipe_is_its_records_logged_value(recipe, log_path):
    """RECIPE=<record> alone resolves every setting the record logged to the logged value (not only the name:
    a default changed by mistake fails here, whatever the oracle tests copy into the record)."""
    dump = record_dump(log_path)
    fields, _ = classify(dump)
    h = tg.load_hyperparameters({"RECIPE": recipe})
    wrong = {name: (getattr(h, name), text) for name, text in dump.items()
             if name in fields and name not in RUN_SPECIFIC and getattr(h, name) != logged_value(text, fields[name])}
    assert not wrong, f"RECIPE={recipe} defaults differ from {log_path.name} (ours, logged): {wrong}"
    fixed = {name: text for name, text in dump.items()
             if name.upper() in tg.RECORD_FIXED and not tg._same_value(as_env(text), tg.RECORD_FIXED[name.upper()][0])}
    assert not fixed, f"settings fixed at another value than {log_path.name} logs: {fixed}"
    assert h.seed == 1337 == int(tg.Hyperparameters.seed)  # both records' code default; each log sets its own


@pytest.mark.skipif(not RECIPE_RUNS, reason="needs ../shared/reference")
@pytest.mark.parametrize("recipe, log_path", RECIPE_RUNS, ids=lambda p: getattr(p, "stem", p))
def test_every_setting_of_a_record_log_is_accepted_with_its_meaning(recipe, log_path):
    """The record's own command and logged values, given as env vars, run unchanged and mean the same."""
    dump = record_dump(log_path)
    fields, derived = classify(dump)
    env = {n.upper(): as_env(v) for n, v in dump.items() if n not in derived}
    env.update(record_launch_env(log_path))
    h = tg.load_hyperparameters(env)
    assert tg.validate_hyperparameters(h, int(dump["world_size"])) == int(dump["grad_accum_steps"])
    for name, text in dump.items():
        if name in fields:
            assert getattr(h, name) == logged_value(text, fields[name]), name
    assert h.data_path == dump["datasets_dir"] and h.tokenizer_path == dump["tokenizer_path"]


def test_a_recipe_is_only_defaults():
    h = tg.load_hyperparameters({"RECIPE": "2135", "MATRIX_LR": "0.03", "TTT_LORA_RANK": "96"})
    assert (h.matrix_lr, h.ttt_lora_rank, h.beta2, h.recipe) == (0.03, 96, 0.99, "2135")
    smoke = tg.load_hyperparameters({"RECIPE": "2135", "SMOKE": "1"})
    assert (smoke.num_layers, smoke.eval_seq_len, smoke.smear_gate_enabled) == (4, 256, True)
    with pytest.raises(ValueError, match="RECIPE one of '1886', '2135'"):
        tg.load_hyperparameters({"RECIPE": "2136"})


# golfrun's recipe: #2135's and the evaluation settings that beat it most in issue 27's A/B within the eval budget
# (docs/BENCHMARKS.md, twenty-first and twenty-seventh sessions), in TTT batches of 96 (thirty-second)
GOLF_OVER_2135 = dict(ttt_chunk_size=36, ttt_grad_steps=2, ttt_grad_steps_tokens=3072, ttt_batch_size=96)


def test_golf_is_2135_with_only_evaluation_settings_changed():
    """RECIPE=golf trains, quantizes and packs exactly as RECIPE=2135 (so #2135's oracle proofs hold for its
    artifact): every setting it changes is read only at evaluation, after TTT_ENABLED in the dataclass."""
    golf, record = (tg.load_hyperparameters({"RECIPE": name}) for name in ("golf", "2135"))
    changed = {f.name: getattr(golf, f.name) for f in dataclasses.fields(tg.Hyperparameters)
               if getattr(golf, f.name) != getattr(record, f.name)}
    assert changed == dict(GOLF_OVER_2135, recipe="golf")
    names = [f.name for f in dataclasses.fields(tg.Hyperparameters)]
    assert min(names.index(n) for n in GOLF_OVER_2135) > names.index("ttt_enabled")


def test_recipes_name_only_settings():
    fields = {f.name for f in dataclasses.fields(tg.Hyperparameters)}
    for name, recipe in tg.RECIPES.items():
        assert set(recipe) <= fields, (name, set(recipe) - fields)
        tg.Hyperparameters(**recipe)  # every value in range


@pytest.mark.parametrize("name", sorted(tg.RECORD_DERIVED.keys() - tg.FOREIGN_ENV_VARS))
def test_derived_values_are_not_settings(name):
    with pytest.raises(ValueError, match=f"{name} is not a setting: the record derives it"):
        tg.load_hyperparameters({name: "x"})


def test_record_commands_reach_the_resolved_config():
    h = tg.load_hyperparameters({"SEED": "42", "PHASED_TTT_PREFIX_DOCS": "1500", "MIN_LR": "0.2"})
    assert (h.seed, h.phased_ttt_prefix_docs, h.min_lr) == (42, 1500, 0.2)
    plan = tg.plan_ttt(np.tile(np.array([1, 5, 5]), 5000), h)  # 5000 documents
    assert plan.phase_docs[:3] == [500, 1000, 1500]  # the prefix the phases' SGD passes cover
    assert abs(tg.lr_multiplier(1.0, h) - 0.2) < 1e-12  # the floor of the warmdown


@pytest.mark.parametrize("name, value", [("ROPE_YARN", "1"), ("WORD_BOOST", "1.0"), ("TIE_EMBEDDINGS", "0"),
                                         ("TTT_OPTIMIZER", "sgd"), ("EMBED_LR", "0.5"), ("MATRIX_CLIP_SIGMAS", "10"),
                                         ("SLIDING_WINDOW_ENABLED", "1"), ("PARALLEL_FINAL_LANE", "attn"),
                                         ("ARTIFACT_DIR", "out"), ("TTT_UPDATE_EVERY", "2"),
                                         ("GLOBAL_TTT_BATCH_SEQS", "16"), ("LQER_FACTOR_BITS", "8")])
def test_record_only_features_are_refused_with_the_reason(name, value):
    accepted, reason = tg.RECORD_FIXED[name]
    tg.load_hyperparameters({name: accepted})  # the record's own value passes
    with pytest.raises(ValueError, match=f"{name}={value!r} is not supported") as err:
        tg.load_hyperparameters({name: value})
    assert reason in str(err.value)


def test_eval_seq_len_and_compressor_are_settings_of_their_own():
    """#2135 validates with 2560-token pieces after training on 2048 and packs with per-group compression: both
    were the record's names fixed at #1886's values, and are settings now."""
    h = tg.load_hyperparameters({"EVAL_SEQ_LEN": "2560", "COMPRESSOR": "pergroup"})
    assert (h.eval_seq_len, h.train_seq_len, h.compressor) == (2560, 2048, "pergroup")
    with pytest.raises(ValueError, match="COMPRESSOR one of 'brotli', 'pergroup'"):
        tg.load_hyperparameters({"COMPRESSOR": "lzma"})


def test_eval_spans_may_exceed_the_training_span():
    """#2135 scores and trains global TTT with 2,560-token spans on a model trained at 2,048: RoPE has no length
    limit, so the settings pass and the rotary tables cover the longest span."""
    h = tg.load_hyperparameters({"EVAL_SEQ_LEN": "2560", "TTT_EVAL_SEQ_LEN": "3000", **TINY_MODEL})
    tg.validate_hyperparameters(h, 1)
    assert (h.eval_seq_len, h.train_seq_len) == (2560, 2048)
    assert tg.GPT(h).rotary.cos.size(0) == 3000


@pytest.mark.parametrize("old, new", sorted(tg.RENAMED.items()))
def test_old_names_point_to_the_record_names(old, new):
    with pytest.raises(ValueError, match=f"{old} was renamed to the record's name {new}$"):
        tg.load_hyperparameters({old: "1"})
    assert new in {f.name.upper() for f in dataclasses.fields(tg.Hyperparameters)} | set(tg.RECORD_FIXED)


def test_data_dir_is_the_record_layout_and_one_source_of_truth():
    h = tg.load_hyperparameters({"DATA_DIR": "/d"})
    assert h.data_path == "/d/datasets/fineweb10B_sp8192" and h.tokenizer_path == "/d/tokenizers/fineweb_8192_bpe.model"
    h = tg.load_hyperparameters({"DATA_DIR": "/d/", "DATA_PATH": "/d/datasets/fineweb10B_sp8192/"})  # agrees
    assert h.data_path == "/d/datasets/fineweb10B_sp8192/"
    h = tg.load_hyperparameters({"DATA_PATH": "/x", "TOKENIZER_PATH": "/t.model"})  # no DATA_DIR: explicit paths
    assert (h.data_path, h.tokenizer_path) == ("/x", "/t.model")
    for name in ("DATA_PATH", "TOKENIZER_PATH"):
        with pytest.raises(ValueError, match=f"DATA_DIR='/d' implies {name}=.*but {name}='/x' is set"):
            tg.load_hyperparameters({"DATA_DIR": "/d", name: "/x"})


# ---- range checks before any compute (issue 17 item 2) ----

@pytest.mark.parametrize("name, value, rule", [
    ("TRAIN_SEQ_LEN", "0", "TRAIN_SEQ_LEN >= 1"), ("NUM_HEADS", "0", "NUM_HEADS >= 1"),
    ("NUM_LAYERS", "0", "NUM_LAYERS >= 1"), ("TRAIN_LOG_EVERY", "-1", "TRAIN_LOG_EVERY >= 0"),
    ("TRAIN_BATCH_TOKENS", "-8", "TRAIN_BATCH_TOKENS >= 1"), ("RUN_ID", "../x", "RUN_ID without '/'"),
    ("RUN_ID", "..", "not '.' or '..'"), ("MATRIX_LR", "nan", "MATRIX_LR >= 0 (finite)"),
    ("MATRIX_LR", "inf", "MATRIX_LR >= 0 (finite)"), ("MATRIX_BITS", "9", "2 <= MATRIX_BITS <= 8"),
    ("MATRIX_BITS", "200", "2 <= MATRIX_BITS <= 8"), ("MATRIX_BITS", "0", "2 <= MATRIX_BITS <= 8"),
    ("EMBED_BITS", "1", "2 <= EMBED_BITS <= 8"), ("MAX_WALLCLOCK_SECONDS", "-5", "MAX_WALLCLOCK_SECONDS >= 0"),
    ("EMA_DECAY", "1.5", "0 <= EMA_DECAY < 1"), ("TTT_CHUNK_SIZE", "0", "TTT_CHUNK_SIZE >= 1"),
    ("VAL_LOSS_EVERY", "-1", "VAL_LOSS_EVERY >= 0"), ("COMPILE_SCOPE", "all", "COMPILE_SCOPE one of"),
    ("TTT_LORA_RANK", "0", "TTT_LORA_RANK >= 1"), ("GPTQ_CALIBRATION_BATCHES", "0", "GPTQ_CALIBRATION_BATCHES >= 1"),
])
def test_out_of_range_settings_name_the_variable_and_the_range(name, value, rule):
    with pytest.raises(ValueError, match=f"^{name}=") as err:
        tg.load_hyperparameters({name: value})
    assert "out of range" in str(err.value) and rule in str(err.value)


@pytest.mark.parametrize("env, names", [
    ({"MAX_WALLCLOCK_SECONDS": "0.4"}, ("MAX_WALLCLOCK_SECONDS", "GPTQ_RESERVE_SECONDS")),
    ({"XSA_LAST_N": "12"}, ("XSA_LAST_N", "NUM_LAYERS")), ({"BOS_ID": "8192"}, ("BOS_ID", "VOCAB_SIZE")),
    ({"NUM_HEADS": "3"}, ("MODEL_DIM", "NUM_HEADS")),
    # TTT runs after training and GPTQ: these used to fail only then (the chunk one with a device assert)
    ({"TTT_CHUNK_SIZE": "4096"}, ("TTT_CHUNK_SIZE", "TTT_EVAL_SEQ_LEN")),
    ({"TTT_SHORT_SCORE_FIRST_STEPS": "256-8"}, ("TTT_SHORT_SCORE_FIRST_STEPS='256-8'", "'256:8,2000:24'")),
    ({"TTT_SHORT_SCORE_FIRST_STEPS": "256:8,2000:4096"}, ("TTT_SHORT_SCORE_FIRST_STEPS", "TTT_EVAL_SEQ_LEN=2048")),
    # #2135's gates and softcaps
    ({"SPARSE_ATTN_GATE_ENABLED": "1"}, ("SPARSE_ATTN_GATE_ENABLED", "GATED_ATTN_ENABLED=0")),
    ({"SMEAR_GATE_ENABLED": "1", "GATE_WINDOW": "513"}, ("GATE_WINDOW", "MODEL_DIM")),
    ({"ASYM_LOGIT_RESCALE": "1", "LOGIT_SOFTCAP": "0"}, ("ASYM_LOGIT_RESCALE", "LOGIT_SOFTCAP")),
])
def test_settings_that_disagree_are_refused_before_any_compute(env, names):
    with pytest.raises(ValueError) as err:
        tg.validate_hyperparameters(tg.load_hyperparameters(env), 1)
    assert all(n in str(err.value) for n in names)


def test_the_rotary_tables_cover_the_longest_context():
    """#2135 trains at 2048 and scores with 2560 tokens of context: RoPE has no length limit of its own, so the
    tables cover the longest of TRAIN_SEQ_LEN, EVAL_SEQ_LEN and TTT_EVAL_SEQ_LEN (they were refused before)."""
    h = tg.load_hyperparameters({"SMOKE": "1", "EVAL_SEQ_LEN": "320", "TTT_EVAL_SEQ_LEN": "384"})
    tg.validate_hyperparameters(h, 1)
    assert tg.GPT(h).rotary.cos.shape[0] == 384 > h.train_seq_len


def test_ttt_record_world_size_must_split_over_the_ranks_at_start():
    with pytest.raises(ValueError, match="TTT_RECORD_WORLD_SIZE=3 must be a multiple of the world size 2"):
        tg.validate_hyperparameters(tg.load_hyperparameters({"TTT_RECORD_WORLD_SIZE": "3"}), 2)


def test_every_number_declares_its_range_and_the_defaults_pass():
    h = tg.Hyperparameters()  # builds, so every default is in range
    smoke = tg.load_hyperparameters({"SMOKE": "1"})
    assert tg.validate_hyperparameters(h, 8) == 1 and tg.validate_hyperparameters(smoke, 1) == 8
    for f in dataclasses.fields(tg.Hyperparameters):
        if f.type in ("int", "float"):
            assert "allowed" in f.metadata, f"{f.name} declares no range"


def test_int_settings_accept_whole_floats_only():
    assert tg.load_hyperparameters({"MLP_MULT": "4.0", "ITERATIONS": "1e3"}).iterations == 1000
    with pytest.raises(ValueError, match="MLP_MULT='3.5' is not a valid int"):
        tg.load_hyperparameters({"MLP_MULT": "3.5"})


# ---- the training loop's knobs (issue 13 items 4 and 5) ----

def _toy_training(**env):
    from conftest import PROXY_DATA

    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(PROXY_DATA), "ITERATIONS": "3", "WARMUP_STEPS": "0",
                                 "TRAIN_SEQ_LEN": "128", "TRAIN_BATCH_TOKENS": "1024", "TTT_ENABLED": "0", **env})
    torch.manual_seed(0)
    lines, calls = [], []

    def validate():
        calls.append(len(calls))
        return 5.0, 2.0

    result = tg.train(tg.GPT(h), h, tg.DistContext(), tg.validate_hyperparameters(h, 1), lines.append, validate)
    return result, lines, calls


def test_no_wallclock_cap_trains_every_iteration_and_validates_on_schedule():
    result, lines, calls = _toy_training(MAX_WALLCLOCK_SECONDS="0", VAL_LOSS_EVERY="2", TRAIN_LOG_EVERY="0")
    assert result["steps"] == 3  # was 1: a cap of 0 s stopped after the first step
    periodic = [l for l in lines if l.startswith("periodic_val ")]
    assert [l.split()[1] for l in periodic] == ["step:0/3", "step:2/3", "step:3/3"] and len(calls) == 3
    assert "val_bpb:2.0000" in periodic[0]
    assert not any("train_loss" in l for l in lines)  # TRAIN_LOG_EVERY=0: no step lines, as in the record


def test_validation_is_off_by_default():
    result, lines, calls = _toy_training(MAX_WALLCLOCK_SECONDS="0", ITERATIONS="1")
    assert result["steps"] == 1 and not calls and any("train_loss" in l for l in lines)


@pytest.mark.parametrize("name", sorted(tg.REMOVED))
def test_removed_settings_say_why(name):
    with pytest.raises(ValueError, match=f"{name} was removed: {tg.REMOVED[name]}"):
        tg.load_hyperparameters({name: "1"})


def test_the_last_validation_is_off_the_clock_that_ends_the_data_access(monkeypatch):
    """VAL_LOSS_EVERY's validations, the one after the last step too, pause the training clock: the reported end
    of training-data access counts training and the Hessians only (a 600 s run's final full-val pass would
    otherwise put it past 600 s). Each validation here takes 1,000 s of a stand-in clock."""
    offset = [0.0]
    clock = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    clock.perf_counter = lambda: time.perf_counter() + offset[0]
    monkeypatch.setattr(tg, "time", clock)
    validate_calls = []

    def slow_validate():
        offset[0] += 1000.0
        validate_calls.append(1)
        return 5.0, 2.0

    from conftest import PROXY_DATA

    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(PROXY_DATA), "ITERATIONS": "2", "WARMUP_STEPS": "0",
                                 "TRAIN_SEQ_LEN": "128",
                                 "TRAIN_BATCH_TOKENS": "1024", "TTT_ENABLED": "0", "MAX_WALLCLOCK_SECONDS": "0",
                                 "VAL_LOSS_EVERY": "2"})
    lines = []
    torch.manual_seed(0)
    tg.train(tg.GPT(h), h, tg.DistContext(), tg.validate_hyperparameters(h, 1), lines.append, slow_validate)
    data_end = float(next(l for l in lines if l.startswith("train_data_access_end_seconds:")).split()[0].split(":")[1])
    assert len(validate_calls) == 2 and data_end < 1000.0  # step 0 and after the last step
