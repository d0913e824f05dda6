"""Bad input found by trying 29 of them (issue 25, section 3): each is refused at start with one `error:` line
that names the problem and the fix, never a traceback or a run that fails only after training."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import train_gpt as tg
from conftest import PROXY_DATA, REPO, TOKENIZER, clean_env
from test_data import write_shard


def start(monkeypatch, capsys, tmp_path, **env) -> str:
    """main() in tmp_path with env as the whole environment: its start-up error line (it must refuse)."""
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in {"DATA_PATH": PROXY_DATA, "TOKENIZER_PATH": TOKENIZER, **env}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(tmp_path)
    assert tg.main() == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_quantize_only_needs_weights_of_this_model(monkeypatch, capsys, tmp_path, smoke_log):
    """QUANTIZE_ONLY=1: no PREQUANT_PATH, a file that is not a training run's weights, EVAL_ONLY=1 beside it, or
    weights of another model config are each refused at start, naming the setting."""
    needs = "QUANTIZE_ONLY=1 needs EVAL_ONLY=0 and PREQUANT_PATH="
    assert needs in start(monkeypatch, capsys, tmp_path, SMOKE=1, QUANTIZE_ONLY=1)
    (tmp_path / "other.pt").write_bytes(b"not a torch file")
    assert needs in start(monkeypatch, capsys, tmp_path, SMOKE=1, QUANTIZE_ONLY=1, PREQUANT_PATH=tmp_path / "other.pt")
    h = tg.load_hyperparameters({"SMOKE": "1"})
    torch.save(dict(tg.model_config(h), state={}, looping=False), tmp_path / "w.pt")
    assert needs in start(monkeypatch, capsys, tmp_path, SMOKE=1, QUANTIZE_ONLY=1, EVAL_ONLY=1,
                          PREQUANT_PATH=smoke_log[0] / "models" / "smoke.pt", ARTIFACT_PATH=smoke_log[0] / "smoke.golf")
    err = start(monkeypatch, capsys, tmp_path, SMOKE=1, QUANTIZE_ONLY=1, PREQUANT_PATH=tmp_path / "w.pt",
                NUM_LAYERS=h.num_layers + 1)
    assert f"PREQUANT_PATH={tmp_path / 'w.pt'} was trained with NUM_LAYERS={h.num_layers}: set the same" in err


def test_an_empty_validation_stream_is_refused_at_start(monkeypatch, capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_shard(data / "fineweb_val_000000.bin", [])
    write_shard(data / "fineweb_train_000000.bin", [1, 5, 6, 7])
    assert "holds 0 token(s): nothing to score" in start(monkeypatch, capsys, tmp_path, SMOKE=1, DATA_PATH=data)
    err = start(monkeypatch, capsys, tmp_path, SMOKE=1, VAL_MAX_TOKENS=1)
    assert "holds 1 token(s) (VAL_MAX_TOKENS=1)" in err
    err = start(monkeypatch, capsys, tmp_path, SMOKE=1, VAL_MAX_TOKENS=0, EVAL_SEQ_LEN=65536, VAL_BATCH_TOKENS=65536)
    assert "the val stream holds 62569 tokens, under one EVAL_SEQ_LEN=65536 of targets" in err  # the sample's


def test_a_log_that_cannot_be_created_is_a_start_error(monkeypatch, capsys, tmp_path):
    (tmp_path / "logs").write_text("a file where the logs folder goes")
    assert "cannot create the log folder logs" in start(monkeypatch, capsys, tmp_path, SMOKE=1, RUN_ID="a")


def test_two_runs_started_with_one_run_id_get_a_clear_error(monkeypatch, capsys, tmp_path):
    """The other run creates the log between this run's check (run_files) and its log's creation."""
    checks = tg.check_inputs

    def other_run_takes_the_name(h, ctx):
        (tmp_path / "logs").mkdir(exist_ok=True)
        (tmp_path / "logs" / "same.txt").write_text("")
        return checks(h, ctx)

    monkeypatch.setattr(tg, "check_inputs", other_run_takes_the_name)
    err = start(monkeypatch, capsys, tmp_path, SMOKE=1, RUN_ID="same")
    assert "created by another run started with RUN_ID=same" in err


def test_a_file_that_is_not_a_tokenizer_is_named(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"TOKENIZER_PATH=.*notes.txt is not a SentencePiece model"):
        tg.load_tokenizer(str(text), 8192)


@pytest.mark.parametrize("typo, meant", [("ITERS", "ITERATIONS"), ("ITER", "ITERATIONS"),
                                         ("BATCH_SIZE", "TTT_BATCH_SIZE"), ("MAX_WALLCLOCK", "MAX_WALLCLOCK_SECONDS"),
                                         ("NUM_LAYER", "NUM_LAYERS"), ("SEQ_LEN", "_SEQ_LEN")])
def test_abbreviations_of_our_names_are_typos(typo, meant):
    with pytest.raises(ValueError, match=rf"unknown hyperparameter env var {typo}\. Did you mean \w*{meant}\?"):
        tg.load_hyperparameters({typo: "5"})


def test_other_programs_variables_are_not_typos():
    others = ["PATH", "HOME", "USER", "CI", "TMPDIR", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "CUDA_HOME",
              "NCCL_DEBUG", "NCCL_IB_DISABLE", "TORCH_LOGS", "TORCHINDUCTOR_CACHE_DIR", "PYTORCH_CUDA_ALLOC_CONF",
              "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUM_THREADS", "TRITON_CACHE_DIR", "HF_HOME", "HF_TOKEN",
              "LD_LIBRARY_PATH", "PYTHONPATH", "MASTER_PORT", "TOKENIZERS_PARALLELISM", "MAX_JOBS", "DATA",
              "MODEL", "EVAL", "MODE", "DEBUG", "SLURM_JOB_ID", "WANDB_PROJECT", "http_proxy"]
    tg.load_hyperparameters({name: "1" for name in others})


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's refusal")
def test_a_full_size_run_on_a_cpu_is_refused_with_the_smoke_hint(monkeypatch, capsys, tmp_path):
    err = start(monkeypatch, capsys, tmp_path)
    assert "no CUDA GPU" in err and "SMOKE=1 python train_gpt.py" in err


def test_smoke_runs_report_the_challenge_time_limit_and_pass():
    notes = []
    over = tg.EVAL_LIMIT_SECONDS + 1
    assert tg.eval_limit_failure(over, tg.load_hyperparameters({"SMOKE": "1"}), notes.append) is None
    assert notes and "over the challenge's 600 s" in notes[0] and "SMOKE=1" in notes[0]
    assert "over the challenge's 600 s" in tg.eval_limit_failure(over, tg.load_hyperparameters({}), notes.append)
    assert tg.eval_limit_failure(tg.EVAL_LIMIT_SECONDS, tg.load_hyperparameters({}), notes.append) is None


def test_an_interrupted_artifact_write_leaves_no_temporary_file(monkeypatch, tmp_path):
    def ctrl_c(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(tg.os, "fsync", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        tg.write_atomically(tmp_path / "run.golf", b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


# ---- the smaller ones ----

def test_head_count_errors_show_the_values():
    h = tg.load_hyperparameters({"SMOKE": "1", "MODEL_DIM": "100", "NUM_HEADS": "3"})
    with pytest.raises(ValueError, match=r"MODEL_DIM=100 must divide by NUM_HEADS=3, and NUM_HEADS by NUM_KV_HEADS"):
        tg.validate_hyperparameters(h, 1)


def test_eval_only_refusal_says_which_value_came_from_the_artifact():
    h = tg.load_hyperparameters({"SMOKE": "1", "MODEL_DIM": "96", "NUM_HEADS": "5"})
    note = "artifact_config: NUM_HEADS=5 from the artifact (this run's setting was 4)"
    inputs = tg.RunInputs(None, np.zeros(2), None, [note], None, {})
    with pytest.raises(ValueError, match=r"NUM_HEADS=5\b.*\(EVAL_ONLY: NUM_HEADS=5 from the artifact"):
        tg.validate_artifact_model(h, tg.DistContext(), inputs)


def test_a_bad_boolean_names_its_variable_once():
    with pytest.raises(ValueError) as err:
        tg.load_hyperparameters({"SMOKE": "true"})
    assert str(err.value).count("SMOKE") == 1 and "0 or 1" in str(err.value)


def test_the_shipped_files_data_hint_needs_no_checkout(tmp_path):
    """A record folder holds the shipped train_gpt.py alone: its missing-data errors cannot point at scripts/."""
    (tmp_path / "train_gpt.py").write_bytes(tg.shipped_file())
    proc = subprocess.run([sys.executable, "-c", "import train_gpt; print(train_gpt.DOWNLOAD_HINT)"], cwd=tmp_path,
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not proc.stdout.startswith("python scripts/") and "willdepueoai/parameter-golf" in proc.stdout
    assert tg.DOWNLOAD_HINT.startswith("python scripts/download_data.py")  # from the checkout: the script
    assert (REPO / "scripts" / "download_data.py").is_file()


def test_a_checkout_without_ship_py_is_refused_at_start(monkeypatch, capsys, tmp_path):
    """A run from the checkout counts its code with ship.py: without it, one error line before any compute."""
    code = tmp_path / "code"
    code.mkdir()
    for name in tg.CODE_FILES:
        (code / name).write_bytes((REPO / name).read_bytes())
    monkeypatch.setattr(tg, "__file__", str(code / "train_gpt.py"))
    err = start(monkeypatch, capsys, tmp_path, SMOKE=1, RUN_ID="a")
    assert f"{code / 'ship.py'} not found" in err and "full checkout" in err
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("schedule", ["64@0.1,128", "64:0.1", "64@0.7,128@0.1", "64@0.5,128@1.5", "0@0.5,256@1"])
def test_a_bad_train_seq_schedule_is_refused_with_its_form(monkeypatch, capsys, tmp_path, schedule):
    err = start(monkeypatch, capsys, tmp_path, SMOKE=1, TRAIN_SEQ_SCHEDULE=schedule)
    assert f"TRAIN_SEQ_SCHEDULE='{schedule}': need stages L@f, f rising within (0, 1], L >= 1" in err


def test_a_train_seq_schedule_longer_than_the_model_is_refused(monkeypatch, capsys, tmp_path):
    err = start(monkeypatch, capsys, tmp_path, SMOKE=1, TRAIN_SEQ_SCHEDULE="64@0.5,512@1")  # TRAIN_SEQ_LEN=256
    assert "TRAIN_SEQ_SCHEDULE's longest stage is 512: set TRAIN_SEQ_LEN=512" in err


# ---- README says what is true (issue 25, section 4) ----

def test_a_run_writes_the_shipped_file_it_counts_beside_its_artifact(smoke_log):
    folder, log = smoke_log
    shipped = (folder / "smoke.train_gpt.py").read_bytes()
    counted = int(re.search(r"^artifact_model_bytes:\d+ code_bytes:(\d+)", log, re.M).group(1))
    assert len(shipped) == counted and shipped == tg.shipped_file()
