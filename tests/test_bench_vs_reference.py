"""scripts/bench_vs_reference.py: the two scripts' log lines parsed into ms/step per recurrence state, and a
real bench (ours at SMOKE size against a stand-in that prints the record's line shapes) launched detached and
collected by a later `report`."""

import argparse
import json
import lzma
import os
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
    # --no-record: the variant (here the record's figures under another name) against ours
    plan.update(runs=[dict(name="ours", lane=0), dict(name="cdt", lane=1)], baseline="ours")
    text = bench.report_text(plan, dict(ours=ours, cdt=record))
    assert text.splitlines()[0].split() == ["ours", "cdt", "cdt/ours"]
    row = next(line for line in text.splitlines() if line.startswith("ms/step, recurrence off"))
    assert row.split()[-1] == f"{770 / 700:.3f}"


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
    args = argparse.Namespace(data_dir=_data_dir(tmp_path), reference=Path(__file__), ours_script=bench.OURS,
                              env=["SEED=3"], ours_env=[], ref_env=["X=1"],
                              ab=["eager_mlp:FUSED_MLP_ENABLED=0", "nofusedce:FUSED_CE_ENABLED=0"],
                              ab_script=[f"before={before / 'train_gpt.py'}"], gpus="0,1,2", nproc=1, mode="parallel",
                              steps=100, seconds=0.0, log_every=5, skip_steps=5, full=False, whole=False,
                              train_only=False, record_first=False, recipe="1886", no_record=False)
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
    alone = tmp_path / "alone" / "train_gpt.py"  # a shipped file holds its kernels: accepted alone
    alone.parent.mkdir()
    alone.write_bytes(bench.ship.SHIPPED_HEAD.encode("latin-1") + b"'x'")
    assert bench._script_variant(f"shipped={alone}") == ("shipped", alone.resolve())
    old = b"# golfrun; readable sources: any run's log; coding: latin-1\nimport lzma;_B,*_S=lzma.decompress('x')"
    alone.write_bytes(old)  # a shipped file of the escaped-bytes format: accepted too
    assert bench._script_variant(f"before={alone}") == ("before", alone.resolve())
    with pytest.raises(SystemExit, match="no tokenizers/fineweb_8192_bpe.model"):
        bench.prepare_data(tmp_path)
    with pytest.raises(SystemExit, match="no plan.json"):
        bench.main(["report", "--workdir", str(tmp_path)])
    with pytest.raises(SystemExit, match="too few to log"):
        bench.main(["run", "--reference", __file__, "--data-dir", str(tmp_path), "--workdir", str(tmp_path / "w"),
                    "--steps", "10"])


# ---- whole runs (--whole): the cap on, GPTQ and artifact, TTT off ----

REFERENCE = REPO.parent / "shared" / "reference"
RECORD_SEED_LOG = REFERENCE / "record_1886_seed42.log"
OUR_WHOLE_LOG = REPO / "docs" / "runs" / "2026-12-04" / "recipe2135_pipeline_h200_shipped.txt"


def _stamped(text: str, start: float) -> str:
    """A console of a log's lines, one second apart from `start`."""
    return "\n".join(f"[{start + i:9.3f}] {line}" for i, line in enumerate(text.splitlines()))


def _whole_workdir(tmp_path, ours_log: str, record_log: str | None, seed_logs=(), record_first=False,
                   variant_log: str | None = None) -> Path:
    """A finished --whole bench folder holding the given logs (console and log file), as `report` reads it;
    without a record log, a --no-record bench of ours and its variant `cdt`."""
    work = tmp_path / "whole"
    second = ("record", "record", record_log) if record_log is not None else ("cdt", "ours", variant_log)
    runs = [dict(name="ours", env=dict(RUN_ID="bench_ours"), format="ours", lane=0),
            dict(name=second[0], env=dict(RUN_ID=f"bench_{second[0]}"), format=second[1], lane=1)]
    for run, text, start in ((runs[0], ours_log, 100.0), (runs[1], second[2], 400.0)):
        (work / run["name"] / "logs").mkdir(parents=True)
        (work / run["name"] / "console.txt").write_text(_stamped(text, start))
        (work / run["name"] / "logs" / f"{run['env']['RUN_ID']}.txt").write_text(text)
        (work / run["name"] / "status.json").write_text(json.dumps(dict(state="done", returncode=0)))
    plan = dict(runs=runs[::-1] if record_first else runs, lanes=[["0"], ["1"]], nproc=1, full=True, skip_steps=5,
                steps=100, seconds=300.0,
                mode="parallel", whole=dict(recipe="1886", seed_logs=[str(p) for p in seed_logs]),
                baseline="record" if record_log is not None else "ours")
    (work / "plan.json").write_text(json.dumps(plan))
    return work


def _row(text: str, label: str) -> list[str]:
    return next(line for line in text.splitlines() if line.startswith(label))[len(label):].split()


@pytest.mark.parametrize("record_first", [False, True])
def test_whole_report_reads_both_scripts_logs(tmp_path, record_first):
    """The record's seed-42 log and our 2026-12-04 run, read as a finished bench: each figure from its own line,
    ours first and ours/record whichever ran first."""
    if not RECORD_SEED_LOG.is_file():
        pytest.skip(f"needs {RECORD_SEED_LOG}")
    record_text, ours_text = RECORD_SEED_LOG.read_text(), OUR_WHOLE_LOG.read_text()
    work = _whole_workdir(tmp_path, ours_text, record_text, record_first=record_first)
    plan, results = bench.collect(work)
    text = bench.report_text(plan, results)
    assert _row(text, "steps made") == ["47", "4868", f"{47 / 4868:.3f}", ">=", "1.03", "NOT", "met"]
    assert _row(text, "train stop, s") == ["40.79", "599.40", f"{40.789 / 599.405:.3f}"]  # ours' stop line: 40789ms
    assert _row(text, "training budget, s") == ["40.53", "599.50", f"{40.53 / 599.5:.3f}"]  # 60 - 19.47; effective
    # ours logs its data-access end; the record's is its stop + its `GPTQ:collected 67 Hessians in 3.8s`
    assert _row(text, "data-access end, s") == ["58.58", "603.20", f"{58.58 / 603.205:.3f}", "(record:", "derived)"]
    assert _row(text, "Hessian time, s") == ["17.79", "3.80", f"{(58.58 - 40.79) / 3.8:.3f}", "<=", "1", "NOT", "met"]
    assert _row(text, "Hessian probe before the clock, s") == ["15.18", "n/a", "-"]
    assert _row(text, "Hessians") == ["67", "67", "1.000"]
    assert _row(text, "peak memory, GiB") == ["42.67", f"{41574 / 1024:.2f}", f"{42.67 / (41574 / 1024):.3f}", "<=",
                                              "1", "NOT", "met"]
    # first step: the stamp of the first step line of each console (one second a line from 100 s and 400 s)
    ours_first = 100.0 + next(i for i, line in enumerate(ours_text.splitlines()) if line.startswith("step:1/"))
    record_first = 400.0 + next(i for i, line in enumerate(record_text.splitlines()) if line.startswith("1/20000 "))
    assert _row(text, "first step after launch, s")[:3] == [f"{ours_first:.1f}", f"{record_first:.1f}",
                                                            f"{ours_first / record_first:.3f}"]
    # ours logged steps 1-5 and its stop (47), switching at 29: no two points in either state
    assert _row(text, "ms/step, recurrence off")[:2] == ["not", "in"]
    assert _row(text, "ms/step, whole run")[:2] == [f"{40789 / 47:.1f}", f"{599405 / 4868:.1f}"]
    assert f"inside the clock took {(58.58 - 40.79) / 15.18:.3f}x the probe (reserve factor 1.25" in text
    assert "projection: not yet" in text


def test_whole_report_without_the_record_compares_each_variant_with_ours(tmp_path):
    """--no-record: ours and its variant side by side, the variant/ours ratios, no targets and no projection."""
    ours_text = OUR_WHOLE_LOG.read_text()
    variant = ours_text.replace("train_time:40789ms steps:47 ", "train_time:40789ms steps:50 ").replace(
        "peak_memory_allocated:42.67GiB", "peak_memory_allocated:40.00GiB")
    plan, results = bench.collect(_whole_workdir(tmp_path, ours_text, None, variant_log=variant))
    text = bench.report_text(plan, results)
    assert text.splitlines()[0].split()[-3:] == ["ours", "cdt", "cdt/ours"]
    assert _row(text, "steps made") == ["47", "50", f"{50 / 47:.3f}"]
    assert _row(text, "peak memory, GiB") == ["42.67", "40.00", f"{40 / 42.67:.3f}"]
    assert _row(text, "Hessian probe before the clock, s") == ["15.18", "15.18", "1.000"]
    assert "target" not in text and "projection: none without the record's run (--no-record)" in text
    assert "cdt's Hessians inside the clock took" in text


def _seed_log(ms_off: float, ms_on: float, steps: int, switch: int, budget_ms: int) -> str:
    """A record seed log: its step lines (tok/s), switch, stop line and budget line."""
    lines = record_console(ms_off, ms_on, steps, switch, every=50, stamp0=0).splitlines()
    stop_ms = switch * ms_off + (steps - switch) * ms_on
    return "\n".join([f"gptq:reserving 0s, effective={budget_ms}ms"] + [bench.STAMP.match(x).group(2) for x in lines]
                     + [f"stopping_early: wallclock_cap train_time: {stop_ms:.0f}ms step: {steps}/20000"])


def test_projection_scales_the_record_logs_by_the_ratios(tmp_path):
    """Ours on 8xH100 = each seed log's steps x (ours' budget x (f / ms_off + (1 - f) / ms_on)) / (the record's),
    ours' step times the seed log's times the ratios measured here; ours' budget is 600 s less the reserve with
    each rank's share of the calibration batches."""
    logs = []
    for seed, (a, b, n, sw) in enumerate([(100.0, 150.0, 4800, 2000), (90.0, 140.0, 5000, 2300)]):
        logs.append(tmp_path / f"train_seed{seed}.log")
        logs[-1].write_text(_seed_log(a, b, n, sw, 599_500))
    plan = dict(skip_steps=5, whole=dict(recipe="2135", seed_logs=[str(p) for p in logs]))
    record = dict(ms_off=800.0, ms_on=1200.0)
    ours = dict(ms_off=720.0, ms_on=1200.0, probe_s=3.2, reserve_factor=1.25, gptq_reserve_s=0.5,
                calibration_batches=32.0)
    lines = bench.projection_lines(plan, ours, record)
    reserve = 0.5 + 1.25 * 3.2 * (4 / 32)  # 32 batches over 8 ranks: 4 each
    expected = []
    for a, b, n in ((100.0, 150.0, 4800), (90.0, 140.0, 5000)):
        ours_rate = (600 - reserve) * (0.35 / (0.9 * a) + 0.65 / (1.0 * b))
        expected.append(n * ours_rate / (599.5 * (0.35 / a + 0.65 / b)))
    mean = sum(expected) / 2
    assert lines[0].startswith(f"projected 8xH100 steps in 600 s: ours {mean:.0f}, the record's logs 4900 "
                               f"({mean / 4900:.3f}x")
    assert f"-> ours {expected[0]:.0f}" in lines[3] and f"-> ours {expected[1]:.0f}" in lines[4]
    assert f"= {reserve:.2f} s)" in lines[1]
    # the same step times and budget as the record: its own steps
    same = bench.projection_lines(plan, dict(ours, ms_off=800.0, probe_s=0.0, gptq_reserve_s=0.5), record)
    assert same[0].startswith("projected 8xH100 steps in 600 s: ours 4900, the record's logs 4900 (1.000x")


def _layout(tmp_path, recipe: str) -> Path:
    """The recipe's DATA_DIR layout (the record's), by symlinks to the shipped sample."""
    shards_rel, tokenizer_rel = bench.recipe_layout(recipe)
    sample = "sample_caseops" if recipe == "2135" else "sample_sp8192"
    data = tmp_path / f"data{recipe}"
    (data / shards_rel).mkdir(parents=True)
    (data / tokenizer_rel).parent.mkdir(parents=True)
    for shard in (REPO / "sample_data" / "datasets" / sample).glob("fineweb_*.bin"):
        (data / shards_rel / shard.name).symlink_to(shard)
    (data / tokenizer_rel).symlink_to(REPO / "sample_data" / "tokenizers" / tokenizer_rel.name)
    return data


def _whole_args(data: Path, recipe: str, **extra) -> argparse.Namespace:
    args = dict(data_dir=data, reference=None, ours_script=bench.OURS, env=["SEED=42"], ours_env=[], ref_env=[],
                ab=[], ab_script=[], gpus="0,1", nproc=1, mode="parallel", steps=100, seconds=300.0, log_every=5,
                skip_steps=5, full=False, whole=True, recipe=recipe, dry_run=True, train_only=False,
                record_first=False, no_record=False)
    args.update(extra)
    args = argparse.Namespace(**args)
    if not args.no_record:
        args.reference = args.reference or bench._record_oracle().RECORDS[recipe]
    return args


@pytest.mark.parametrize("recipe", ["1886", "2135"])
def test_whole_run_environments_follow_the_recipe(tmp_path, recipe):
    """Ours runs RECIPE=recipe with the cap, TTT off and no periodic validation; the record its own logged
    configuration (every setting of ours it reads: #2135's CaseOps data, calibration, compressor), TTT off, the same
    cap, seed and data, with its folder and the FA3 shim's on PYTHONPATH; both run to the end."""
    data = _layout(tmp_path, recipe)
    plan = bench.plan_runs(_whole_args(data, recipe))
    env = {r["name"]: r["env"] for r in plan["runs"]}
    ours, record = env["ours"], env["record"]
    assert plan["full"] and plan["whole"]["recipe"] == recipe
    assert (ours["RECIPE"], ours["TTT_ENABLED"], ours["VAL_LOSS_EVERY"], ours["MAX_WALLCLOCK_SECONDS"]) == (
        recipe, "0", "0", "300.0")
    for key in ("MAX_WALLCLOCK_SECONDS", "SEED", "TRAIN_LOG_EVERY", "VAL_LOSS_EVERY"):
        assert record[key] == ours[key], key
    assert record["TTT_ENABLED"] == "0" and record["DATA_DIR"] == str(data.resolve())
    script = {r["name"]: r["script"] for r in plan["runs"]}["record"]
    paths = record["PYTHONPATH"].split(os.pathsep)
    assert str(Path(script).parent) in paths and str(bench._record_oracle().REFERENCE_DIR.resolve()) in paths
    if recipe == "2135":
        assert script.endswith("record_2135/train_gpt.py")
        assert (record["CASEOPS_ENABLED"], record["GPTQ_CALIBRATION_BATCHES"], record["COMPRESSOR"]) == (
            "1", "32", "pergroup")
        assert record["DATA_PATH"] == ours["DATA_PATH"] and record["TOKENIZER_PATH"] == ours["TOKENIZER_PATH"]
        assert ours["DATA_PATH"].endswith("fineweb10B_sp8192_lossless_caps_caseops_v1_reserved")
    else:
        assert script.endswith("record_1886_train_gpt.py")
        assert (record["GATED_ATTN_ENABLED"], record["GPTQ_CALIBRATION_BATCHES"]) == ("1", "16")
        assert "DATA_PATH" not in record  # #1886's script reads DATA_DIR only
    assert {r["name"]: r["lane"] for r in plan["runs"]} == dict(ours=0, record=1)
    assert {r["lane"] for r in bench.plan_runs(_whole_args(data, recipe, mode="sequential"))["runs"]} == {0}
    first = bench.plan_runs(_whole_args(data, recipe, mode="sequential", record_first=True, train_only=True))
    assert [r["name"] for r in first["runs"]] == ["record", "ours"] and first["train_only"]


def test_no_record_plans_ours_and_its_variants_only(tmp_path):
    """--no-record: ours and the --ab variant over both lanes, the variant's setting its own, no record's run,
    environment or seed logs; ratios against ours."""
    data = _layout(tmp_path, "2135")
    plan = bench.plan_runs(_whole_args(data, "2135", no_record=True, ours_env=["SMEAR_GATE_BOS_FIX=1"],
                                       ab=["cdt:TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1"]))
    env = {r["name"]: r["env"] for r in plan["runs"]}
    assert {r["name"]: r["lane"] for r in plan["runs"]} == dict(ours=0, cdt=1)
    assert env["ours"]["SMEAR_GATE_BOS_FIX"] == env["cdt"]["SMEAR_GATE_BOS_FIX"] == "1"
    assert env["cdt"]["TORCHINDUCTOR_COORDINATE_DESCENT_TUNING"] == "1"
    assert "TORCHINDUCTOR_COORDINATE_DESCENT_TUNING" not in env["ours"]
    assert env["cdt"]["RECIPE"] == env["ours"]["RECIPE"] == "2135" and env["ours"]["MAX_WALLCLOCK_SECONDS"] == "300.0"
    assert plan["baseline"] == "ours" and plan["whole"]["seed_logs"] == []


def test_train_only_stops_a_whole_run_after_its_hessians(tmp_path):
    """--train-only: the run is stopped right after its Hessian line (every whole-run figure is logged by then)."""
    script = tmp_path / "record.py"
    # 'after' comes only if the bench lets it run on: the 60 s only bound the test when the stop is broken
    script.write_text("import time\nprint('stopping_early: wallclock_cap train_time: 299000ms step: 300/20000')\n"
                      "print('GPTQ:collected 67 Hessians in 6.9s', flush=True)\ntime.sleep(60)\n"
                      "print('after', flush=True)\n")
    run = dict(name="record", script=str(script), env={}, format="record")
    plan = dict(full=True, train_only=True, nproc=1)
    bench.run_stamped(run, ["0"], plan, tmp_path / "record")
    console = (tmp_path / "record" / "console.txt").read_text()
    assert "GPTQ:collected 67" in console and "after" not in console
    assert json.loads((tmp_path / "record" / "status.json").read_text())["state"] == "stopped_by_bench"


def test_whole_launch_dry_run_and_refusals(tmp_path, capsys, monkeypatch):
    data = _layout(tmp_path, "2135")
    work = tmp_path / "w"
    base = ["launch", "--whole", "--recipe", "2135", "--data-dir", str(data), "--workdir", str(work),
            "--mode", "sequential", "--gpus", "0"]
    assert bench.main(base + ["--seconds", "300", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"ours (lane 0, GPUs 0): {sys.executable} {bench.OURS}" in out
    assert f"record (lane 0, GPUs 0): {sys.executable} {bench._record_oracle().RECORD_2135}" in out
    assert " CASEOPS_ENABLED=1 " in out and " RECIPE=2135 " in out and not work.exists()
    shipped = tmp_path / "ship" / "train_gpt.py"
    assert bench.main(base + ["--seconds", "300", "--dry-run", "--ours-script", str(shipped)]) == 0
    assert f"ours (lane 0, GPUs 0): {sys.executable} {shipped}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: --whole needs --seconds"):
        bench.main(base)
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="error: the record's artifact step runs the `pyminify` program"):
        bench.main(base + ["--seconds", "300"])
    # --no-record: the record's tools are not needed, and its script is not run
    assert bench.main(base + ["--seconds", "300", "--dry-run", "--no-record", "--ab", "cdt:X_TEST=1"]) == 0
    out = capsys.readouterr().out
    assert f"cdt (lane 0, GPUs 0): {sys.executable} {bench.OURS}" in out and "record (lane" not in out
    assert "pyminify" not in out and "no lrzip on PATH" in out  # ours' pergroup compression needs lrzip too
    with pytest.raises(SystemExit, match="error: --no-record runs no record: leave out --reference, --ref-env"):
        bench.main(base + ["--seconds", "300", "--no-record", "--reference", str(bench.OURS), "--ref-env", "X=1"])
    with pytest.raises(SystemExit, match="error: --no-record runs no record: leave out --record-first$"):
        bench.main(base + ["--seconds", "300", "--no-record", "--record-first"])
    with pytest.raises(SystemExit, match="no tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"):
        bench.main(base[:5] + [str(_layout(tmp_path, "1886")), *base[6:], "--seconds", "300", "--dry-run"])
