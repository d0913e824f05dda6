"""The shipped single-file train_gpt.py and scripts/make_record.py, on logs of real CPU smoke runs of that file.

The fixture builds the shipped file from our two sources, runs it from an empty folder for three seeds (few
steps: bounded by ITERATIONS, not by the clock), and every test reads those logs."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import CASEOPS_DATA, CASEOPS_TOKENIZER, PROXY_DATA, REPO, TOKENIZER, clean_env

sys.path.insert(0, str(REPO / "scripts"))
import golflog  # noqa: E402
import make_record  # noqa: E402
import ship  # noqa: E402
import train_gpt as tg  # noqa: E402

SEEDS = (1, 2, 3)
SHORT_SMOKE = dict(SMOKE=1, ITERATIONS=2, VAL_MAX_TOKENS=4096, MAX_WALLCLOCK_SECONDS=100000)


@pytest.fixture(scope="module")
def shipped_runs(tmp_path_factory):
    """(shipped file path, {seed: log path}) of three smoke runs of the shipped file in an empty folder."""
    folder = tmp_path_factory.mktemp("shipped")
    shipped = folder / "train_gpt.py"
    shipped.write_bytes(tg.shipped_file())
    logs = {}
    for seed in SEEDS:
        env = clean_env(DATA_PATH=PROXY_DATA, TOKENIZER_PATH=TOKENIZER, RUN_ID=f"seed{seed}", SEED=seed,
                        **SHORT_SMOKE)
        proc = subprocess.run([sys.executable, "train_gpt.py"], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"shipped train_gpt.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        logs[seed] = folder / "logs" / f"seed{seed}.txt"
    assert [p.name for p in folder.glob("*.py")] == ["train_gpt.py"]  # no kernels.py beside it
    return shipped, logs


def test_shipped_file_is_one_compressed_script():
    sources = tg.code_sources()
    shipped = ship.build_shipped_file(sources)
    assert shipped == ship.build_shipped_file(sources)  # deterministic: the run and make_record agree
    assert len(shipped) < sum(len(s) for s in sources.values()) / 4
    compile(shipped, "train_gpt.py", "exec")  # latin-1, as its first line declares
    assert ship.shipped_sources(shipped) == {name: ship.minify_source(text) for name, text in sources.items()}
    with pytest.raises(ValueError, match="not a shipped train_gpt.py"):
        ship.shipped_sources((REPO / "train_gpt.py").read_bytes())


# make_record's rebuild, in a fresh process (another hash seed): the file from a log's sources, by ship.py
REBUILD = "import json, sys, ship; sys.stdout.buffer.write(ship.build_shipped_file(json.load(sys.stdin)))"


def test_shipped_file_runs_and_counts_its_own_size(shipped_runs):
    """A run of the shipped file counts (at start and in the accounting) and writes beside its artifact the file
    it runs from; the sources its log embeds rebuild that file byte for byte through ship.py."""
    shipped, logs = shipped_runs
    for log_path in logs.values():
        text = log_path.read_text()
        counted = int(re.search(r"^artifact_model_bytes:\d+ code_bytes:(\d+)", text, re.M).group(1))
        assert counted == shipped.stat().st_size
        left = int(re.search(r"^artifact_budget: shipped code leaves ([\d,]+) bytes", text, re.M).group(1)
                   .replace(",", ""))
        assert left == tg.ARTIFACT_LIMIT_BYTES - counted
        assert log_path.with_suffix(".train_gpt.py").read_bytes() == shipped.read_bytes()
        rebuilt = subprocess.run([sys.executable, "-c", REBUILD], input=json.dumps(golflog.embedded_sources(text))
                                 .encode(), cwd=REPO, env=clean_env(), capture_output=True, timeout=300)
        assert rebuilt.returncode == 0 and rebuilt.stdout == shipped.read_bytes(), rebuilt.stderr[-2000:]
        assert golflog.embedded_sources(text) == ship.shipped_sources(shipped.read_bytes())  # the code that ran
        assert "kernels.py not imported" not in golflog.run_lines(text)  # `import kernels` found the embedded one
        lines = golflog.run_lines(text)
        data_end = float(re.search(r"^train_data_access_end_seconds:([0-9.]+)", lines, re.M).group(1))
        train_s = int(re.search(r"^train_time:(\d+)ms steps:", lines, re.M).group(1)) / 1000
        assert train_s <= data_end  # the Hessians come after training, on the same clock
        assert lines.index("train_data_access_end_seconds:") < lines.index("final_prequant_exact")


def test_record_folder_from_real_logs(shipped_runs, tmp_path):
    shipped, logs = shipped_runs
    out = tmp_path / "records"
    assert make_record.main([*map(str, logs.values()), "--name", "Smoke", "--author", "a", "--github-id", "b",
                             "--out", str(out), "--date", "2026-11-24", "--allow-other-hardware"]) == 0
    # a smoke run does not beat PR #1886: the folder goes to the non-record track
    folder = out / "track_non_record_16mb" / "2026-11-24_Smoke"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "requirements.txt", "submission.json",
                                                        "train_gpt.py", "train_seed1.log", "train_seed2.log",
                                                        "train_seed3.log"]
    assert (folder / "train_gpt.py").read_bytes() == shipped.read_bytes()
    runs = [make_record.parse_log(p) for p in logs.values()]
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["track"] == "non_record_16mb" and sub["seeds"] == list(SEEDS) and sub["hardware"] == "1x CPU"
    assert sub["val_bpb"] == pytest.approx(sum(r["score"] for r in runs) / 3, abs=1e-8) and sub["val_bpb_std"] > 0
    assert sub["seed_results"]["2"]["val_bpb"] == round(runs[1]["score"], 8)
    assert sub["bytes_code"] == shipped.stat().st_size and sub["bytes_total"] == max(r["bytes_total"] for r in runs)
    readme = (folder / "README.md").read_text()
    env = runs[0]["env"]
    for needed in ("## Configuration", "Condition 1 (causal)", "Condition 2 (full normalised distribution)",
                   "Condition 3 (score before update)", "Condition 4 (single pass)", "## Hardware", "## Reproduction",
                   "## Credits", "PR #1886", "PR #1768", "one-sided Welch p =", f"{runs[0]['score']:.8f}",
                   "**Not a record**", "a 4 x 64 GPT", "LoRA rank 8", "128-token chunks", "at most 2 steps",
                   "| NUM_LAYERS | 4 | 11 |", "| SMOKE | True | False |", "1x CPU",
                   f"PyTorch {env['torch']} (no CUDA), Triton {env['triton']}", "no FlashAttention",
                   "python scripts/download_data.py --variant sp8192 --train-shards 80",
                   "torchrun --standalone --nproc_per_node=1 train_gpt.py"):
        assert needed in readme, needed
    for false_for_smoke in ("11 x 512", "rank 128", "on 48-token", "trained for 600 s", "except the seed",
                            "fused Triton kernels in training"):
        assert false_for_smoke not in readme, false_for_smoke
    assert "brotli" in (folder / "requirements.txt").read_text()
    # the reproduction's variables give the logged code the logged configuration
    command = re.search(r"^for SEED in 1 2 3; do SEED=\$SEED (.*) torchrun ", readme, re.M).group(1)
    env = dict(word.split("=", 1) for word in command.split())
    assert set(env) == set(SHORT_SMOKE) and env["SMOKE"] == "1"  # the variables the runs were started with
    h = tg.load_hyperparameters(env)
    logged = runs[0]["config"]
    skip = make_record.LOCATION_FIELDS | golflog.PER_SEED_FIELDS
    settings = {k: v for k, v in logged.items() if k not in skip}
    assert {k: str(getattr(h, k)) for k in settings} == settings


def _copy(path, tmp_path, name, edit=None):
    text = path.read_text()
    out = tmp_path / name
    out.write_text(edit(text) if edit else text)
    return out


def _sub(pattern, replacement):
    return lambda text: re.sub(pattern, replacement, text, count=1, flags=re.M)


def _build(logs, tmp_path, **kw):
    kw.setdefault("allow_other_hardware", True)
    return make_record.make_record([str(p) for p in logs], "Bad", "a", "b", "", tmp_path / "records", "2026-11-24",
                                   **kw)


@pytest.mark.parametrize("case, edit, message", [
    ("data_end", _sub(r"^train_data_access_end_seconds:[0-9.]+", "train_data_access_end_seconds:600.50"),
     "train_data_access_end_seconds .* over"),
    ("eval_time", _sub(r"^eval_time:\d+ms \(", "eval_time:600001ms ("), "eval_time ms .* over"),
    ("no_data_end", _sub(r"^train_data_access_end_seconds:.*\n", ""), "no train_data_access_end_seconds"),
    ("nan", _sub(r"^(step:1/\d+ train_loss:)[0-9.]+", r"\1nan"), "NaN"),
    ("interrupted", lambda t: t + "interrupted: KeyboardInterrupt at step 2\n", "interrupted"),
    # cut at the run's last line, not at its first mention in the embedded source
    ("crashed", lambda t: t[: t.rindex("final_ttt_exact")], "crashed or unfinished"),
    # code_bytes and the total edited together (the parts add up): the shipped file's size disagrees
    ("code_bytes", lambda t: _sub(r"code_bytes:\d+", "code_bytes:123")(_sub(
        r"^artifact_total_bytes:\d+", f"artifact_total_bytes:{_bytes(t)[0] + 123}")(t)), "counted code_bytes:123"),
])
def test_bad_runs_are_refused(shipped_runs, tmp_path, case, edit, message):
    _, logs = shipped_runs
    paths = [_copy(logs[1], tmp_path, "edited.txt", edit), logs[2], logs[3]]
    with pytest.raises(SystemExit, match=message):
        _build(paths, tmp_path)


def _bytes(text):
    """(artifact_model_bytes, code_bytes) of a log."""
    match = re.search(r"^artifact_model_bytes:(\d+) code_bytes:(\d+)", golflog.run_lines(text), re.M)
    return int(match.group(1)), int(match.group(2))


def test_limits(shipped_runs):
    """Each challenge limit, on a parsed run (a log over a limit in one place only contradicts itself first)."""
    _, logs = shipped_runs
    for key, limit in make_record.LIMITS.items():
        run = make_record.parse_log(logs[1])
        make_record.check_limits(run)
        run[key] = limit + 1
        with pytest.raises(SystemExit, match=f"{re.escape(make_record.LIMIT_NAMES[key])} .* over"):
            make_record.check_limits(run)


def _then(*edits):
    def edit(text):
        for one in edits:
            text = one(text)
        return text
    return edit


ON_GPU = _sub(r"^(python:\S+) torch:(\S+)\+cpu (triton:\S+) cuda:None world_size:1 device:cpu$",
              r"\1 torch:\2+cu128 \3 cuda:12.8 world_size:8 device:cuda:0")
SMI = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.124.06             Driver Version: 570.124.06     CUDA Version: 12.8     |
|=========================================+========================+======================|
""" + "".join(f"|   {i}  NVIDIA H100 80GB HBM3          On  |   00000000:{i:02x}:00.0 Off |                    0 |\n"
              for i in range(8))
WITH_SMI = _sub(r"^(python:.*device:cuda:0)$", lambda m: f"{m.group(1)}\n{SMI}")
WITH_PEAK = _sub(r"^(train_data_access_end_seconds:.*)$", r"\1\npeak_memory_allocated:1.00GiB")
GPU_BACKEND = _sub(r"attention_backend:sdpa_padded", "attention_backend:torch_varlen")


# Forged logs: one fact of a real smoke log edited, refused with the line that disagrees.
@pytest.mark.parametrize("case, edit, message", [
    ("bpb_by_hand", _sub(r"^(final_ttt_exact val_loss:\S+ val_bpb:)4", r"\g<1>3"),
     r"'final_ttt_exact val_loss:\S+ val_bpb:3\.\d+ eval_time:\d+ms' implies .* bytes per token"),
    # the 5th significant digit: 2.5e-5 of the score, far above the 8-decimal rounding (~2e-9)
    ("bpb_4th_decimal", _sub(r"^(final_ttt_exact val_loss:\S+ val_bpb:4\.\d\d\d)(\d)",
                             lambda m: m.group(1) + str((int(m.group(2)) + 1) % 10)),
     r"'final_ttt_exact val_loss:\S+ val_bpb:4\.\d+ eval_time:\d+ms' implies"),
    ("loss_by_hand", _sub(r"^(final_ttt_exact val_loss:)(\d)", lambda m: m.group(1) + str(int(m.group(2)) - 1)),
     r"'final_ttt_exact val_loss:.*' implies"),
    ("prequant_by_hand", _sub(r"^(final_prequant_exact val_loss:\S+ val_bpb:)4", r"\g<1>3"),
     r"'final_prequant_exact val_loss:\S+ val_bpb:3\.\d+ eval_time:\d+ms' implies"),
    ("seed_relabelled", _sub(r"^seed:1$", "seed:4"), r"'seed:4' but 'run_id:seed1' names seed 1"),
    ("cpu_as_gpu", _sub(r"world_size:1 device:cpu$", "world_size:8 device:cuda:0"),
     r"'python:.* cuda:None world_size:8 device:cuda:0' says device cuda:0 but a torch without CUDA"),
    ("cpu_as_gpu_with_cuda", ON_GPU, r"'python:.*device:cuda:0' says device cuda:0 but the log has no nvidia-smi"),
    ("cpu_as_gpu_one_smi", _then(ON_GPU, _sub(r"^(python:.*device:cuda:0)$", lambda m: m.group(1) + "\n" +
                                              "\n".join(SMI.splitlines()[:4]))),
     r"says world_size 8 but the nvidia-smi table lists 1 GPU"),
    ("cpu_as_gpu_with_smi", _then(ON_GPU, WITH_SMI), r"'python:.*device:cuda:0' and no GPU peak-memory line"),
    ("cpu_as_gpu_with_peak", _then(ON_GPU, WITH_SMI, WITH_PEAK),
     r"says world_size 8 but 'model_params:.*grad_accum_steps:8.*' splits TRAIN_BATCH_TOKENS=4096 into 8"),
    ("gpu_backend_on_cpu", GPU_BACKEND, r"says a CPU but 'model_params:.*attention_backend:torch_varlen"),
    ("smi_on_cpu", _sub(r"^(python:.*device:cpu)$", lambda m: f"{m.group(1)}\n{SMI}"),
     r"says device cpu but the log has an nvidia-smi table \('Driver Version"),
    ("model_bytes", _sub(r"^artifact_model_bytes:(\d+)", lambda m: f"artifact_model_bytes:{int(m.group(1)) - 1000}"),
     r"'artifact_total_bytes:\d+ .*' is not the sum of artifact_model_bytes and code_bytes in 'artifact_model_bytes"),
    ("raw_parts", _sub(r"code_raw_bytes:(\d+)", lambda m: f"code_raw_bytes:{int(m.group(1)) + 1}"),
     r"'artifact_model_bytes:.*': code_raw_bytes is not the sum of its raw_ parts"),
    ("raw_source", _then(_sub(r"raw_kernels.py:(\d+)", lambda m: f"raw_kernels.py:{int(m.group(1)) - 9}"),
                         _sub(r"code_raw_bytes:(\d+)", lambda m: f"code_raw_bytes:{int(m.group(1)) - 9}")),
     r"'artifact_model_bytes:.*' counts raw bytes .* but the sources the log embeds are"),
    ("limit", _sub(r"limit:16000000$", "limit:17000000"), r"'artifact_total_bytes:.*' states a limit other than"),
    ("ttt_700s", _sub(r"^(final_ttt_exact .*eval_time:)\d+ms", r"\g<1>700000ms"),
     r"'final_roundtrip_exact .*' and 'final_ttt_exact .*eval_time:700000ms' take longer than the whole "
     r"evaluation 'eval_time:\d+ms"),
    ("ttt_timing", _sub(r"^(ttt_timing .*seconds:)[0-9.]+", r"\g<1>999.0"),
     r"'ttt_timing .*seconds:999.0.*' is longer than 'final_ttt_exact"),
    ("training_restated", _sub(r"\(training [0-9.]+,", "(training 0.01,"),
     r"'train_data_access_end_seconds:.*\(training 0.01, .*' restates training as 0.01 s, 'train_time:\d+ms"),
    ("data_before_training", _sub(r"^train_data_access_end_seconds:[0-9.]+", "train_data_access_end_seconds:0.00"),
     r"'train_data_access_end_seconds:0.00 .*' ends the training data before training ended"),
    ("steps", _sub(r"^(train_time:\d+ms) steps:2", r"\1 steps:1"), r"'train_time:\d+ms steps:1 .*': step_avg x steps"),
    ("tokens_per_second", _sub(r"tokens_per_second:\d+", "tokens_per_second:99999999"),
     r"'train_time:.*tokens_per_second:99999999.*': tokens_per_second is not"),
    ("cap", _sub(r"^(train_time:.*) cap:[0-9.]+s", r"\1 cap:600.0s"), r"'train_time:.* cap:600.0s[^']*' states a cap"),
    ("step_line", _sub(r"^step:1/2 (train_loss:\S+) train_time:\d+ms", r"step:1/2 \1 train_time:99999999ms"),
     r"'step:1/2 train_loss:\S+ train_time:99999999ms .*' does not fit 'train_time:"),
])
def test_forged_logs_are_refused_naming_the_line(shipped_runs, tmp_path, case, edit, message):
    _, logs = shipped_runs
    forged = _copy(logs[1], tmp_path, "forged.txt", edit)
    assert forged.read_text() != logs[1].read_text(), "the edit changed nothing"
    with pytest.raises(SystemExit, match="the log contradicts itself: .*" + message):
        _build([forged, logs[2], logs[3]], tmp_path)


def test_a_consistent_gpu_log_passes_the_hardware_checks(shipped_runs):
    """The forged-GPU cases above each stop at one check: a log that states its GPUs consistently passes them all
    (the checks read the nvidia-smi table and the model line as a GPU run writes them)."""
    _, logs = shipped_runs
    text = _then(ON_GPU, WITH_SMI, WITH_PEAK, GPU_BACKEND, _sub(r"grad_accum_steps:8", "grad_accum_steps:1"))(
        logs[1].read_text())
    run = make_record.parse_log(_copy(logs[1], logs[1].parent.parent, "gpu_shape.txt", lambda t: text))
    assert make_record.device_agrees(run) is None
    assert run["hardware"] == "8x NVIDIA H100 80GB HBM3" and run["smi"]["cuda"] == "12.8"
    assert "driver 570.124.06 (CUDA 12.8)" in make_record.versions(run)


def test_one_run_under_two_seeds_is_refused(shipped_runs, tmp_path):
    """Seed 1's log relabelled seed 4 everywhere it says so (seed and RUN_ID): its losses are seed 1's."""
    _, logs = shipped_runs
    relabelled = _copy(logs[1], tmp_path, "seed4.txt", _then(_sub(r"^seed:1$", "seed:4"),
                                                             _sub(r"^run_id:seed1$", "run_id:seed4")))
    with pytest.raises(SystemExit, match=r"\(seed 4\) and .* \(seed 1\) are one run: the same training losses "
                                         r"\('step:1/2 train_loss:"):
        _build([logs[1], logs[2], relabelled], tmp_path)
    # its losses edited too: the final loss still gives it away
    losses = _copy(relabelled, tmp_path, "seed4b.txt", _sub(r"^(step:2/2 train_loss:)\S+", r"\g<1>1.2345"))
    with pytest.raises(SystemExit, match=r"one run: the same final loss \('final_prequant_exact val_loss:"):
        _build([logs[1], logs[2], losses], tmp_path)


def test_a_configuration_the_logged_code_refuses(shipped_runs, tmp_path):
    """A setting edited by hand in every log (so the seeds agree) is checked against the logged code."""
    _, logs = shipped_runs
    for edit, message in ((_sub(r"^ttt_lora_rank:8$", "ttt_lora_rank:-3"), "the logged code refuses the logged "
                                                                           "configuration .*TTT_LORA_RANK"),
                          (_sub(r"^ema_decay:.*\n", ""), "settings the log lacks: ema_decay"),
                          (_sub(r"^(ema_decay:.*)$", r"\1\nema_rate:0.5"),
                           "settings the code does not have: ema_rate")):
        paths = [_copy(p, tmp_path, f"conf{seed}.txt", edit) for seed, p in logs.items()]
        with pytest.raises(SystemExit, match=message):
            _build(paths, tmp_path)


def test_significance_baseline_follows_the_tokenizer_family(shipped_runs):
    _, logs = shipped_runs
    run = make_record.parse_log(logs[1])
    assert make_record.tokenizer_family(run["config"]) == "sp8192"
    assert make_record.default_baseline([run]) is make_record.seed_stats.BASELINES["sp8192"]
    caseops = dict(run, config=dict(run["config"], tokenizer_path="t/fineweb_8192_bpe_lossless_caps_caseops_v1.model"))
    assert make_record.default_baseline([caseops]) is make_record.seed_stats.BASELINES["caseops"]
    with pytest.raises(SystemExit, match="no published baseline for the tokenizer family sp1024"):
        make_record.default_baseline([dict(run, config=dict(run["config"], vocab_size="1024"))])
    runs = [make_record.parse_log(p) for p in logs.values()]
    worse = dict(name="a worse run", bpb=[r["score"] + 0.5 for r in runs], bytes_per_token=3.0)
    assert make_record.significance(runs, worse)["beats"]
    result = make_record.significance(runs, make_record.seed_stats.BASELINES["sp8192"])
    assert not result["beats"] and "**Not a record**" in result["line"]


def test_sets_of_logs_that_are_not_one_record_are_refused(shipped_runs, tmp_path):
    _, logs = shipped_runs
    s1, s2, s3 = logs.values()
    cases = [
        ([s1, s2], "at least 3 seeds"),
        ([s1, s2, s1], "given twice"),
        ([s1, s2, s3, _copy(s1, tmp_path, "copy.txt")], "both seed 1"),
        ([s1, s2, _copy(s3, tmp_path, "lr.txt", _sub(r"^matrix_lr:\S+", "matrix_lr:0.5"))], "differs in matrix_lr"),
        ([s1, s2, _copy(s3, tmp_path, "code.txt", lambda t: t.replace("import torch\n", "import torcH\n", 1))],
         "ran other code"),  # as long as the original: the counted raw bytes still agree
    ]
    for paths, message in cases:
        with pytest.raises(SystemExit, match=message):
            _build(paths, tmp_path)
    with pytest.raises(SystemExit, match="8 GPUs.*--allow-other-hardware"):
        _build([s1, s2, s3], tmp_path, allow_other_hardware=False)


def test_unreadable_inputs_and_escaping_paths_are_refused(shipped_runs, tmp_path):
    _, logs = shipped_runs
    s1, s2, s3 = logs.values()
    binary = tmp_path / "final_model.golf"
    binary.write_bytes(bytes(range(256)) * 4)
    for paths, message in (([s1, s2, binary], "binary data"), ([s1, s2, tmp_path / "missing.txt"], "no such file"),
                           ([s1, s2, tmp_path], "not a file")):
        with pytest.raises(SystemExit, match=message):
            _build(paths, tmp_path)
    for name, date, message in (("Smoke", "../../..", "ISO date"), ("../../escape", "2026-11-24", "letters, digits"),
                                ("/abs", "2026-11-24", "letters, digits")):
        with pytest.raises(SystemExit, match=message):
            make_record.make_record([s1, s2, s3], name, "a", "b", "", tmp_path / "records", date, True)
    assert not (tmp_path / "records").exists() and not any(tmp_path.parent.glob("escape*"))


def test_ships_the_logged_source_not_the_code_on_disk(shipped_runs, tmp_path):
    """Logs of code that differs from the working tree: the record ships (and counts) the logged code."""
    _, logs = shipped_runs
    sources = dict(tg.code_sources())
    sources["kernels.py"] += "A_LINE_THE_WORKING_TREE_LACKS = 1\n"  # code: a comment would be minified away
    size = len(ship.build_shipped_file(sources))

    def as_other_code(text):
        text = text.replace("\n==== end of kernels.py ====\n",
                            "A_LINE_THE_WORKING_TREE_LACKS = 1\n\n==== end of kernels.py ====\n", 1)
        grown = size - _bytes(text)[1]
        for key, grow in (("code_bytes", grown), ("artifact_total_bytes", grown),
                          ("code_raw_bytes", 34), ("raw_kernels.py", 34)):  # the added line and its newline
            text = re.sub(rf"{re.escape(key)}:(\d+)", lambda m: f"{key}:{int(m.group(1)) + grow}", text, count=1)
        return text

    paths = [_copy(p, tmp_path, f"other{seed}.txt", as_other_code) for seed, p in logs.items()]
    folder = _build(paths, tmp_path)
    shipped = (folder / "train_gpt.py").read_bytes()
    assert len(shipped) == size
    assert ship.shipped_sources(shipped) == ship.shipped_sources(ship.build_shipped_file(sources))
    assert ship.shipped_sources(shipped)["kernels.py"].endswith("\nA_LINE_THE_WORKING_TREE_LACKS=1\n")  # minified
    with pytest.raises(SystemExit, match="exists"):
        _build(paths, tmp_path)
    shutil.rmtree(folder)


# ---- a record of RECIPE=2135: its README states the stack that ran ----

@pytest.fixture(scope="module")
def caseops_run(shipped_runs):
    """parse_log's facts of one RECIPE=2135 smoke run of the shipped file on the CaseOps sample."""
    folder = shipped_runs[0].parent
    env = clean_env(RECIPE="2135", DATA_PATH=CASEOPS_DATA, TOKENIZER_PATH=CASEOPS_TOKENIZER, RUN_ID="caseops", SEED=1,
                    **SHORT_SMOKE)
    proc = subprocess.run([sys.executable, "train_gpt.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"RECIPE=2135 run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return make_record.parse_log(folder / "logs" / "caseops.txt")


@pytest.mark.parametrize("setting", ["quantize_only", "eval_only"])
def test_a_run_that_did_not_train_is_refused_by_name(caseops_run, setting, tmp_path):
    """A QUANTIZE_ONLY or EVAL_ONLY log has no training of its own: refused as such, not as a crashed run."""
    text = caseops_run["log"].read_text()
    assert f"\n{setting}:False\n" in text
    log = tmp_path / "run.txt"
    log.write_text(text.replace(f"\n{setting}:False\n", f"\n{setting}:True\n", 1))
    with pytest.raises(SystemExit, match=rf"a {setting.upper()}=1 run \(no training of its own\)"):
        make_record.parse_log(log)


def test_a_2135_readme_states_the_stack_that_ran(caseops_run):
    run, c = caseops_run, caseops_run["config"]
    text = "\n".join(make_record.techniques(run)) + "\n" + make_record.legality(c)
    codec = run["quantize"]["codec"]
    for needed in ("SP8192 CaseOps tokens", "AsymLogit", "no optimizer moves them", "sparse attention output gate",
                   "SmearGate", "across document boundaries", f"rank-{c['lqer_rank']} correction", "groups of 32",
                   f"{c['gptq_calibration_batches']} calibration batches", "1 phase over the first",
                   "after it, global SGD (lr 0.001, 1 step per 2048-token chunk)",
                   "values, attention output, MLP and the LM head", f"evaluation context {c['eval_seq_len']} tokens",
                   "token n-gram tilt", "renormalised (a distribution summing to 1)", "hint for position t",
                   "original UTF-8 bytes", "LeakyReLU(0.5)^2", "per micro-batch"):
        assert needed in text, needed
    assert codec.startswith("brotli+") and f"compressed with {make_record.CODES_NAMES[codec[7:]]}" in text
    for false_for_2135 in ("keys,", "per-head sigmoid gate", "brotli quality", "bytes per token are the tokenizer's",
                           "phases", "MLP output gate", "before the eval timer"):
        assert false_for_2135 not in text, false_for_2135
    assert make_record.credits("2135", c).count("PR #2135") == 1 and "PR #1855" in make_record.credits("2135", c)
    assert "GatedAttn" not in make_record.credits("2135", c) and "GatedAttn" in make_record.credits("1886", c)
    sub = make_record.submission("n", "a", "b", "2026-12-04", "", [run, run], "non_record_16mb", "2135")
    assert sub["attribution"]["base_stack"] == "PR #2135 (@codemath3000)" and "phased_ttt" in sub["attribution"]


@pytest.mark.parametrize("setting, value, stated", [
    ("leaky_relu_slope", "0.3", "LeakyReLU(0.3)^2"), ("mlp_gate_enabled", "True", "per-block MLP output gate"),
    ("grad_clip_mean", "True", "once, after the rank average"), ("smear_gate_bos_fix", "True", "never into a"),
    ("train_seq_schedule", "64@0.5,256@1", "progressive training context 64@0.5,256@1"),
    ("awq_lite_enabled", "True", "AWQ-lite"), ("token_max_prob", "0.9", "never past probability 0.9"),
    ("ttt_short_score_first_steps", "256:8", "longest tokens:chunk 256:8"),
    ("ttt_grad_steps", "2", "2 Adam steps a chunk (each later one adding its gradient"),
    ("phased_ttt_num_phases", "2", "2 phases over"), ("ttt_k_lora", "True", "values, keys,"),
    ("ngram_hint_precompute_outside", "True", "not counted in eval_time"),
    ("ttt_grad_chunk_only", "True", "backpropagates through the chunk's tokens only"),
])
def test_a_candidate_setting_is_stated(caseops_run, setting, value, stated):
    """Each candidate of issue 27 changes what the README says the run did."""
    run = dict(caseops_run, config=dict(caseops_run["config"], **{setting: value}))
    assert stated not in "\n".join(make_record.techniques(caseops_run))
    assert stated in "\n".join(make_record.techniques(run))


@pytest.mark.parametrize("settings, stated", [
    (dict(train_seq_schedule="64@0.5,256@1", seq_change_warmup_steps="32"), "climbs back over 32 steps"),
    (dict(ttt_grad_steps="2", ttt_grad_steps_clean="True"), "each later one on its own gradient"),
    (dict(ttt_grad_steps="2", ttt_grad_steps_tokens="1024"),
     "2 Adam steps a chunk on the chunks that end within their document's first 1024 tokens, one on later chunks ("),
])
def test_a_candidates_companion_setting_is_stated(caseops_run, settings, stated):
    run = dict(caseops_run, config=dict(caseops_run["config"], **settings))
    assert stated in "\n".join(make_record.techniques(run))


@pytest.mark.parametrize("codec, pip_line, needs_lrzip", [("brotli+lrzip", None, True), ("brotli+zpaq", "zpaq", False),
                                                          ("brotli", None, False)])
def test_requirements_name_what_decompresses_the_artifact(caseops_run, codec, pip_line, needs_lrzip):
    run = dict(caseops_run, quantize=dict(caseops_run["quantize"], codec=codec))
    text = make_record.requirements([run])
    extra = text.removeprefix(make_record.REQUIREMENTS)
    assert extra != text and [line for line in extra.splitlines() if not line.startswith("#")] == [pip_line] * bool(pip_line)
    assert ("apt-get install lrzip" in extra) == needs_lrzip


def test_the_artifact_codec_is_named_for_every_seed(caseops_run):
    """Seeds packed on two machines can differ in codec (each packs with the best it has): the README names each
    seed's, not the first's for all."""
    lrzip, zpaq = (dict(caseops_run, seed=seed, quantize=dict(caseops_run["quantize"], codec=codec))
                   for seed, codec in ((42, "brotli+lrzip"), (314, "brotli+zpaq")))
    assert make_record.seed_codecs([lrzip, dict(lrzip, seed=314)]) == "brotli+lrzip"
    assert make_record.seed_codecs([lrzip, zpaq]) == "by seed: 42 brotli+lrzip, 314 brotli+zpaq"


def test_what_the_readme_says_follows_what_train_gpt_does(caseops_run):
    """AsymLogit's pair is never trained (so the scores are the single softcap's); PARALLEL_START_LAYER=0 runs no
    lanes; the bytes are the sidecar's only where train_gpt.py reads it (CASEOPS_ENABLED)."""
    run, c = caseops_run, caseops_run["config"]
    assert f"both stay {c['logit_softcap']} and the scores are the single softcap's" in "\n".join(
        make_record.techniques(run))
    no_lanes = dict(run, config=dict(c, parallel_start_layer="0"))
    assert "parallel residual lanes" not in "\n".join(make_record.techniques(no_lanes))
    assert f"parallel residual lanes from layer {c['parallel_start_layer']}" in "\n".join(make_record.techniques(run))
    assert "original UTF-8 bytes" in make_record.legality(c)
    assert "the tokenizer's pieces" in make_record.legality(dict(c, caseops_enabled="False"))


@pytest.mark.parametrize("setting, value, origin", [
    ("train_seq_schedule", "64@0.5,256@1", "PR #2014"), ("mlp_gate_enabled", "True", "PR #1941"),
    ("awq_lite_enabled", "True", "PR #1908"), ("ttt_short_score_first_steps", "256:8", "PR #2014"),
    ("token_max_prob", "0.9", "golfrun"), ("ttt_grad_steps", "2", "golfrun (the setting"),
    ("ttt_grad_steps_tokens", "1024", "first tokens | golfrun"), ("ttt_chunk_size", "36", "PR #1966"),
    ("ttt_grad_chunk_only", "True", "chunk only | golfrun"), ("ttt_batch_size", "96", "64 documents | golfrun"),
])
def test_an_enabled_candidate_is_credited(caseops_run, setting, value, origin):
    # without it, only the setting differs (TTT_GRAD_STEPS_TOKENS needs the two steps it limits; the smoke run's
    # TTT chunk and batch are not the records' 48 and 64)
    c = dict(caseops_run["config"], **{"ttt_grad_steps_tokens": {"ttt_grad_steps": "2"},
                                       "ttt_chunk_size": {"ttt_chunk_size": "48"},
                                       "ttt_batch_size": {"ttt_batch_size": "64"}}.get(setting, {}))
    on = dict(c, **{setting: value})
    row = next(line for line in make_record.credits("2135", on).splitlines() if origin in line and "PR #2130" not in line
               and "One TTT phase" not in line)
    assert row not in make_record.credits("2135", c)
    sub = make_record.submission("n", "a", "b", "2026-12-04", "", [dict(caseops_run, config=on)] * 2,
                                 "non_record_16mb", "2135")
    assert len(sub["attribution"]) == len(make_record.credit_rows("2135", c)) + 1


def test_golf_credits_the_stack_it_is_built_on_and_its_candidates(caseops_run):
    """RECIPE=golf's README and submission.json: #2135's lineage and the candidates its config enables (its
    settings over #2135's; short-document chunks when a run adds them); its name, not a PR number, where a recipe
    is named."""
    over = {name: str(value) for name, value in tg.RECIPES["golf"].items() if tg.RECIPES["2135"].get(name) != value}
    golf = dict(caseops_run["config"], recipe="golf", **over)
    rows = make_record.credit_rows("golf", golf)
    keys = [key for key, _, _ in rows]
    assert len(keys) == len(set(keys)), "attribution keys must be unique"
    assert set(over) | {"caseops", "phased_ttt"} <= set(keys) and "short_doc_ttt_chunks" not in keys
    shortdoc = make_record.credit_rows("golf", dict(golf, ttt_short_score_first_steps="256:8,2000:24"))
    assert sorted(key for key, _, _ in shortdoc) == sorted(keys + ["short_doc_ttt_chunks"])
    assert rows[0] == ("base_stack", "The stack built on: PR #2135's", "PR #2135 (@codemath3000)")
    assert make_record.recipe_label("golf") == "RECIPE=golf (golfrun's own)"
    assert make_record.recipe_label("2135") == "#2135"
