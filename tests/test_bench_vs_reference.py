"""scripts/bench_vs_reference.py: the two scripts' log lines parsed into ms/step per recurrence state, and a
real bench (ours at SMOKE size against a stand-in that prints the record's line shapes) launched detached and
collected by a later `report`."""

import argparse
import json
import lzma
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import PROXY_DATA, REPO, TOKENIZER

sys.path.insert(0, str(REPO / "scripts"))
import bench_vs_reference as bench  # noqa: E402

BATCH = 786_432


def record_console(ms_off: float, ms_on: float, steps: int, switch: int, every: int, stamp0: float = 400.0) -> str:
    """A stamped console in the record's line shapes (copied from record_1886_seed42.log)."""
    lines = ["Hyperparameters:", "  train_batch_tokens: 786432", "  train_log_every: 500",
             "model_params:35989658", "warmup_step: 1/20", "loop_warmup_step: 20/20"]
    cum = 0.0
    for step in range(1, steps + 1):
        if step == switch + 1:
            lines.append(f"layer_loop:enabled step:{switch} frac:0.350 encoder:[0, 1, 2, 3, 4, 5, 3, 4] "
                         "decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10]")
        cum += ms_off if step <= switch else ms_on
        if step <= 5 or step % every == 0:
            tok_s = step * BATCH / (cum / 1000)
            lines.append(f"{step}/{steps} train_loss: 3.2631 train_time: {cum / 60000:.1f}m tok/s: {tok_s:.0f}")
    lines += [f"{steps}/{steps} val_loss: 2.7913 val_bpb: 1.0806",
              "peak memory allocated: 41574 MiB reserved: 46878 MiB"]
    return "\n".join(f"[{stamp0 + i:9.3f}] {line}" for i, line in enumerate(lines))


def test_record_lines_give_ms_per_step_per_state():
    r = bench.parse_run(record_console(771.0, 1024.0, steps=100, switch=35, every=5), bench.RECORD_FORMAT)
    assert r["switch_step"] == 35 and r["steps"] == 100 and r["batch_tokens"] == BATCH
    # tok/s is rounded to an integer: the derived times are exact to ~1e-6
    assert r["ms_off"] == pytest.approx(771.0, rel=1e-5)
    assert r["ms_on"] == pytest.approx(1024.0, rel=1e-5)
    assert r["ms_all"] == pytest.approx((35 * 771 + 65 * 1024) / 100, rel=1e-5)
    assert r["peak_gib"] == pytest.approx(41574 / 1024)
    assert r["first_step_s"] == pytest.approx(406.0)  # the stamp of the `1/100 train_loss` line


def test_our_lines_and_the_ratios():
    lines = ["step:1/100 train_loss:9.0 train_time:900ms step_avg:900.00ms lr_mult:1.000"]
    for step in range(5, 101, 5):
        cum = 900 + (min(step, 35) - 1) * 700 + max(0, step - 35) * 950
        if step == 40:
            lines.append("depth_recurrence:on step:35 train_time:24700ms")
        lines.append(f"step:{step}/100 train_loss:4.0 train_time:{cum}ms step_avg:{cum / step:.2f}ms lr_mult:1.000")
    lines.append("peak_memory_allocated:34.70GiB")
    console = "\n".join(f"[{100 + i:9.3f}] {line}" for i, line in enumerate(lines))
    ours = bench.parse_run(console, bench.OURS_FORMAT, "train_batch_tokens:786432\n")
    assert ours["switch_step"] == 35 and ours["first_step_s"] == 100.0 and ours["peak_gib"] == 34.7
    assert ours["ms_off"] == pytest.approx(700.0) and ours["ms_on"] == pytest.approx(950.0)
    record = bench.parse_run(record_console(770.0, 1000.0, 100, 35, 5), bench.RECORD_FORMAT)
    plan = dict(runs=[dict(name="ours", lane=0), dict(name="record", lane=1)], mode="parallel", lanes=[["0"], ["1"]],
                steps=100, seconds=0, skip_steps=5)
    for r in (ours, record):
        r.update(state="stopped_by_bench", tail="")
    text = bench.report_text(plan, dict(ours=ours, record=record))
    row = next(line for line in text.splitlines() if line.startswith("ms/step, recurrence off"))
    assert row.split()[-1] == f"{700 / 770:.3f}"
    row = next(line for line in text.splitlines() if line.startswith("ms/step, recurrence on"))
    assert row.split()[-1] == f"{950 / 1000:.3f}"
    row = next(line for line in text.splitlines() if line.startswith("peak memory"))
    assert row.split()[-1] == f"{34.7 / (41574 / 1024):.3f}"


def test_a_run_without_the_switch_or_the_first_points_reports_dashes():
    console = "[  1.000] step:1/10 train_loss:9.0 train_time:900ms step_avg:900.00ms lr_mult:1.000"
    r = bench.parse_run(console, bench.OURS_FORMAT)
    assert r["ms_off"] is None and r["ms_on"] is None and r["switch_step"] is None and r["peak_gib"] is None


FAKE_RECORD = textwrap.dedent("""
    # Prints the record's log-line shapes at the pace of a 40/60 ms step, then idles (the bench must stop it).
    import os, sys, time
    assert os.path.isdir(os.path.join(os.environ["DATA_DIR"], "datasets", "fineweb10B_sp8192"))
    import flash_attn_interface  # the record's folder is first on PYTHONPATH (the FA3 shim lives there)
    steps, every = int(os.environ["ITERATIONS"]), int(os.environ["TRAIN_LOG_EVERY"])
    assert os.environ["MAX_WALLCLOCK_SECONDS"] == "0"
    print("Hyperparameters:\\n  train_batch_tokens: 786432", flush=True)
    time.sleep(0.5)
    switch = int(0.35 * steps)
    cum = 0.0
    for step in range(1, steps + 1):
        if step == switch + 1:
            print(f"layer_loop:enabled step:{switch} frac:0.350 encoder:[0, 1] decoder:[1, 2]", flush=True)
        cum += 40.0 if step <= switch else 60.0
        time.sleep(0.002)
        if step <= 5 or step % every == 0:
            print(f"{step}/{steps} train_loss: 3.2631 train_time: {cum / 60000:.1f}m tok/s: "
                  f"{step * 786432 / (cum / 1000):.0f}", flush=True)
    print("peak memory allocated: 41574 MiB reserved: 46878 MiB", flush=True)
    time.sleep(300)
""")


def _data_dir(tmp_path):
    """The record's DATA_DIR layout, by symlinks to the proxy shards and the tokenizer."""
    data = tmp_path / "data"
    (data / bench.DATASET_SUBDIR).mkdir(parents=True)
    (data / "tokenizers").mkdir()
    for shard in PROXY_DATA.glob("fineweb_*.bin"):
        (data / bench.DATASET_SUBDIR / shard.name).symlink_to(shard)
    (data / bench.TOKENIZER_FILE).symlink_to(TOKENIZER)
    return data


def test_launch_detached_then_report(tmp_path, capsys):
    """ours (SMOKE, CPU) and the stand-in record on one lane in turn, detached; `report` before the end says
    what is still going, after the end gives both states' ms/step; the idling stand-in is stopped."""
    record_dir = tmp_path / "record"
    record_dir.mkdir()
    (record_dir / "train_gpt.py").write_text(FAKE_RECORD)
    shutil.copy(REPO.parent / "shared" / "reference" / "flash_attn_interface.py", record_dir)
    work = tmp_path / "bench"
    args = ["launch", "--reference", str(record_dir / "train_gpt.py"), "--data-dir", str(_data_dir(tmp_path)),
            "--workdir", str(work), "--mode", "serial", "--gpus", "0", "--steps", "12", "--log-every", "1",
            "--skip-steps", "1", "--ours-env", "SMOKE=1", "--ours-env", "VAL_MAX_TOKENS=4096",
            # the Triton kernels under the CPU interpreter take seconds a step
            "--ours-env", "FUSED_CE_ENABLED=0", "--ours-env", "FUSED_MLP_ENABLED=0"]
    assert bench.main(args) == 0
    assert bench.main(["report", "--workdir", str(work)]) == 0  # right away: nothing measured yet
    early = capsys.readouterr().out
    assert "running" in early or "waiting" in early
    with pytest.raises(SystemExit, match="already holds a bench"):
        bench.main(args)
    states = lambda: [json.loads((work / n / "status.json").read_text())["state"] for n in ("ours", "record")]  # noqa: E731
    # step-bounded runs; the limits only guard against a hang
    assert bench.main(["wait", "--workdir", str(work), "--runs", "ours", "--timeout", "900"]) == 0
    assert states()[0] == "stopped_by_bench"
    with pytest.raises(SystemExit, match="no run named nofusedmlp"):
        bench.main(["wait", "--workdir", str(work), "--runs", "nofusedmlp"])
    assert bench.main(["report", "--workdir", str(work), "--wait", "900"]) == 0
    assert states() == ["stopped_by_bench"] * 2, states()
    assert bench.main(["report", "--workdir", str(work), "--json"]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])
    rec = figures["record"]
    assert rec["switch_step"] == 4 and rec["steps"] == 12  # the stand-in switches at int(0.35 * steps)
    assert rec["ms_off"] == pytest.approx(40.0, rel=1e-4) and rec["ms_on"] == pytest.approx(60.0, rel=1e-4)
    assert rec["first_step_s"] >= 0.5  # after the stand-in's half-second "compile"
    ours = figures["ours"]
    assert ours["switch_step"] == 5 and ours["steps"] == 12  # the first step with step / 12 >= 0.35
    assert ours["ms_off"] > 0 and ours["ms_on"] > 0 and ours["first_step_s"] > 0
    assert "ours/record" in out
    # ours was stopped after its training figures: no artifact was written
    assert "final_prequant_exact" in (work / "ours" / "console.txt").read_text()
    assert not list((work / "ours").glob("*.golf"))


def test_parallel_lanes_put_the_record_alone(tmp_path):
    before = tmp_path / "before"
    before.mkdir()
    for name in ("train_gpt.py", "kernels.py"):
        shutil.copy(REPO / name, before)
    args = argparse.Namespace(data_dir=_data_dir(tmp_path), reference=Path(__file__), env=["SEED=3"], ours_env=[],
                              ref_env=["X=1"], ab=["eager_mlp:FUSED_MLP_ENABLED=0", "nofusedce:FUSED_CE_ENABLED=0"],
                              ab_script=[f"before={before / 'train_gpt.py'}"], gpus="0,1,2", nproc=1, mode="parallel",
                              steps=100, seconds=0.0, log_every=5, skip_steps=5, full=False)
    plan = bench.plan_runs(args)
    lanes = {r["name"]: r["lane"] for r in plan["runs"]}
    assert lanes == dict(ours=0, record=2, eager_mlp=1, nofusedce=0, before=1)
    scripts = {r["name"]: r["script"] for r in plan["runs"]}
    assert scripts["before"] == str((before / "train_gpt.py").resolve()) and scripts["ours"] == str(bench.OURS)
    assert plan["runs"][-1]["env"]["DATA_PATH"] == plan["runs"][0]["env"]["DATA_PATH"]
    env = {r["name"]: r["env"] for r in plan["runs"]}
    assert env["eager_mlp"]["FUSED_MLP_ENABLED"] == "0" and "FUSED_MLP_ENABLED" not in env["ours"]
    assert env["record"]["X"] == "1" and "X" not in env["ours"] and env["ours"]["SEED"] == env["record"]["SEED"]
    assert env["record"]["MAX_WALLCLOCK_SECONDS"] == "0" and env["record"]["ITERATIONS"] == "100"
    assert "DATA_DIR" not in env["ours"]  # ours rejects knob-like variables it does not know
    args.mode = "serial"
    assert {r["lane"] for r in bench.plan_runs(args)["runs"]} == {0}


def test_xz_shards_are_decompressed_once(tmp_path):
    data = tmp_path / "d"
    (data / bench.DATASET_SUBDIR).mkdir(parents=True)
    (data / "tokenizers").mkdir()
    (data / bench.TOKENIZER_FILE).write_bytes(b"x")
    payload = bytes(range(256)) * 100
    for split in ("train", "val"):
        (data / bench.DATASET_SUBDIR / f"fineweb_{split}_000000.bin.xz").write_bytes(lzma.compress(payload))
    shards, _ = bench.prepare_data(data)
    assert (shards / "fineweb_train_000000.bin").read_bytes() == payload
    bench.prepare_data(data)  # second time: nothing to do
    assert not list(shards.glob("*.part"))


def test_bad_arguments_give_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="expected NAME:KEY=VALUE"):
        bench._variant("FUSED_MLP_ENABLED=0")
    with pytest.raises(SystemExit, match="expected NAME=PATH"):
        bench._script_variant("before")
    with pytest.raises(SystemExit, match="no such file"):
        bench._script_variant(f"before={tmp_path / 'missing.py'}")
    with pytest.raises(SystemExit, match="not 'ours'"):
        bench._script_variant(f"ours={__file__}")
    with pytest.raises(SystemExit, match="no kernels.py beside"):  # tests/ holds no kernels.py
        bench._script_variant(f"before={__file__}")
    with pytest.raises(SystemExit, match="no tokenizers/fineweb_8192_bpe.model"):
        bench.prepare_data(tmp_path)
    with pytest.raises(SystemExit, match="no plan.json"):
        bench.main(["report", "--workdir", str(tmp_path)])
    with pytest.raises(SystemExit, match="too few to log"):
        bench.main(["run", "--reference", __file__, "--data-dir", str(tmp_path), "--workdir", str(tmp_path / "w"),
                    "--steps", "10"])
