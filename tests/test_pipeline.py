"""train_gpt.py as participants run it: the CPU smoke pipeline, 2 processes vs 1, eval-only, bad input."""

import math
import os
import re
import subprocess
import sys

import torch

import train_gpt as tg

from conftest import REPO, TOKENIZER, clean_env, metric, run_train


def train_losses(log: str) -> list[tuple[int, float]]:
    return [(int(s), float(v)) for s, v in re.findall(r"^step:(\d+)/\d+ train_loss:([0-9.]+)", log, re.M)]


def test_smoke_run_learns_and_writes_everything(smoke_log):
    """SMOKE=1 with no paths: the shipped sample, 50 steps whatever the machine's speed, and the loss falls
    by a margin that the same 50 steps always give (9.0 -> below 6 on the sample)."""
    tmp, log = smoke_log
    assert f"data_path:{REPO / 'sample_data'}" in log and "tokenizer_check:" in log
    assert re.search(r"^train_time:\d+ms steps:50 ", log, re.M)  # the step count ends training, not the clock
    losses = train_losses(log)
    assert losses[-1][1] < losses[0][1] - 2.0  # the loss falls
    prequant = metric(log, "final_prequant_exact")
    assert prequant < 6.0  # a uniform guess over 8192 tokens costs ~13 bits per token, ~4.3 per byte here
    assert abs(metric(log, "final_roundtrip_exact") - prequant) < 0.05  # quantization costs little
    assert "roundtrip_check: artifact == in-memory quantized model (bit for bit)" in log
    total = int(re.search(r"^artifact_total_bytes:(\d+)", log, re.M).group(1))
    assert 0 < total < 16_000_000 and (tmp / "smoke.golf").stat().st_size < total
    assert "==== source of train_gpt.py ====" in log and "==== source of kernels.py ====" in log


def test_caseops_smoke_run_counts_the_original_bytes_of_the_sidecar(tmp_path):
    """CASEOPS_ENABLED=1 SMOKE=1 (#2135's data): the CaseOps sample and tokenizer, and every scored val_bpb
    (pre-quant, roundtrip, TTT) counts the sidecar's original bytes of the scored targets, stream positions
    1..N-1: val_loss / val_bpb = ln 2 x bytes / targets. The tokenizer's pieces would count other bytes."""
    log = run_train(tmp_path, SMOKE=1, CASEOPS_ENABLED=1, ITERATIONS=10, RUN_ID="caseops")
    sample = REPO / "sample_data" / "datasets" / "sample_caseops"
    assert f"data_path:{sample}\n" in log and "tokenizer_check:" in log
    n = int(re.search(r" val_tokens:(\d+)", log).group(1)) + 1  # the log counts targets, as the records
    nbytes = int(tg.read_shard(sample / "fineweb_val_bytes_000000.bin")[1:n].sum())
    tokens = torch.from_numpy(tg.read_shard(sample / "fineweb_val_000000.bin")[:n].astype("int64"))
    pieces = tg.build_byte_tables(tg.load_tokenizer(str(TOKENIZER), 8192)).target_bytes(
        tokens[:-1], tokens[1:], torch.arange(n - 1))
    assert int(pieces.sum()) != nbytes  # the two rules differ on this stream
    for label in ("final_prequant_exact", "final_roundtrip_exact", "final_ttt_exact"):
        ratio = metric(log, label, "val_loss") / metric(log, label)
        assert abs(ratio / (math.log(2) * nbytes / (n - 1)) - 1) < 1e-6, label
    assert f"scored_targets:{n - 1} " in log  # TTT scored every target once


def test_two_processes_match_one_with_accumulation(tmp_path):
    """Same global batch through 2 gloo ranks x 4 micro-steps vs 1 process x 8: same losses and weights."""
    env = dict(SMOKE=1, ITERATIONS=4, MAX_WALLCLOCK_SECONDS=100000, TTT_ENABLED=0, VAL_MAX_TOKENS=8192,
               TRAIN_LOG_EVERY=1)
    logs = {}
    for n in (1, 2):
        (tmp_path / f"w{n}").mkdir()
        logs[n] = run_train(tmp_path / f"w{n}", nproc=n, RUN_ID=f"w{n}", **env)
    one, two = train_losses(logs[1]), train_losses(logs[2])
    assert len(one) == len(two) == 4
    for (_, a), (_, b) in zip(one, two):
        assert abs(a - b) < 1e-3 * a, (one, two)
    assert abs(metric(logs[1], "final_prequant_exact", "val_loss")
               - metric(logs[2], "final_prequant_exact", "val_loss")) < 1e-3
    assert "world_size:2" in logs[2]


# Put on PYTHONPATH, it replaces time.perf_counter in each torchrun worker by a counter: every reading is one
# tick after the last, and rank 1's tick is 1.5 of rank 0's. The ranks' clocks then disagree by a wide
# margin, and how far training gets under the cap depends on the code, not on the machine's speed.
SKEWED_CLOCK = """
import itertools, os, time
if "RANK" in os.environ:
    _readings, _tick = itertools.count(1), 1.0 + 0.5 * int(os.environ["RANK"])
    time.perf_counter = lambda: next(_readings) * _tick
"""


def test_wallclock_schedule_keeps_two_ranks_identical(tmp_path):
    """Under the wallclock cap the learning rate, the recurrence switch and the stop are functions of time.
    Each rank reads its own clock (here: clocks that run at different rates), so unless the ranks agree on
    one reading per step their learning rates differ and the replicas drift apart; the run then fails its
    roundtrip check on rank 1 (its quantized weights differ from rank 0's artifact), or the ranks stop at
    different steps and their collectives no longer pair up."""
    clock = tmp_path / "skewed_clock"
    clock.mkdir()
    (clock / "sitecustomize.py").write_text(SKEWED_CLOCK)
    python_path = os.pathsep.join(filter(None, [str(clock), os.environ.get("PYTHONPATH")]))
    iterations = 50
    log = run_train(tmp_path, nproc=2, SMOKE=1, ITERATIONS=iterations, MAX_WALLCLOCK_SECONDS=15, TTT_ENABLED=0,
                    VAL_MAX_TOKENS=8192, RUN_ID="wall2", PYTHONPATH=python_path)
    steps = int(re.search(r"^train_time:\d+ms steps:(\d+) .* cap:15.0s", log, re.M).group(1))
    assert 2 <= steps < iterations  # the clock ended training, after more than one step
    assert "depth_recurrence:on" in log  # the time-based schedule really ran
    assert "roundtrip_check: artifact == in-memory quantized model (bit for bit)" in log


def test_the_agreed_clock_is_a_host_collective_beside_nccl(monkeypatch):
    """On GPUs the process group is NCCL for GPU tensors and gloo for host tensors, and the agreed clock
    all-reduces a host tensor: reading a GPU tensor's value would wait for the step's kernels, and the GPU would
    idle while the host queues the next step. Fails with NCCL alone, with the clock on the GPU (a CUDA tensor,
    which this CPU build refuses) and with a backend check that misses "cpu:gloo,cuda:nccl"."""
    init = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(tg.dist, "init_process_group", lambda backend, **kw: init.update(backend=backend, **kw))
    monkeypatch.setattr(tg.dist, "get_backend", lambda group=None: init["backend"])
    for name, value in dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1").items():
        monkeypatch.setenv(name, value)
    ctx = tg.init_distributed()
    assert ctx.device == torch.device("cuda", 1) and init["device_id"] == ctx.device and ctx.nccl
    assert sorted(init["backend"].split(",")) == ["cpu:gloo", "cuda:nccl"]
    reduced = []

    def all_reduce(tensor, op=None):
        reduced.append(tensor.device)
        tensor.fill_(2.5)  # the slower rank's reading
    monkeypatch.setattr(tg.dist, "all_reduce", all_reduce)
    assert tg.agreed_seconds(ctx, 1.0) == 2.5 and reduced == [torch.device("cpu")]


def test_eval_only_reproduces_the_roundtrip(smoke_log, tmp_path):
    smoke_dir, smoke = smoke_log
    log = run_train(tmp_path, SMOKE=1, EVAL_ONLY=1, RUN_ID="evalonly", ARTIFACT_PATH=smoke_dir / "smoke.golf")
    assert metric(log, "final_roundtrip_exact") == metric(smoke, "final_roundtrip_exact")
    assert "final_ttt_exact" in log and not train_losses(log)  # no training steps ran


def test_quantize_only_rebuilds_the_training_runs_artifact(smoke_log, tmp_path):
    """QUANTIZE_ONLY=1 on the weights the smoke run saved (PREQUANT_PATH) collects their Hessians again and
    writes the very artifact of the training run, with the same scores; so a quantization setting can be
    compared on one trained model (ab_runs' --quant-variant). No training: no train_time line."""
    smoke_dir, smoke = smoke_log
    log = run_train(tmp_path, SMOKE=1, QUANTIZE_ONLY=1, RUN_ID="requant",
                    PREQUANT_PATH=smoke_dir / "models" / "smoke.pt")
    assert not re.search(r"^train_time:", log, re.M) and re.search(r"^train_time:", smoke, re.M)
    assert (tmp_path / "requant.golf").read_bytes() == (smoke_dir / "smoke.golf").read_bytes()
    for label in ("final_prequant_exact", "final_roundtrip_exact", "final_ttt_exact"):
        assert metric(log, label) == metric(smoke, label), label


def test_missing_data_names_the_download_command(tmp_path):
    env = clean_env(DATA_PATH=tmp_path, TOKENIZER_PATH=TOKENIZER)
    proc = subprocess.run([sys.executable, str(REPO / "train_gpt.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no val shards match" in proc.stderr and "scripts/download_data.py" in proc.stderr


def test_unknown_knob_stops_the_run_at_once(tmp_path):
    env = clean_env(TTT_WEIGTH_DECAY="2.0")
    proc = subprocess.run([sys.executable, str(REPO / "train_gpt.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Did you mean TTT_WEIGHT_DECAY" in proc.stderr


def test_ttt_split_over_two_ranks_scores_every_target_once(smoke_log, tmp_path):
    """EVAL_ONLY of the smoke artifact on 2 gloo ranks: the plain eval matches 1 process, and TTT (batches
    spread over the ranks, global SGD gradients all-reduced) scores every target exactly once."""
    smoke_dir, smoke = smoke_log
    log = run_train(tmp_path, nproc=2, SMOKE=1, EVAL_ONLY=1, RUN_ID="ttt2", ARTIFACT_PATH=smoke_dir / "smoke.golf")
    assert "world_size:2" in log
    # eval windows hold whole pieces: the same context for every target at any world size
    assert abs(metric(log, "final_roundtrip_exact") - metric(smoke, "final_roundtrip_exact")) < 1e-6
    val_tokens = int(re.search(r"val_tokens:(\d+)", log).group(1))
    assert int(re.search(r"scored_targets:(\d+)", log).group(1)) == val_tokens  # targets, as the records count
    two, one = metric(log, "final_ttt_exact"), metric(smoke, "final_ttt_exact")
    # TTT_RECORD_WORLD_SIZE=8 virtual GPUs at any world size: the same batches, warm A and SGD steps
    assert two < metric(log, "final_roundtrip_exact") and abs(two - one) < 1e-4


def test_eval_only_refuses_a_model_setting_that_contradicts_the_artifact(smoke_log, tmp_path):
    """The artifact stores its model config: LOGIT_SOFTCAP=10 would score its weights in another model."""
    smoke_dir, _ = smoke_log
    env = clean_env(SMOKE=1, EVAL_ONLY=1, RUN_ID="softcap", LOGIT_SOFTCAP=10, ARTIFACT_PATH=smoke_dir / "smoke.golf")
    proc = subprocess.run([sys.executable, str(REPO / "train_gpt.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "LOGIT_SOFTCAP=10.0 but the artifact" in proc.stderr
    assert not (tmp_path / "logs").exists()  # refused before the run's log was created
