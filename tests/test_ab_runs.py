"""scripts/ab_runs.py on real SMOKE=1 runs of train_gpt.py (2 steps, one val document): a base and one variant x
3 seeds; the table's numbers are seed_stats'; a deleted and a truncated log are run again, finished runs are
not; bad input is one error line."""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest

from conftest import AB_SEEDS, CASEOPS_DATA, REPO, ab_args, ab_data_args

sys.path.insert(0, str(REPO / "scripts"))
import ab_runs  # noqa: E402
import golflog  # noqa: E402
from make_sample_data import write_shard  # noqa: E402
import seed_stats  # noqa: E402

TTT_LINE = "\nfinal_ttt_exact val_loss:"  # the run's line (the log's embedded source also names the label)
ARTIFACT_LINE = "\nartifact_model_bytes:"  # ... and the line saying the artifact is written


def logs(work, name):
    return [work / "logs" / f"{name}_s{s}.txt" for s in AB_SEEDS]


def table_rows(text: str) -> dict[str, list[str]]:
    """The per-variant table: {variant: cells}."""
    head = text.index("| variant |")
    rows = [line.strip("|").split("|") for line in text[head:].split("\n\n")[0].splitlines()[2:]]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows}


def test_table_equals_seed_stats(ab_workdir, tmp_path, capsys):
    md, png = tmp_path / "ab.md", tmp_path / "ab.png"
    assert ab_runs.main(["report", "--workdir", str(ab_workdir), "--md", str(md), "--plot", str(png)]) == 0
    rows = table_rows(md.read_text())
    expected = seed_stats.summarize(logs(ab_workdir, "base"), logs(ab_workdir, "lr"), 0.0)["bpb"]
    base, lr = rows["base"], rows["lr"]
    assert base[2] == lr[2] == "3/3"
    assert base[3] == f"{expected['old_mean']:.5f} ± {expected['old_std']:.5f}"
    assert lr[3] == f"{expected['new_mean']:.5f} ± {expected['new_std']:.5f}"
    assert lr[4] == f"{expected['new_mean'] - expected['old_mean']:+.5f}"
    paired = [seed_stats.read_log(n)["bpb"] - seed_stats.read_log(o)["bpb"]
              for o, n in zip(logs(ab_workdir, "base"), logs(ab_workdir, "lr"))]
    assert lr[5] == f"{statistics.stdev(paired):.5f}"
    t = statistics.mean(paired) / (statistics.stdev(paired) / 3 ** 0.5)  # the paired t-test, 2 degrees of freedom
    assert lr[6] == f"{expected['p_value']:.4f} (paired {seed_stats.stats.t.cdf(t, 2):.4f})"
    for column, label in ((7, "final_prequant_exact"), (8, "final_roundtrip_exact")):
        scores = [golflog.final_score(p.read_text(), label)[1] for p in logs(ab_workdir, "lr")]
        assert lr[column] == f"{sum(scores) / 3:.5f}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_phase_that_trains_nothing_is_noted(ab_workdir, tmp_path):
    """The report says which runs' phased TTT made no global SGD step (a prefix under one chunk), and nothing
    when every phase trained. The toy runs have no phase (a 1-document val): their logs get the line."""
    work = tmp_path / "w"
    shutil.copytree(ab_workdir, work, symlinks=True)
    md = tmp_path / "ab.md"

    def report_with(steps):
        for path, n in zip(logs(work, "base"), steps):
            text = re.sub(r"^ttt_global_sgd .*\n", "", path.read_text(), flags=re.M)
            path.write_text(text.replace(TTT_LINE, f"\nttt_global_sgd phase:1 docs:3 tokens:{n * 900 + 700} "
                                                   f"steps:{n} elapsed:1.0s{TTT_LINE}"))
        assert ab_runs.main(["report", "--workdir", str(work), "--md", str(md)]) == 0
        return md.read_text()

    assert "global SGD made 0 steps" not in report_with([2, 1, 3])
    assert ("NOTE: the phased TTT's global SGD made 0 steps in base_s2 (SGD data of at most 700 tokens"
            in report_with([2, 0, 3]))
    second = logs(work, "base")[1]  # a second phase that trained: not idle
    second.write_text(second.read_text().replace(TTT_LINE, f"\nttt_global_sgd phase:2 docs:3 tokens:9000 steps:3 "
                                                            f"elapsed:2.0s{TTT_LINE}"))
    assert ab_runs.main(["report", "--workdir", str(work), "--md", str(md)]) == 0
    assert "global SGD made 0 steps" not in md.read_text()


def test_runs_saw_the_val_subset_and_scaled_prefix(ab_workdir):
    """The val shard and its byte sidecar are the kept documents, whole; every run logged the scaled prefix."""
    source = np.fromfile(CASEOPS_DATA / "fineweb_val_000000.bin", dtype="<u2", offset=1024)
    sidecar = np.fromfile(CASEOPS_DATA / "fineweb_val_bytes_000000.bin", dtype="<u2", offset=1024)
    starts = list(np.flatnonzero(source == 1)) + [len(source)]
    docs = [(a, b) for i, (a, b) in enumerate(zip(starts, starts[1:])) if i % 13 == 12 and b - a <= 4000]
    assert [b - a for a, b in docs] == [3130]
    for name, full in (("fineweb_val_000000.bin", source), ("fineweb_val_bytes_000000.bin", sidecar)):
        kept = np.fromfile(ab_workdir / "data" / name, dtype="<u2", offset=1024)
        assert np.array_equal(kept, np.concatenate([full[a:b] for a, b in docs]))
    for path in logs(ab_workdir, "base") + logs(ab_workdir, "lr"):
        config = golflog.resolved_config(path.read_text())
        assert config["phased_ttt_prefix_docs"] == "1"  # SMOKE's 6 x 1 / 50,000, at least 1


def test_a_rerun_runs_only_what_is_missing_or_cut(ab_workdir, tmp_path, capsys):
    """A truncated log (a run cut short before its artifact) is set aside and run again, a deleted one is planned
    again (only the first is run here: one run less); the finished runs are kept as they are."""
    work = tmp_path / "w"
    shutil.copytree(ab_workdir, work, symlinks=True)
    cut = work / "logs" / "base_s3.txt"
    text = cut.read_text()
    cut.write_text(text[:text.index(ARTIFACT_LINE) + 1])
    (work / "logs" / "lr_s2.txt").rename(tmp_path / "lr_s2.txt")
    capsys.readouterr()
    ab_runs.main(ab_args(work, "--dry-run"))
    planned = re.findall(r"^\[(\w+)\] .*RUN_ID=(\S+)", capsys.readouterr().out, re.M)
    assert sorted(rid for state, rid in planned if state == "pending") == ["base_s3", "lr_s2"]
    (tmp_path / "lr_s2.txt").rename(work / "logs" / "lr_s2.txt")
    before = {p.name: p.read_text() for p in (work / "logs").glob("*.txt") if p != cut}
    assert ab_runs.main(ab_args(work)) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^\S+ (\w+): running", out, re.M) == ["base_s3"]
    assert {p.name: p.read_text() for p in (work / "logs").glob("*.txt") if p != cut} == before  # kept, not rerun
    assert sorted(p.name for p in (work / "attempts").iterdir()) == [
        "base_s3.1.console.txt", "base_s3.1.exit.json", "base_s3.1.log.txt"]
    assert (work / "attempts" / "base_s3.1.log.txt").read_text() == text[:text.index(ARTIFACT_LINE) + 1]
    rows = table_rows(out)
    assert rows["base"][2] == rows["lr"][2] == "3/3"
    expected = seed_stats.summarize(logs(work, "base"), logs(work, "lr"), 0.0)["bpb"]
    assert rows["lr"][6].startswith(f"{expected['p_value']:.4f} (paired ")


def test_run_states(ab_workdir, tmp_path):
    """A finished log is done; cut short or stopped by a signal is pending; a crash or an error is failed."""
    (tmp_path / "logs").mkdir()
    finished = (ab_workdir / "logs" / "base_s1.txt").read_text()
    cut = finished[:finished.index(TTT_LINE) + 1]
    cases = {"whole": (finished, None, "done"), "cut": (cut, None, "pending"), "cut0": (cut, 0, "pending"),
             "sigterm": (cut + "interrupted: KeyboardInterrupt: signal SIGTERM\n", 143, "pending"),
             "crash": (cut + "interrupted: RuntimeError: CUDA out of memory\n", 1, "failed"),
             "killed": (cut, -9, "failed"), "over": (finished + "ERROR: artifact over budget\n", 1, "failed"),
             "noline": (None, 2, "failed"), "never": (None, None, "pending")}
    for rid, (text, code, _) in cases.items():
        if text is not None:
            (tmp_path / "logs" / f"{rid}.txt").write_text(text)
        if code is not None:
            (tmp_path / "logs" / f"{rid}.exit.json").write_text(json.dumps(dict(returncode=code)))
    assert {rid: ab_runs.run_state(tmp_path, rid)[0] for rid in cases} == {r: c[2] for r, c in cases.items()}


def test_pack_resumes_elsewhere(ab_workdir, tmp_path, capsys):
    pack = tmp_path / "logs.tar.xz"
    assert ab_runs.main(["report", "--workdir", str(ab_workdir), "--pack", str(pack)]) == 0
    table = capsys.readouterr().out
    other = tmp_path / "elsewhere"
    other.mkdir()
    with tarfile.open(pack) as tar:
        assert "plan.json" in tar.getnames() and "logs/lr_s3.txt" in tar.getnames()
        tar.extractall(other)
    assert ab_runs.main(["report", "--workdir", str(other)]) == 0
    assert table_rows(capsys.readouterr().out) == table_rows(table)


def test_dry_run_plans_and_writes_nothing(ab_workdir, tmp_path, capsys):
    assert ab_runs.main(ab_args(tmp_path / "new", "--dry-run")) == 0
    out = capsys.readouterr().out
    commands = re.findall(r"^\[(\w+)\] \(cd \S+ && (.*)\)$", out, re.M)
    assert [re.search(r"RUN_ID=(\S+)", c).group(1) for _, c in commands] == [
        "base_s1", "lr_s1", "base_s2", "lr_s2", "base_s3", "lr_s3"]
    assert all(state == "pending" and "PHASED_TTT_PREFIX_DOCS=1 " in c for state, c in commands)
    assert not (tmp_path / "new").exists()
    ab_runs.main(ab_args(ab_workdir, "--dry-run"))  # the finished workdir: every run is done
    assert set(re.findall(r"^\[(\w+)\]", capsys.readouterr().out, re.M)) == {"done"}


@pytest.mark.parametrize("extra, message", [
    (["--variant", "qk=QK_GAIN=5.25"], "QK_GAIN is not a train_gpt.py setting (did you mean QK_GAIN_INIT?)"),
    (["--variant", "same=RECIPE=2135"], "variant same runs the same settings as base"),
    (["--variant", "twice=MATRIX_LR=0.05"], "variant twice runs the same settings as lr"),
    (["--seeds", "1,2"], "a p-value needs at least 3 seeds"),
    (["--variant", "s=SEED=4"], "SEED is set by the harness"),
    (["--variant", "w=MAX_WALLCLOCK_SECONDS=30"], "MAX_WALLCLOCK_SECONDS is the base's for every variant"),
    (["--variant", "q=QK_GAIN_INIT=-1"], "QK_GAIN_INIT=-1.0 is out of range"),
    (["--variant", "base=QK_GAIN_INIT=5.25"], "the variant name must be"),
])
def test_bad_input_is_one_error_line(extra, message, tmp_path):
    with pytest.raises(SystemExit) as err:
        ab_runs.main(ab_args(tmp_path / "w", "--dry-run") + extra)
    assert str(err.value).startswith("error: ") and message in str(err.value) and "\n" not in str(err.value)


def test_a_workdir_keeps_its_definitions(ab_workdir, tmp_path):
    with pytest.raises(SystemExit, match=r"^error: variant lr was \{'MATRIX_LR': '0.05'\} in .*another name$"):
        ab_runs.main(ab_args(ab_workdir, "--dry-run", variant="lr=MATRIX_LR=0.06"))
    with pytest.raises(SystemExit, match=r"^error: .* holds runs of another data .*new --workdir$"):
        ab_runs.main(ab_args(ab_workdir, "--dry-run", "--val-every", "12"))


def test_one_runner_per_workdir_and_detach(ab_workdir, tmp_path):
    """A live runner of the workdir refuses another; --detach starts one in its own session and returns (here
    every run is done, so it reports them and ends)."""
    work = tmp_path / "w"
    shutil.copytree(ab_workdir, work, symlinks=True)
    (work / "runner.json").write_text(json.dumps(dict(host=ab_runs.socket.gethostname(), pid=os.getppid())))
    with pytest.raises(SystemExit, match="^error: a runner .* is already working"):
        ab_runs.main(ab_args(work))
    (work / "runner.json").unlink()
    assert ab_runs.main(ab_args(work, "--detach")) == 0
    runner = work / "runner.txt"
    for _ in range(600):  # a hang guard only: the runner ends after re-reading the plan
        if runner.exists() and "| lr_s3 | done |" in runner.read_text():
            break
        time.sleep(1)
    text = runner.read_text()
    assert "lr_s3: done" in text and "running" not in text


def test_runs_on_the_command_line(tmp_path):
    """The script as a command: bad input is one line on stderr, exit status non-zero, no traceback."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "ab_runs.py"), *ab_args(tmp_path, "--dry-run"),
                           "--seeds", "1"], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")


# -----------------------------------------------------------------------------
# Eval-only variants: the base's artifacts evaluated with other TTT / n-gram tilt settings
# -----------------------------------------------------------------------------

EVAL_VARIANT = "ev=TTT_LORA_LR=0.01"  # SMOKE's 3e-3: a TTT setting that surely moves the final score


def dry_commands(capsys) -> list[tuple[str, str, str]]:
    """(state, RUN_ID, command) of a --dry-run's output."""
    out = capsys.readouterr().out
    return [(state, re.search(r"RUN_ID=(\S+)", c).group(1), c)
            for state, c in re.findall(r"^\[(\w+)\] \(cd \S+ && (.*?)\)(?: #.*)?$", out, re.M)]


def with_eval_variant(workdir, tmp_path, shifts=None, evaluated=True, name="ev", settings=None, listed="eval_only"):
    """A copy of the fixture's workdir whose plan holds the eval-only variant ev (or another derived variant:
    its name, settings and plan list); with shifts {seed: Δbpb}, its finished runs are the base's logs with the
    final (TTT) score moved by Δ (synthetic)."""
    work = tmp_path / "w"
    shutil.copytree(workdir, work, symlinks=True)
    plan = json.loads((work / "plan.json").read_text())
    plan["variants"][name] = settings or {"TTT_LORA_LR": "0.01"}
    plan[listed] = [name] if evaluated else []
    (work / "plan.json").write_text(json.dumps(plan))
    for seed, shift in (shifts or {}).items():
        text = (work / "logs" / f"base_s{seed}.txt").read_text()
        nats, bpb = golflog.final_score(golflog.run_lines(text), "final_ttt_exact")
        line = f"final_ttt_exact val_loss:{nats:.8f} val_bpb:{bpb:.8f}"
        assert line in text
        moved = f"final_ttt_exact val_loss:{nats * (bpb + shift) / bpb:.8f} val_bpb:{bpb + shift:.8f}"
        (work / "logs" / f"{name}_s{seed}.txt").write_text(text.replace(line, moved))
        shutil.copyfile(work / "logs" / f"base_s{seed}.exit.json", work / "logs" / f"{name}_s{seed}.exit.json")
    return work


def test_eval_variants_run_after_their_base_on_its_artifact(ab_workdir, tmp_path, capsys):
    """Per seed: the base, its eval-only variants (EVAL_ONLY=1 on the base's artifact of that seed), then the
    trained variants."""
    assert ab_runs.main(ab_args(tmp_path / "new", "--dry-run", "--eval-variant", EVAL_VARIANT)) == 0
    commands = dry_commands(capsys)
    assert [rid for _, rid, _ in commands] == [f"{n}_s{s}" for s in AB_SEEDS for n in ("base", "ev", "lr")]
    for _, rid, command in commands:
        evaluated = rid.startswith("ev_")
        seed = rid.rsplit("_s", 1)[1]
        assert ("EVAL_ONLY=1 " in command) == evaluated
        assert f"ARTIFACT_PATH=artifacts/{'base' if evaluated else rid.split('_')[0]}_s{seed}.golf " in command
        assert ("TTT_LORA_LR=0.01 " in command) == evaluated


def test_eval_variants_from_a_variants_file(tmp_path, capsys):
    listing = tmp_path / "variants.txt"
    listing.write_text("# trained, then eval-only\nqk QK_GAIN_INIT=5.25\neval tmp TOKEN_MAX_PROB=0.9 TTT_GRAD_STEPS=2\n")
    assert ab_runs.main(ab_args(tmp_path / "new", "--dry-run", "--variants", str(listing))) == 0
    commands = {rid: c for _, rid, c in dry_commands(capsys)}
    assert "EVAL_ONLY=1 " in commands["tmp_s2"] and "TTT_GRAD_STEPS=2 " in commands["tmp_s2"]
    assert "EVAL_ONLY=1 " not in commands["qk_s2"]


def test_a_value_may_hold_commas(tmp_path, capsys):
    """A comma starts a new KEY=VALUE only before KEY=: schedules like TTT_SHORT_SCORE_FIRST_STEPS keep theirs."""
    listing = tmp_path / "variants.txt"
    listing.write_text("eval short TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24,\n")  # a stray comma dropped
    extra = ["--variants", str(listing), "--variant", "ctx=TRAIN_SEQ_SCHEDULE=128@0.3,256@1,TRAIN_SEQ_LEN=256"]
    assert ab_runs.main(ab_args(tmp_path / "new", "--dry-run", *extra)) == 0
    commands = {rid: c for _, rid, c in dry_commands(capsys)}
    assert "TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 " in commands["short_s1"]
    assert "TRAIN_SEQ_SCHEDULE=128@0.3,256@1 " in commands["ctx_s1"] and "TRAIN_SEQ_LEN=256 " in commands["ctx_s1"]


@pytest.mark.parametrize("extra, message", [
    (["--eval-variant", "e=MATRIX_LR=0.06"], "MATRIX_LR is not one of the evaluation settings"),
    (["--eval-variant", "e=TTT_CHUNK_SIZE=36,COMPRESSOR=pergroup"], "COMPRESSOR is not one of the evaluation settings"),
    (["--eval-variant", "e=NUM_LAYERS=3"], "NUM_LAYERS is not one of the evaluation settings"),
    (["--quant-variant", "q=MATRIX_LR=0.06"], "MATRIX_LR is not one of the quantization and compression settings"),
    (["--quant-variant", "q=TTT_CHUNK_SIZE=36"], "TTT_CHUNK_SIZE is not one of the quantization and compression"),
    (["--quant-variant", "q=QUANTIZE_ONLY=1"], "QUANTIZE_ONLY is set by the harness"),
    (["--quant-variant", "q=PREQUANT_PATH=x.pt"], "PREQUANT_PATH is set by the harness"),
    (["--quant-variant", "q=GPTQ_CALIBRATION_BATCHES=1"], "variant q runs the same settings as base"),
    (["--quant-variant", "quant=MATRIX_BITS=5"], "the variant name must be"),
    (["--eval-variant", "e=EVAL_ONLY=1"], "EVAL_ONLY is set by the harness"),
    (["--eval-variant", "e=TTT_CHUNK_SIZE=256"], "variant e runs the same settings as base"),
    (["--eval-variant", "lr=TTT_CHUNK_SIZE=36"], "variant lr is defined twice"),
    (["--eval-variant", "eval=TTT_CHUNK_SIZE=36"], "the variant name must be"),
])
def test_eval_variant_refusals(extra, message, tmp_path):
    with pytest.raises(SystemExit) as err:
        ab_runs.main(ab_args(tmp_path / "w", "--dry-run") + extra)
    assert str(err.value).startswith("error: ") and message in str(err.value) and "\n" not in str(err.value)


QUANT_VARIANT = "q5=MATRIX_BITS=5"  # the recipe's 6: a quantization setting that surely moves the scores


def test_quant_variants_run_after_their_base_on_its_weights(tmp_path, capsys):
    """Per seed: the base (writing its unquantized weights), its derived variants (QUANTIZE_ONLY=1 on those
    weights, its own artifact), then the trained ones; also from a variants file's `quant` line."""
    listing = tmp_path / "variants.txt"
    listing.write_text(f"quant {QUANT_VARIANT.replace('=', ' ', 1)}\n")
    assert ab_runs.main(ab_args(tmp_path / "new", "--dry-run", "--variants", str(listing))) == 0
    commands = dry_commands(capsys)
    assert [rid for _, rid, _ in commands] == [f"{n}_s{s}" for s in AB_SEEDS for n in ("base", "q5", "lr")]
    for _, rid, command in commands:
        name, seed = rid.rsplit("_s", 1)
        assert ("QUANTIZE_ONLY=1 " in command) == (name == "q5") and ("MATRIX_BITS=5 " in command) == (name == "q5")
        assert (f"PREQUANT_PATH=models/base_s{seed}.pt " in command) == (name in ("base", "q5"))
        assert f"ARTIFACT_PATH=artifacts/{name}_s{seed}.golf " in command


def test_quant_settings_boundary():
    """QUANT_KEYS (the fields from GPTQ_CALIBRATION_BATCHES to TTT_ENABLED) are read while the artifact is made,
    and in training only the calibration batches' count, for the Hessians (which a quantize-only run collects
    again with its own count; the Hessian time it holds back from training is the one thing it leaves out)."""
    quant_keys = {k.lower() for k in ab_runs.QUANT_KEYS}
    assert {"matrix_bits", "lqer_rank", "awq_lite_enabled", "compressor", "gptq_calibration_batches"} <= quant_keys
    assert quant_keys & hyperparameter_reads(["train"]) == {"gptq_calibration_batches"}
    assert quant_keys <= hyperparameter_reads(["write_artifact", "collect_hessians", "calibration_batches"])
    assert not quant_keys & {k.lower() for k in ab_runs.EVAL_KEYS}


def test_an_eval_variant_and_a_trained_one_may_share_settings(tmp_path, capsys):
    """The same TTT setting trained and eval-only are two measurements; two eval-only ones are one."""
    assert ab_runs.main(ab_args(tmp_path / "w", "--dry-run", "--eval-variant", "e=TTT_CHUNK_SIZE=36",
                             variant="t=TTT_CHUNK_SIZE=36")) == 0
    with pytest.raises(SystemExit, match="^error: variant f runs the same settings as e"):
        ab_runs.main(ab_args(tmp_path / "w", "--dry-run", "--eval-variant", "e=TTT_CHUNK_SIZE=36",
                          "--eval-variant", "f=TTT_CHUNK_SIZE=36", variant="t=TTT_CHUNK_SIZE=36"))


def test_a_workdir_keeps_a_variants_kind(ab_workdir, tmp_path):
    """A trained variant of the workdir's plan may not come back as an eval-only one of the same settings."""
    work = tmp_path / "w"
    work.mkdir()
    plan = json.loads((ab_workdir / "plan.json").read_text())
    plan["variants"]["t"] = {"TTT_CHUNK_SIZE": "36"}
    (work / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(SystemExit, match=r"^error: variant t was a trained variant in .*another name$"):
        ab_runs.main(ab_args(work, "--dry-run", "--eval-variant", "t=TTT_CHUNK_SIZE=36"))


def test_eval_variant_report_is_paired_on_synthetic_logs(ab_workdir, tmp_path):
    """Δ against the base on the same artifacts with the one-sided paired t-test's p (scipy's ttest_rel);
    pre-quant, quantized, steps and bytes are the base's, not repeated as if measured."""
    shifts = {1: -0.0020, 2: -0.0012, 3: -0.0016}
    work = with_eval_variant(ab_workdir, tmp_path, shifts)
    md = tmp_path / "ab.md"
    assert ab_runs.main(["report", "--workdir", str(work), "--md", str(md), "--plot", str(tmp_path / "p.png")]) == 0
    text = md.read_text()
    rows = table_rows(text)
    ev = rows["ev"]
    base = [seed_stats.read_log(p)["bpb"] for p in logs(work, "base")]
    new = [seed_stats.read_log(p)["bpb"] for p in logs(work, "ev")]
    expected = seed_stats.stats.ttest_rel(new, base, alternative="less").pvalue
    assert ev[1] == "eval-only: TTT_LORA_LR=0.01" and ev[2] == "3/3"
    assert ev[4] == f"{statistics.mean(shifts.values()):+.5f}"
    assert ev[6] == f"{expected:.4f} paired"
    welch = seed_stats.summarize(logs(work, "base"), logs(work, "ev"), 0.0)["bpb"]["p_value"]
    assert f"{welch:.4f}" != f"{expected:.4f}"  # the tests differ here: the report must use the paired one
    assert ev[7:10] == ["= base"] * 3 and ev[11] == "= base" and ev[10] != "-"
    assert list(rows) == ["base", "ev", "lr"]
    assert "NOTE" not in text  # each ev log's roundtrip is its base's
    cap = json.loads((work / "plan.json").read_text())["data"]["val_max_doc_tokens"]  # eval s: this val only
    assert f"its documents stop at {cap} tokens" in text and "scripts/ttt_cost.py" in text


def smi_table(gpu: str) -> str:
    """The nvidia-smi table a GPU run logs (one GPU)."""
    return ("| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: 13.0     |\n"
            f"|   0  NVIDIA {gpu}          On  |   00000000:01:00.0 Off |                    0 |\n")


def test_runs_evaluated_on_different_gpus_are_named(ab_workdir, tmp_path):
    """Eval seconds compare within one kind of GPU: a report whose runs were evaluated on two kinds says which
    variants ran on each; one kind (or none: CPU logs) gets no warning."""
    work = with_eval_variant(ab_workdir, tmp_path, {1: -0.001, 2: -0.001, 3: -0.001})
    md = tmp_path / "ab.md"
    assert ab_runs.main(["report", "--workdir", str(work), "--md", str(md)]) == 0
    assert "kinds of GPU" not in md.read_text()
    for path in (work / "logs").glob("*_s[123].txt"):
        path.write_text(path.read_text() + smi_table("H200" if path.name.startswith("ev_") else "H100 80GB HBM3"))
    assert ab_runs.main(["report", "--workdir", str(work), "--md", str(md)]) == 0
    assert ("WARNING: the finished runs were evaluated on 2 kinds of GPU (1x NVIDIA H100 80GB HBM3: base, lr; "
            "1x NVIDIA H200: ev)") in md.read_text()


def test_report_against_a_stack_pairs_its_candidates_with_it(ab_workdir, tmp_path):
    """--against ev: the eval-only variant ev2 (ev's settings and one more) against ev, not the base: Δ its own
    shift over ev's, the paired p of ev2 and ev (scipy's ttest_rel), its settings as the one it adds; a trained
    variant or the base is refused as the reference."""
    shifts, extra = {1: -0.0020, 2: -0.0012, 3: -0.0016}, {1: -0.0011, 2: -0.0003, 3: -0.0009}
    stack = with_eval_variant(ab_workdir, tmp_path / "a", shifts)
    settings = {"TTT_LORA_LR": "0.01", "TTT_CHUNK_SIZE": "36"}
    work = with_eval_variant(stack, tmp_path / "b", {k: shifts[k] + extra[k] for k in shifts}, name="ev2",
                             settings=settings)
    plan = json.loads((work / "plan.json").read_text())
    (work / "plan.json").write_text(json.dumps(dict(plan, eval_only=["ev", "ev2"])))
    md = tmp_path / "ab.md"
    assert ab_runs.main(["report", "--workdir", str(work), "--md", str(md), "--against", "ev"]) == 0
    text = md.read_text()
    rows = table_rows(text[text.index("## Against ev"):])
    assert list(rows) == ["ev2"]
    new, ref = ([seed_stats.read_log(p)["bpb"] for p in logs(work, name)] for name in ("ev2", "ev"))
    expected = seed_stats.stats.ttest_rel(new, ref, alternative="less").pvalue
    assert rows["ev2"][1:6] == ["TTT_CHUNK_SIZE=36", "3/3", f"{statistics.mean(extra.values()):+.5f}",
                                f"{statistics.stdev(extra.values()):.5f}", f"{expected:.4f}"]
    for ref in ("lr", "base"):
        with pytest.raises(SystemExit, match=f"^error: --against {ref}: not an eval-only variant of this workdir "
                                             r"\(its eval-only variants: ev, ev2\)"):
            ab_runs.main(["report", "--workdir", str(work), "--against", ref])


def test_report_by_position_weighs_a_thin_vals_buckets_by_another_vals(ab_workdir, tmp_path):
    """--positions: an eval-only variant whose logs moved each bucket's nats by a known amount a target reads as
    those amounts (x1000), and as the Δ bpb they add up to; --weigh-val weighs the same amounts by another val's
    targets per bucket, its buckets past the A/B val's last taking that bucket's amount. Fails when the buckets are
    weighed by the A/B val's targets, or the empty buckets are left at 0."""
    shift = np.array([-4e-3, -2e-3, -1e-3, -5e-4, 3e-4, 0, 0])  # nats a target, per bucket
    work = with_eval_variant(ab_workdir, tmp_path, {1: 0, 2: 0, 3: 0})
    for seed in AB_SEEDS:
        path = work / "logs" / f"ev_s{seed}.txt"
        text = path.read_text()
        facts = golflog.facts(text)
        positions = facts["positions"]
        targets = np.array([int(x) for x in positions["targets"].split(",")])
        nats = np.array([float(x) for x in positions["nats"].split(",")])
        old = golflog.line(golflog.run_lines(text), "ttt_position_nats")
        moved = old.replace(positions["nats"], ",".join(f"{n:.4f}" for n in nats + shift * targets))
        loss, bpb = golflog.final_score(golflog.run_lines(text), "final_ttt_exact")
        new_loss = loss + shift @ targets / targets.sum()
        final = f"final_ttt_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}"
        path.write_text(text.replace(old, moved).replace(
            final, f"final_ttt_exact val_loss:{new_loss:.8f} val_bpb:{bpb * new_loss / loss:.8f}"))
    assert list(np.flatnonzero(targets)) == [0, 1, 2, 3, 4]  # the A/B val: one document of 3,130 tokens
    weigh = tmp_path / "whole.bin"
    write_shard(weigh, np.array([1] + [5] * 299 + [1] + [5] * 9999, dtype=np.uint16))
    md = tmp_path / "ab.md"
    assert ab_runs.main(["report", "--workdir", str(work), "--md", str(md), "--positions",
                         "--weigh-val", str(weigh)]) == 0
    text = md.read_text()
    row = table_rows(text[text.index("## By position in the document, against base"):])["ev"]
    assert row[1] == "3" and row[2:7] == [f"{x * 1e3:+.3f}" for x in shift[:5]]
    nats_per_bit = loss / bpb  # ln 2 x bytes a target
    here = shift @ targets / targets.sum() / nats_per_bit
    assert row[7] == f"{here:+.5f}" and row[7] == table_rows(text)["ev"][4]  # the main table's Δ, summed back
    # the weighing val: documents of 300 and 9,999 targets (positions 0-299, 0-9998)
    whole = np.bincount(np.searchsorted([256, 512, 1024, 2048, 4096, 8192], np.r_[np.arange(300), np.arange(9999)],
                                        side="right"), minlength=7)
    filled = np.r_[shift[:5], shift[4], shift[4]]
    assert row[8] == f"{filled @ whole / whole.sum() / nats_per_bit:+.5f}" != row[7]
    with pytest.raises(SystemExit, match="--weigh-val weighs the --positions table"):
        ab_runs.main(["report", "--workdir", str(work), "--weigh-val", str(weigh)])
    with pytest.raises(SystemExit, match="--weigh-val .*missing.bin"):
        ab_runs.main(["report", "--workdir", str(work), "--positions", "--weigh-val", str(tmp_path / "missing.bin")])
    (tmp_path / "bad.bin.xz").write_bytes(b"not xz")
    with pytest.raises(SystemExit, match="--weigh-val .*bad.bin.xz"):
        ab_runs.main(["report", "--workdir", str(work), "--positions", "--weigh-val", str(tmp_path / "bad.bin.xz")])
    path = work / "logs" / "ev_s2.txt"  # a run of another val: other targets a bucket
    path.write_text(path.read_text().replace(f"targets:{positions['targets']}", "targets:1,2,3,4,5,0,0"))
    with pytest.raises(SystemExit, match="lines of ev and base count other buckets or targets"):
        ab_runs.main(["report", "--workdir", str(work), "--positions"])


def test_eval_variant_not_run_when_its_base_failed_or_its_artifact_is_gone(ab_workdir, tmp_path, capsys):
    """base_s3 failed: ev_s3 is reported as not run, with why, and the runner runs nothing (no real run here);
    base_s2's artifact gone: ev_s2 likewise; a base that ran again since makes its eval run pending."""
    work = with_eval_variant(ab_workdir, tmp_path, {1: -0.001})
    failed = work / "logs" / "base_s3.txt"
    failed.write_text(failed.read_text() + "ERROR: artifact over budget\n")
    (work / "artifacts" / "base_s2.golf").unlink()
    capsys.readouterr()
    assert ab_runs.main(["report", "--workdir", str(work)]) == 0
    runs = {cells[0].strip(): [c.strip() for c in cells]
            for cells in (line.strip("|").split("|") for line in capsys.readouterr().out.splitlines())
            if cells and cells[0].strip().startswith("ev_s")}
    assert runs["ev_s1"][1] == "done"
    assert runs["ev_s3"][1] == "blocked" and runs["ev_s3"][-1].startswith("not run: base base_s3 failed (")
    assert runs["ev_s2"][1] == "blocked" and "artifacts/base_s2.golf is missing" in runs["ev_s2"][-1]
    plan = json.loads((work / "plan.json").read_text())
    exit_file = work / "logs" / "base_s1.exit.json"
    exit_file.write_text(json.dumps(dict(json.loads(exit_file.read_text()), artifact_sha256="0" * 64)))
    assert ab_runs.paired_state(work, plan, "ev", 1)[0] == "pending"
    exit_file.write_text((work / "logs" / "ev_s1.exit.json").read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ab_runs, "run_one", lambda *_: pytest.fail("nothing may run"))
        mp.setattr(ab_runs, "write_data", lambda *_: None)
        assert ab_runs.main(ab_args(work, "--eval-variant", EVAL_VARIANT, variant="lr=MATRIX_LR=0.05")) == 0
    out = capsys.readouterr().out
    assert "ev_s3: blocked (not run: base base_s3 failed" in out and "ev_s2: blocked (not run: the base's" in out


def run_first_seed(work, flag, variant, capsys, labels, data=CASEOPS_DATA):
    """ab_runs on a workdir whose derived variant has synthetic seeds 2 and 3: it runs seed 1 alone, for real.
    Returns (runner output, its log's config, {label: (its score, base_s1's)}, the two exit records)."""
    assert ab_runs.main(ab_args(work, flag, variant, data=data)) == 0
    out, rid = capsys.readouterr().out, f"{variant.split('=')[0]}_s1"
    assert re.findall(r"^\S+ (\w+): running", out, re.M) == [rid]
    texts = [(work / "logs" / f"{r}.txt").read_text() for r in (rid, "base_s1")]
    scores = {label: tuple(golflog.final_score(golflog.run_lines(t), label) for t in texts) for label in labels}
    assert all(None not in pair for pair in scores.values()), scores
    records = [json.loads((work / "logs" / f"{r}.exit.json").read_text()) for r in (rid, "base_s1")]
    return out, golflog.resolved_config(texts[0]), scores, records


def without_train_shards(work, tmp_path):
    """The workdir's train shards removed, as on a GPU machine whose carry had no room for them; returns a --data
    of the sample's val files alone."""
    for shard in (work / "data").glob("fineweb_train_*"):
        shard.unlink()
    val_only = tmp_path / "val_only"
    val_only.mkdir()
    for path in CASEOPS_DATA.glob("fineweb_val_*"):
        shutil.copyfile(path, val_only / path.name)
    return val_only


def test_eval_only_runs_go_on_without_the_train_shards(ab_workdir, tmp_path, capsys):
    """A workdir whose bases trained elsewhere (its logs and artifacts brought back, not the train shards, as
    on a fresh GPU machine whose carry had no room for them) runs its eval-only variants from a --data of val
    files alone: one real EVAL_ONLY run (ev_s1; ev_s2 and ev_s3 are synthetic). A trained or quantize-only
    variant is reported not run, a failed run stays failed, and a new workdir is refused."""
    work = with_eval_variant(ab_workdir, tmp_path, {2: -0.001, 3: -0.002})
    val_only = without_train_shards(work, tmp_path)
    out, config, scores, records = run_first_seed(work, "--eval-variant", EVAL_VARIANT, capsys,
                                                  ("final_roundtrip_exact", "final_ttt_exact"), data=val_only)
    # it evaluated base_s1's artifact: the roundtrip score is the base's to the last digit, the TTT score its own
    assert config["eval_only"] == "True" and config["artifact_path"] == "artifacts/base_s1.golf"
    assert config["ttt_lora_lr"] == "0.01"
    ours, theirs = zip(*scores.values())
    assert ours[0] == theirs[0] and ours[1] != theirs[1]
    assert records[0]["artifact_sha256"] == records[1]["artifact_sha256"]
    assert table_rows(out)["ev"][2] == "3/3"
    for path in (work / "logs").glob("*_s3.*"):  # seed 3 not trained: its base cannot run here, nor its ev
        path.unlink()
    failed = work / "logs" / "lr_s2.txt"  # a trained run that failed stays failed, not blocked
    failed.write_text(failed.read_text() + "ERROR: artifact over budget\n")
    assert ab_runs.main(ab_args(work, "--dry-run", "--eval-variant", EVAL_VARIANT, "--quant-variant", QUANT_VARIANT,
                             variant="lr2=MATRIX_LR=0.07", data=val_only)) == 0
    states = {rid: state for state, rid, _ in dry_commands(capsys)}
    assert states["lr2_s1"] == states["q5_s1"] == "blocked" and states["ev_s1"] == "done"
    assert states["base_s3"] == "blocked" and states["ev_s3"] == "blocked"
    plan = json.loads((work / "plan.json").read_text())
    plan["variants"].update(lr2={"MATRIX_LR": "0.07"}, q5={"MATRIX_BITS": "5"})
    plan["quant_only"] = ["q5"]
    for name in ("lr2", "q5"):
        assert ab_runs.why_run(work, plan, name, 1, retry_failed=False) is None  # the runner skips them
    assert ab_runs.why_run(work, plan, "lr", 2, retry_failed=False) is None
    said = capsys.readouterr().out
    for rid in ("lr2_s1", "q5_s1"):
        assert f"{rid}: blocked (not run: it trains or quantizes, and WORKDIR/data lacks the train shards" in said
    assert "lr_s2: failed (" in said
    with pytest.raises(SystemExit, match="^error: --data holds no train shards .*a new workdir trains its base"):
        ab_runs.main(ab_args(tmp_path / "new", "--dry-run", data=val_only))


def test_a_base_cut_after_its_artifact_is_finished_from_it(ab_workdir, tmp_path, capsys):
    """A base run whose machine went away during its evaluation (its log ends after the artifact lines, no exit
    record) is not trained again: one real EVAL_ONLY run of its artifact (base_s1_finish), from val files alone,
    scores it as the whole run did, to the last digit; the report takes the score from it and the training
    figures from the cut log, and the eval-only variant measured on that artifact stays done. A log cut before
    its artifact lines, or an artifact of other bytes than the log states, is not finished so."""
    work = with_eval_variant(ab_workdir, tmp_path, {1: -0.001, 2: -0.001, 3: -0.002})
    log = work / "logs" / "base_s1.txt"
    whole = log.read_text()
    log.write_text(whole[:whole.index(TTT_LINE) + 1])
    (work / "logs" / "base_s1.exit.json").unlink()
    val_only = without_train_shards(work, tmp_path)
    capsys.readouterr()
    assert ab_runs.main(ab_args(work, "--dry-run", "--eval-variant", EVAL_VARIANT, data=val_only)) == 0
    planned = {rid: (state, command) for state, rid, command in dry_commands(capsys)}
    state, command = planned["base_s1_finish"]
    assert state == "pending" and "EVAL_ONLY=1 " in command and "PREQUANT_PATH" not in command
    assert planned["ev_s1"][0] == planned["base_s2"][0] == "done"  # a whole run is not finished again
    assert ab_runs.main(ab_args(work, "--eval-variant", EVAL_VARIANT, data=val_only)) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^\S+ (\w+): running", out, re.M) == ["base_s1_finish"]
    finished = (work / "logs" / "base_s1_finish.txt").read_text()
    for label in ("final_roundtrip_exact", "final_ttt_exact"):
        assert golflog.final_score(golflog.run_lines(finished), label) == golflog.final_score(
            golflog.run_lines(whole), label)
    assert log.read_text() == whole[:whole.index(TTT_LINE) + 1]  # the cut log and its artifact kept
    row = next(r for r in ab_runs.collect(work)[2] if r["rid"] == "base_s1")
    assert row["state"] == "done" and "evaluated from it by base_s1_finish" in row["why"]
    assert row["final"] == seed_stats.read_log(ab_workdir / "logs" / "base_s1.txt")["bpb"]
    assert row["steps"] == 2 and row["bytes"] is not None and row["finish_gap"] == 0
    facts = golflog.facts(finished)  # eval and TTT compile time: the evaluation's, not in the cut log
    assert row["eval_s"] == golflog.number(facts["eval"]["eval_time"]) / 1000 and row["ttt_compile"] is not None
    assert table_rows(out)["base"][2] == table_rows(out)["ev"][2] == "3/3" and "NOTE: evaluated again" not in out
    plan = json.loads((work / "plan.json").read_text())
    artifact = work / "artifacts" / "base_s1.golf"
    artifact.rename(tmp_path / "base_s1.golf")  # a report from the pack (logs alone): still done
    assert ab_runs.result_state(work, plan, "base", 1)[0] == "done"
    (work / "logs" / "ev_s1.txt").unlink()  # the dry run: ev_s1 waits for the finish of its base, not blocked
    (work / "logs" / "base_s1_finish.txt").rename(tmp_path / "finish.txt")
    (tmp_path / "base_s1.golf").rename(artifact)
    assert ab_runs.main(ab_args(work, "--dry-run", "--eval-variant", EVAL_VARIANT, data=val_only)) == 0
    planned = {rid: state for state, rid, _ in dry_commands(capsys)}
    assert planned["base_s1_finish"] == planned["ev_s1"] == "pending"
    over = whole[:whole.index(TTT_LINE) + 1].replace("limit:16000000", "limit:1000")
    log.write_text(over)  # over the size limit: failed, as the whole run would have
    assert ab_runs.result_state(work, plan, "base", 1) == ("failed", f"artifact over budget: "
                                                          f"{row['bytes']:,.0f} bytes > 1,000 (its log)")
    log.write_text(whole[:whole.index(TTT_LINE) + 1])
    (tmp_path / "finish.txt").rename(work / "logs" / "base_s1_finish.txt")
    ab_runs.set_aside(work, "base_s1")  # a whole run again: the evaluation that finished the old one goes too
    moved = sorted(p.name for p in (work / "attempts").iterdir())
    assert [n for n in moved if n.endswith("log.txt")] == ["base_s1.1.log.txt", "base_s1_finish.1.log.txt"]
    assert "base_s1_finish.1.exit.json" in moved
    assert not artifact.exists()
    log.write_text(whole[:whole.index(ARTIFACT_LINE) + 1])  # cut before the artifact lines: trained again
    shutil.copyfile(ab_workdir / "artifacts" / "base_s1.golf", artifact)
    assert not ab_runs.finishable(work, plan, "base", 1)
    assert ab_runs.why_run(work, plan, "base", 1, retry_failed=False) is None  # no train shards here
    assert "base_s1: blocked (not run: it trains or quantizes" in capsys.readouterr().out
    log.write_text(whole[:whole.index(TTT_LINE) + 1])
    assert ab_runs.finishable(work, plan, "base", 1)
    with open(work / "artifacts" / "base_s1.golf", "ab") as f:  # not the bytes the log states
        f.write(b"x")
    assert not ab_runs.finishable(work, plan, "base", 1)


def test_one_real_quant_only_run(ab_workdir, tmp_path, capsys):
    """One real QUANTIZE_ONLY run (q5_s1; q5_s2 and q5_s3 are synthetic): it quantizes base_s1's saved weights
    with MATRIX_BITS=5, so its pre-quant score is the base's to the last digit and its quantized score and
    artifact are its own; the report pairs it and takes only its pre-quant bpb and steps from the base."""
    work = with_eval_variant(ab_workdir, tmp_path, {2: -0.001, 3: -0.002}, name="q5", settings={"MATRIX_BITS": "5"},
                             listed="quant_only")
    out, config, scores, records = run_first_seed(work, "--quant-variant", QUANT_VARIANT, capsys,
                                                  ("final_prequant_exact", "final_roundtrip_exact"))
    assert config["quantize_only"] == "True" and config["prequant_path"] == "models/base_s1.pt"
    assert config["matrix_bits"] == "5" and config["artifact_path"] == "artifacts/q5_s1.golf"
    ours, theirs = zip(*scores.values())
    assert ours[0] == theirs[0] and ours[1] != theirs[1]  # the same weights' pre-quant; its own quantized score
    assert records[0]["prequant_sha256"] == records[1]["prequant_sha256"] is not None
    assert records[0]["artifact_sha256"] != records[1]["artifact_sha256"]
    row = table_rows(out)["q5"]
    assert row[1] == "quantize-only: MATRIX_BITS=5" and row[2] == "3/3" and row[6].endswith(" paired")
    assert row[7] == "= base" and row[9] == "= base" and "= base" not in (row[8], row[11])
    assert "NOTE" not in out  # each run's pre-quant score is its base's
    log = work / "logs" / "q5_s2.txt"  # as if q5_s2 had quantized other weights than base_s2's
    line = re.search(r"^final_prequant_exact val_loss:\S+ val_bpb:(\S+)", log.read_text(), re.M)
    log.write_text(log.read_text().replace(line.group(0), line.group(0).replace(line.group(1), "9.99999999")))
    assert ab_runs.main(["report", "--workdir", str(work)]) == 0
    assert "NOTE: q5's own pre-quant score of its base's weights differs" in capsys.readouterr().out


def hyperparameter_reads(roots: list[str]) -> set[str]:
    """The Hyperparameters fields (`h.X`, `self.h.X`, ...) read by train_gpt.py's functions `roots` and every
    function they may call (by name: an over-approximation, the safe side for both uses below)."""
    import ast
    import dataclasses
    fields = {f.name for f in dataclasses.fields(ab_runs.tg.Hyperparameters)}
    functions = {}
    for node in ast.walk(ast.parse((REPO / "train_gpt.py").read_text())):
        if isinstance(node, ast.FunctionDef):
            functions.setdefault(node.name, []).append(node)
    seen, todo, reads = set(), list(roots), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in (n for f in functions[name] for n in ast.walk(f)):
            owner = getattr(node, "value", None)
            if (isinstance(node, ast.Attribute) and node.attr in fields
                    and (getattr(owner, "id", None) == "h" or getattr(owner, "attr", None) == "h")):
                reads.add(node.attr)
            called = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
            if called in functions:
                todo.append(called)
    assert {"train", "write_artifact"} & seen or "evaluate_ttt" in seen  # the roots exist
    return reads


def test_eval_settings_boundary():
    """EVAL_KEYS (the fields from TTT_ENABLED on) hold what an eval-only variant may change: none of them is
    read while the artifact is made (training, GPTQ, compression), and every field that TTT and the n-gram
    tilt read, and the artifact's making does not, is among them, or is a model field (the artifact's, which
    EVAL_ONLY adopts) or the harness's (SEED)."""
    before = hyperparameter_reads(["train", "write_artifact"])
    after = hyperparameter_reads(["evaluate_ttt", "ngram_hints"])
    eval_keys = {k.lower() for k in ab_runs.EVAL_KEYS}
    assert len(eval_keys) > 20 and {"ttt_chunk_size", "token_max_prob", "global_ttt_epochs"} <= eval_keys
    assert not eval_keys & before, "declared from TTT_ENABLED on, but read while the artifact is made"
    harness = {k.lower() for k in ab_runs.HARNESS_KEYS}
    missing = (after - before) - eval_keys - set(ab_runs.tg.MODEL_CONFIG_FIELDS) - harness
    assert not missing, "evaluation settings declared before TTT_ENABLED"


@pytest.mark.parametrize("given, ema, warmup", [("", "0.7056", "18"), (",EMA_DECAY=0.99", "0.99", "18"), (",ITERATIONS=20", "0.1268", "6")])
def test_settings_counted_in_steps_follow_the_run_length(tmp_path, capsys, given, ema, warmup):
    """A 60 s run of #2135's recipe (~59 steps of its ~4,990, or ITERATIONS where fewer): its EMA window and momentum warm-up shrink by that
    ratio (else the evaluated EMA weights are 80% the initial ones); a value given in --base is kept."""
    argv = ["run", "--workdir", str(tmp_path / "w"), "--base", "RECIPE=2135" + given, "--variant", "lr=MATRIX_LR=0.03",
            *ab_data_args(), "--dry-run"]
    assert ab_runs.main(argv) == 0
    commands = dry_commands(capsys)
    assert commands and all(f" EMA_DECAY={ema} " in c and f" MUON_MOMENTUM_WARMUP_STEPS={warmup} " in c
                            for _, _, c in commands)


def test_a_workdir_planned_before_the_step_scaling_names_what_differs(tmp_path, capsys, monkeypatch):
    """A workdir whose stored base predates the step scaling (the recipe's EMA_DECAY and warm-up): the refusal
    names each setting that differs; giving the stored base's values in --base continues it, its runs unchanged."""
    parsed = []
    monkeypatch.setattr(ab_runs, "cmd_run", lambda a, argv: parsed.append(a) or 0)
    argv = ["run", "--workdir", str(tmp_path / "w"), "--base", "RECIPE=2135", "--variant", "lr=MATRIX_LR=0.03",
            *ab_data_args(), "--dry-run"]
    ab_runs.main(argv)
    plan, _ = ab_runs.make_plan(parsed[0])
    for key in ab_runs.step_scaled(ab_runs.tg.load_hyperparameters({"RECIPE": "2135"}), 1):
        del plan["base"][key]
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "plan.json").write_text(json.dumps(plan))
    monkeypatch.undo()
    with pytest.raises(SystemExit, match=r"^error: .* another base \(MUON_MOMENTUM_WARMUP_STEPS 1500 there, 18 now, "
                                         r"EMA_DECAY 0.9965 there, 0.7056 now\): .* in --base$"):
        ab_runs.main([*argv, "--variant", "wd=MUON_WD=0.1"])
    old = "RECIPE=2135,EMA_DECAY=0.9965,MUON_MOMENTUM_WARMUP_STEPS=1500"
    assert ab_runs.main([*argv[:4], old, *argv[5:], "--variant", "wd=MUON_WD=0.1"]) == 0
    commands = [c for _, _, c in dry_commands(capsys)]
    assert commands and not any("EMA_DECAY" in c for c in commands)  # the stored base's runs
    assert any("MUON_WD=0.1" in c for c in commands)


def test_a_workdir_whose_base_recipe_changed_since_is_refused(tmp_path, monkeypatch):
    """plan.json keeps what its base resolved to when the workdir began: a base named by a recipe that has changed
    since (RECIPE=golf gains a setting) is refused with the settings that moved, not resumed under the new
    meaning beside runs of the old. Fails when the drift is not checked (the plan resolves both with today's
    code)."""
    argv = ["run", "--workdir", str(tmp_path / "w"), "--base", "RECIPE=golf", "--eval-variant",
            "c8=TTT_CHUNK_SIZE=8", *ab_data_args(), "--dry-run"]
    plan, _, _ = plan_of(argv, monkeypatch)
    (tmp_path / "w").mkdir()
    stored = ab_runs.merge_plan(tmp_path / "w", plan)
    assert stored["base_ran"]["ttt_grad_steps"] == 2 and "seed" not in stored["base_ran"]
    (tmp_path / "w" / "plan.json").write_text(json.dumps(stored))
    assert ab_runs.main(argv) == 0  # unchanged: it resumes
    monkeypatch.setitem(ab_runs.tg.RECIPES, "golf", dict(ab_runs.tg.RECIPES["golf"], ttt_grad_steps=3))
    for base in ("RECIPE=golf", "RECIPE=golf,TTT_GRAD_STEPS=2"):  # the values it ran cannot continue it either
        with pytest.raises(SystemExit, match=r"^error: .*plan.json's base means other settings now than when its "
                                             r"runs began \(TTT_GRAD_STEPS 2 then, 3 now\): .* use a new --workdir$"):
            ab_runs.main([*argv[:4], base, *argv[5:]])


# ---- several GPUs a run (--nproc) ----

def nproc_args(workdir, gpus, base="RECIPE=2135"):
    return ["run", "--workdir", str(workdir), "--base", base, "--variant", "lr=MATRIX_LR=0.03", *ab_data_args(),
            "--nproc", str(gpus), "--dry-run"]


@pytest.mark.parametrize("gpus, cap, ema, warmup", [(2, 60, "0.8589", "37"), (8, 600, "0.9965", "1500")])
def test_runs_on_several_gpus_start_with_torchrun_and_scale_by_their_steps(tmp_path, capsys, gpus, cap, ema, warmup):
    """--nproc N: every run starts on N GPUs of the machine, and a step and the Hessians take 1/N of one GPU's
    time: 60 s on 2 GPUs are ~124 steps; 600 s on 8, the challenge's ~4,990, keep the recipe's own values."""
    assert ab_runs.main(nproc_args(tmp_path / "w", gpus, f"RECIPE=2135,MAX_WALLCLOCK_SECONDS={cap}")) == 0
    commands = dry_commands(capsys)
    assert len(commands) == 2 * len(AB_SEEDS)
    for _, _, command in commands:
        assert command.endswith(f" -m torch.distributed.run --standalone --nproc_per_node={gpus} {ab_runs.TRAIN_GPT}")
        assert f" EMA_DECAY={ema} " in command and f" MUON_MOMENTUM_WARMUP_STEPS={warmup} " in command


def plan_of(argv, monkeypatch) -> tuple:
    """(plan, val files, parsed args) that `run` would make of argv."""
    parsed = []
    with monkeypatch.context() as mp:
        mp.setattr(ab_runs, "cmd_run", lambda a, argv: parsed.append(a) or 0)
        ab_runs.main(argv)
    return (*ab_runs.make_plan(parsed[0]), parsed[0])


def test_a_workdir_keeps_its_gpu_count(tmp_path, monkeypatch):
    plan, _, _ = plan_of(nproc_args(tmp_path / "w", 1), monkeypatch)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(SystemExit, match=r"^error: .* holds runs on 1 GPU\(s\) each: use a new --workdir for runs on 2"):
        ab_runs.main(nproc_args(tmp_path / "w", 2))
    del plan["nproc"]  # a plan written before --nproc ran on one GPU
    (tmp_path / "w" / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(SystemExit, match=r"holds runs on 1 GPU\(s\)"):
        ab_runs.main(nproc_args(tmp_path / "w", 2))
    assert ab_runs.main(nproc_args(tmp_path / "w", 1)) == 0
    with pytest.raises(SystemExit, match=r"^error: --nproc 0: give the GPUs a run uses, at least 1$"):
        ab_runs.main(nproc_args(tmp_path / "v", 0))


def test_a_run_on_two_ranks_finishes(tmp_path, monkeypatch):
    """One base run of a --nproc 2 plan, as the runner starts it (two gloo ranks on the CPU)."""
    work = tmp_path / "w"
    plan, files, parsed = plan_of([*ab_args(work), "--nproc", "2"], monkeypatch)
    ab_runs.write_data(parsed, work, files)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert ab_runs.run_one(work, ab_runs.run_env(plan, "base", 1), ab_runs.nproc(plan)) == 0
    assert ab_runs.run_state(work, "base_s1") == ("done", "")
    assert " world_size:2 " in (work / "logs" / "base_s1.txt").read_text()


# ---- lanes side by side (--gpus) ----

def test_lanes_run_side_by_side_and_an_eval_variant_waits_for_its_base(ab_workdir, tmp_path, monkeypatch, capsys):
    """Two lanes take the queue's runs as they come free, each run once, on its lane's GPUs; an eval-only
    variant starts only after its seed's base has finished. Runs are stand-ins that copy the finished fixture's
    logs (a base's artifact too); the first two wait for each other, so they must run at once."""
    work = with_eval_variant(ab_workdir, tmp_path)
    plan = json.loads((work / "plan.json").read_text())
    for f in [*(work / "logs").glob("*"), *(work / "artifacts").glob("*")]:
        f.unlink()
    events, lock, both = [], threading.Lock(), threading.Barrier(2, timeout=120)

    def stand_in(folder, env, gpus):
        rid, name = env["RUN_ID"], env["RUN_ID"].rsplit("_s", 1)
        with lock:
            events.append(("start", rid, env.get("CUDA_VISIBLE_DEVICES")))
        if rid in ("base_s1", "lr_s1"):  # the first pass starts both, one a lane
            both.wait()
        source = "base" if name[0] == "ev" else name[0]
        shutil.copyfile(ab_workdir / "logs" / f"{source}_s{name[1]}.txt", folder / "logs" / f"{rid}.txt")
        if name[0] == "base":
            (folder / "artifacts" / f"{rid}.golf").write_bytes(b"artifact " + rid.encode())
        with lock:
            events.append(("end", rid, env.get("CUDA_VISIBLE_DEVICES")))
        return 0

    monkeypatch.setattr(ab_runs, "run_one", stand_in)
    (work / "logs").mkdir(exist_ok=True)
    (work / "artifacts").mkdir(exist_ok=True)
    todo = ab_runs.queue(plan, list(plan["variants"]), plan["seeds"])
    ab_runs.run_queue(work, plan, todo, False, ["0", "1"])
    # (lane, position in the event order): what happened before what, whatever the machine's speed
    starts = {rid: (lane, i) for i, (kind, rid, lane) in enumerate(events) if kind == "start"}
    ends = {rid: i for i, (kind, rid, _) in enumerate(events) if kind == "end"}
    assert sorted(starts) == sorted(ab_runs.run_id(n, s) for n, s in todo) and len(events) == 2 * len(todo)
    assert {lane for lane, _ in starts.values()} == {"0", "1"}
    for seed in AB_SEEDS:
        assert starts[f"ev_s{seed}"][1] > ends[f"base_s{seed}"]
    assert all(ab_runs.run_state(work, rid)[0] == "done" for rid in starts)


def test_a_stopped_runner_stops_its_runs_and_writes_no_exit(tmp_path):
    """stop_runs terminates every run in progress; run_one then returns None and writes no exit record, so the
    run counts as cut short."""
    work = tmp_path / "w"
    work.mkdir()
    env = {"RUN_ID": "base_s1", "ARTIFACT_PATH": "artifacts/base_s1.golf"}
    result, launched = [], threading.Event()
    with pytest.MonkeyPatch.context() as mp:  # a run that waits for a signal: only the stop ends it
        mp.setattr(ab_runs, "launcher", lambda gpus: launched.set() or [sys.executable, "-c",
                                                                          "import signal; signal.pause()"])
        ab_runs.STOPPING.clear()
        thread = threading.Thread(target=lambda: result.append(ab_runs.run_one(work, env)))
        thread.start()
        assert launched.wait(timeout=600)  # a hang guard: the launch holds the lock the stop takes next
        ab_runs.stop_runs()
        thread.join(timeout=600)
    ab_runs.STOPPING.clear()
    assert result == [None] and not (work / "logs" / "base_s1.exit.json").exists()


@pytest.mark.parametrize("gpus, nproc, message", [
    ("0,1,2", "2", "3 GPUs do not make lanes of --nproc 2"), ("0,0", "1", "give distinct GPU numbers"),
    ("a,b", "1", "give distinct GPU numbers"),
])
def test_bad_gpu_lanes_are_refused(tmp_path, gpus, nproc, message):
    argv = [*nproc_args(tmp_path / "w", nproc), "--gpus", gpus]
    with pytest.raises(SystemExit, match=re.escape(message)):
        ab_runs.main(argv)


def test_lanes_split_the_gpus_by_nproc():
    assert ab_runs.gpu_lanes("0,1,2,3", 2) == ["0,1", "2,3"] and ab_runs.gpu_lanes(None, 8) == [None]


def test_a_run_keeps_the_machines_gpu_settings_and_sheds_stray_ones(tmp_path, monkeypatch):
    """The lent GPU hosts keep NVLink multicast off (NCCL_NVLS_ENABLE=0 ...): a run, and torchrun's ranks, must
    get those (and a host's gloo interface, which the agreed clock uses); a stray setting of train_gpt.py's must
    not reach it; torchrun must not stop on a closed terminal (SIGHUP), which the runner ignores."""
    machine = dict(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1",
                   PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True", GLOO_SOCKET_IFNAME="lo")
    for name, value in {**machine, "RECIPE": "1886", "MATRIX_LR": "9"}.items():
        monkeypatch.setenv(name, value)
    work, seen = tmp_path / "w", tmp_path / "env.json"
    work.mkdir()
    dump = f"import json, os; open({str(seen)!r}, 'w').write(json.dumps(dict(os.environ)))"
    monkeypatch.setattr(ab_runs, "launcher", lambda gpus: [sys.executable, "-c", dump])
    assert ab_runs.run_one(work, {"RUN_ID": "base_s1", "ARTIFACT_PATH": "artifacts/base_s1.golf"}, 2) == 0
    env = json.loads(seen.read_text())
    assert {k: env.get(k) for k in machine} == machine and "RECIPE" not in env and "MATRIX_LR" not in env
    assert "SIGHUP" not in env["PET_SIGNALS_TO_HANDLE"] and "SIGTERM" in env["PET_SIGNALS_TO_HANDLE"]


def test_torchrun_outlives_a_closed_terminal(tmp_path, monkeypatch):
    """The runner ignores SIGHUP (nohup-friendly); torchrun would install its own handler for it and stop the
    ranks: a hang-up sent while both ranks run must leave the run to finish. Ranks meet the test through files."""
    work = tmp_path / "w"
    work.mkdir()
    rank = ("import os, pathlib, time\n"
            f"d = pathlib.Path({str(tmp_path)!r})\n"
            "(d / ('up' + os.environ['RANK'])).touch()\n"
            "for _ in range(6000):\n"  # bounded: until the test says go
            "    if (d / 'go').exists(): break\n"
            "    time.sleep(0.05)\n")
    (tmp_path / "rank.py").write_text(rank)
    monkeypatch.setattr(ab_runs, "launcher", lambda gpus: [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                           f"--nproc_per_node={gpus}", str(tmp_path / "rank.py")])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as run_queue does
    result = []
    try:
        thread = threading.Thread(target=lambda: result.append(
            ab_runs.run_one(work, {"RUN_ID": "base_s1", "ARTIFACT_PATH": "artifacts/base_s1.golf"}, 2)))
        thread.start()
        for _ in range(1200):  # until both ranks run (bounded)
            if (tmp_path / "up0").exists() and (tmp_path / "up1").exists():
                break
            time.sleep(0.1)
        for proc in list(ab_runs.IN_PROGRESS):
            proc.send_signal(signal.SIGHUP)
        (tmp_path / "go").touch()
        thread.join(timeout=120)
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert result == [0], (work / "console" / "base_s1.txt").read_text()[-2000:]


def test_val_shards_cut_mid_document_are_one_stream(tmp_path, monkeypatch):
    """An export may write val in several shards (the record's prep: 10M tokens each, cut anywhere), each with its
    sidecar: the plan is the one of the same stream in one shard."""
    split = tmp_path / "split"
    split.mkdir()
    for path in CASEOPS_DATA.glob("fineweb_train_*.bin"):
        (split / path.name).symlink_to(path)
    for kind in ("val", "val_bytes"):
        whole = ab_runs.shard_tokens(CASEOPS_DATA / f"fineweb_{kind}_000000.bin")
        cut = len(whole) // 2 + 7  # inside a document
        for i, part in enumerate((whole[:cut], whole[cut:])):
            (split / f"fineweb_{kind}_{i:06d}.bin").write_bytes(ab_runs.shard_bytes(part))
    one, files_one, _ = plan_of(nproc_args(tmp_path / "a", 1), monkeypatch)
    argv = nproc_args(tmp_path / "b", 1)
    argv[argv.index("--data") + 1] = str(split)
    two, files_two, _ = plan_of(argv, monkeypatch)
    assert files_two == files_one and two["data"]["val_sha256"] == one["data"]["val_sha256"]
    (split / "fineweb_val_bytes_000001.bin").unlink()
    with pytest.raises(SystemExit, match=r"need val shards \(found 2\), a byte sidecar for each or none \(found 1\)"):
        plan_of(argv, monkeypatch)


def test_a_gpu_count_that_does_not_divide_the_batch_is_refused_in_the_scripts_terms(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: --nproc 3: a run's GPUs must divide its 8 micro-batches"):
        ab_runs.main(nproc_args(tmp_path / "w", 3))


def test_every_run_scores_the_whole_val_subset(tmp_path, capsys):
    """A variant of another EVAL_SEQ_LEN scores the same targets as the base: VAL_MAX_TOKENS is the subset's
    length, so train_gpt's cut to whole EVAL_SEQ_LEN lengths (the records', for the whole val) never applies."""
    argv = [*nproc_args(tmp_path / "w", 1), "--variant", "ctx=EVAL_SEQ_LEN=512,TTT_EVAL_SEQ_LEN=512"]
    assert ab_runs.main(argv) == 0
    commands = dry_commands(capsys)
    kept = {re.search(r" VAL_MAX_TOKENS=(\d+) ", c).group(1) for _, _, c in commands}
    assert len(commands) == 3 * len(AB_SEEDS) and kept == {"3130"}  # the sample's 13th document, whole


def test_a_run_dispatched_after_the_stop_never_starts(tmp_path, monkeypatch):
    """stop_runs between a lane's dispatch and its run's start: the run does not start (its lane would otherwise
    hold the stopped runner for the whole run), and a run that had already ended keeps its exit record."""
    started = []
    monkeypatch.setattr(ab_runs, "launcher", lambda gpus: started.append(gpus) or [sys.executable, "-c", "pass"])
    env = {"RUN_ID": "base_s1", "ARTIFACT_PATH": "artifacts/base_s1.golf"}
    (tmp_path / "w").mkdir()
    ab_runs.STOPPING.clear()
    assert ab_runs.run_one(tmp_path / "w", env) == 0 and started == [1]  # ran and ended: its exit is written
    ab_runs.stop_runs()
    assert (tmp_path / "w" / "logs" / "base_s1.exit.json").exists()
    assert ab_runs.run_one(tmp_path / "w", dict(env, RUN_ID="lr_s1")) is None and started == [1]
    ab_runs.STOPPING.clear()


def test_cache_env_prints_what_each_run_gets(tmp_path, capsys):
    """`cache-env --workdir W` (the GPU scripts' `export $(...)`) prints the compile-cache variables every run
    gets, as KEY=VALUE words, from the one place that sets them."""
    assert ab_runs.main(["cache-env", "--workdir", str(tmp_path)]) == 0
    words = capsys.readouterr().out.split()
    assert dict(w.split("=", 1) for w in words) == ab_runs.cache_env(tmp_path)
    assert ab_runs.cache_env(tmp_path)["TORCHINDUCTOR_CACHE_DIR"].startswith(str(tmp_path))


S27 = REPO / "docs" / "runs" / "2026-12-06" / "next"


def test_s27_lines_pass_ab_runs_checks(tmp_path, capsys):
    """Each line of the GPU sessions' variant list, read as s27.sh reads it (an optional `seeds=LIST` field first,
    which s27.sh skips the line for unless it is digits and commas followed by a variant), passes ab_runs' checks
    over s27.sh's base: on the GPU, a line either refuses is skipped and its runs wait for another session. A
    `seeds=3` line (one seed; it stood there from the thirty-fourth to the thirty-sixth session) fails here."""
    base = re.search(r"^BASE=(\S+)$", (S27 / "s27.sh").read_text(), re.M).group(1)
    lines = [line for line in (S27 / "variants_s27.txt").read_text().splitlines() if line and line[0] != "#"]
    assert lines  # the done lines are commented out as they finish
    names = [[word for word in line.split() if not word.startswith("seeds=") and word not in ("quant", "eval")][0]
             for line in lines]
    # LQER's seed 5 re-quantizes the base_s5 that progressive context's line trains in the same session
    assert names.index("progctx") < names.index("lqer2060")
    for i, line in enumerate(lines):
        seeds = "1,2,3"
        first, *rest = line.split(None, 1)
        if first.startswith("seeds="):
            seeds = first.removeprefix("seeds=")
            assert re.fullmatch(r"[0-9]+(,[0-9]+)*", seeds) and rest, f"s27.sh skips {line!r}"
            line = rest[0]
        variants = tmp_path / f"variant{i}.txt"
        variants.write_text(line + "\n")
        argv = ["run", "--workdir", str(tmp_path / "w"), "--base", base, "--seeds", seeds, "--variants",
                str(variants), *ab_data_args(), "--dry-run"]
        assert ab_runs.main(argv) == 0, line
        assert "[pending]" in capsys.readouterr().out
