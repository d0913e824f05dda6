"""The shipped single-file train_gpt.py and scripts/make_record.py, on logs of real CPU smoke runs of that file.

The fixture builds the shipped file from our two sources, runs it from an empty folder for three seeds (few
steps: bounded by ITERATIONS, not by the clock), and every test reads those logs."""

import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import PROXY_DATA, REPO, TOKENIZER, clean_env

sys.path.insert(0, str(REPO / "scripts"))
import golflog  # noqa: E402
import make_record  # noqa: E402
import train_gpt as tg  # noqa: E402

SEEDS = (1, 2, 3)
SHORT_SMOKE = dict(SMOKE=1, ITERATIONS=2, VAL_MAX_TOKENS=4096, MAX_WALLCLOCK_SECONDS=100000)


@pytest.fixture(scope="module")
def shipped_runs(tmp_path_factory):
    """(shipped file path, {seed: log path}) of three smoke runs of the shipped file in an empty folder."""
    folder = tmp_path_factory.mktemp("shipped")
    shipped = folder / "train_gpt.py"
    shipped.write_bytes(tg.build_shipped_file(tg.code_sources()))
    logs = {}
    for seed in SEEDS:
        env = clean_env(DATA_PATH=PROXY_DATA, TOKENIZER_PATH=TOKENIZER, RUN_ID=f"s{seed}", SEED=seed, **SHORT_SMOKE)
        env["OMP_NUM_THREADS"] = "2"
        proc = subprocess.run([sys.executable, "train_gpt.py"], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, f"shipped train_gpt.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        logs[seed] = folder / "logs" / f"s{seed}.txt"
    assert [p.name for p in folder.glob("*.py")] == ["train_gpt.py"]  # no kernels.py beside it
    return shipped, logs


def test_shipped_file_is_one_compressed_script():
    sources = tg.code_sources()
    shipped = tg.build_shipped_file(sources)
    assert shipped == tg.build_shipped_file(sources)  # deterministic: the run and make_record agree
    assert shipped.isascii() and len(shipped) < sum(len(s) for s in sources.values()) / 4
    assert tg.shipped_sources(shipped) == {name: tg.minify_source(text) for name, text in sources.items()}
    with pytest.raises(ValueError, match="not a shipped train_gpt.py"):
        tg.shipped_sources((REPO / "train_gpt.py").read_bytes())


def test_shipped_file_runs_and_counts_its_own_size(shipped_runs):
    shipped, logs = shipped_runs
    for log_path in logs.values():
        text = log_path.read_text()
        counted = int(re.search(r"^artifact_model_bytes:\d+ code_bytes:(\d+)", text, re.M).group(1))
        assert counted == shipped.stat().st_size
        assert golflog.embedded_sources(text) == tg.shipped_sources(shipped.read_bytes())  # the code that ran
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
    folder = out / "track_10min_16mb" / "2026-11-24_Smoke"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "requirements.txt", "submission.json",
                                                        "train_gpt.py", "train_seed1.log", "train_seed2.log",
                                                        "train_seed3.log"]
    assert (folder / "train_gpt.py").read_bytes() == shipped.read_bytes()
    runs = [make_record.parse_log(p) for p in logs.values()]
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["track"] == "10min_16mb" and sub["seeds"] == list(SEEDS) and sub["hardware"] == "1x CPU"
    assert sub["val_bpb"] == pytest.approx(sum(r["ttt"] for r in runs) / 3, abs=1e-8) and sub["val_bpb_std"] > 0
    assert sub["seed_results"]["2"]["val_bpb"] == round(runs[1]["ttt"], 8)
    assert sub["bytes_code"] == shipped.stat().st_size and sub["bytes_total"] == max(r["bytes_total"] for r in runs)
    readme = (folder / "README.md").read_text()
    for needed in ("## Method", "Condition 1 (causal)", "Condition 2 (full normalised distribution)",
                   "Condition 3 (score before update)", "Condition 4 (single pass)", "## Hardware", "## Reproduction",
                   "## Credits", "PR #1886", "PR #1768", "PR #1787", "PR #1530", "one-sided Welch p =",
                   f"{runs[0]['ttt']:.8f}"):
        assert needed in readme, needed
    assert "brotli" in (folder / "requirements.txt").read_text()


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
    ("artifact", _sub(r"^artifact_total_bytes:\d+", "artifact_total_bytes:16000001"), "artifact bytes .* over"),
    ("train_time", _sub(r"^train_time:\d+ms", "train_time:600001ms"), "train_time ms .* over"),
    ("data_end", _sub(r"^train_data_access_end_seconds:[0-9.]+", "train_data_access_end_seconds:600.50"),
     "train_data_access_end_seconds .* over"),
    ("eval_time", _sub(r"^eval_time:\d+ms \(", "eval_time:600001ms ("), "eval_time ms .* over"),
    ("no_data_end", _sub(r"^train_data_access_end_seconds:.*\n", ""), "no train_data_access_end_seconds"),
    ("nan", _sub(r"^(step:1/\d+ train_loss:)[0-9.]+", r"\1nan"), "NaN"),
    ("interrupted", lambda t: t + "interrupted: KeyboardInterrupt at step 2\n", "interrupted"),
    # cut at the run's last line, not at its first mention in the embedded source
    ("crashed", lambda t: t[: t.rindex("final_ttt_exact")], "crashed or unfinished"),
    ("code_bytes", _sub(r"code_bytes:\d+", "code_bytes:123"), "counted code_bytes:123"),
])
def test_bad_runs_are_refused(shipped_runs, tmp_path, case, edit, message):
    _, logs = shipped_runs
    paths = [_copy(logs[1], tmp_path, "edited.txt", edit), logs[2], logs[3]]
    with pytest.raises(SystemExit, match=message):
        _build(paths, tmp_path)


def test_sets_of_logs_that_are_not_one_record_are_refused(shipped_runs, tmp_path):
    _, logs = shipped_runs
    s1, s2, s3 = logs.values()
    cases = [
        ([s1, s2], "at least 3 seeds"),
        ([s1, s2, s1], "given twice"),
        ([s1, s2, s3, _copy(s1, tmp_path, "copy.txt")], "both seed 1"),
        ([s1, s2, _copy(s3, tmp_path, "lr.txt", _sub(r"^matrix_lr:\S+", "matrix_lr:0.5"))], "differs in matrix_lr"),
        ([s1, s2, _copy(s3, tmp_path, "code.txt", lambda t: t.replace("import torch\n", "import  torch\n", 1))],
         "ran other code"),
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
    size = len(tg.build_shipped_file(sources))

    def as_other_code(text):
        text = text.replace("\n==== end of kernels.py ====\n",
                            "A_LINE_THE_WORKING_TREE_LACKS = 1\n\n==== end of kernels.py ====\n", 1)
        return re.sub(r"code_bytes:\d+", f"code_bytes:{size}", text, count=1)

    paths = [_copy(p, tmp_path, f"other{seed}.txt", as_other_code) for seed, p in logs.items()]
    folder = _build(paths, tmp_path)
    shipped = (folder / "train_gpt.py").read_bytes()
    assert len(shipped) == size and tg.shipped_sources(shipped) == tg.shipped_sources(tg.build_shipped_file(sources))
    assert tg.shipped_sources(shipped)["kernels.py"].endswith("\nA_LINE_THE_WORKING_TREE_LACKS = 1\n")
    with pytest.raises(SystemExit, match="exists"):
        _build(paths, tmp_path)
    shutil.rmtree(folder)
