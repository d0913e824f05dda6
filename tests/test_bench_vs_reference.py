"""scripts/bench_vs_reference.py: two real CPU runs side by side, and its errors."""

import shutil
import sys

import pytest

from conftest import PROXY_DATA, REPO, TOKENIZER

sys.path.insert(0, str(REPO / "scripts"))
import bench_vs_reference as bench  # noqa: E402


def _args(tmp_path, reference, *extra):
    return ["--reference", str(reference), "--seconds", "12", "--data", str(PROXY_DATA), "--tokenizer",
            str(TOKENIZER), "--workdir", str(tmp_path / "runs"), "--timeout", "600",
            "--env", "SMOKE=1", "--env", "TTT_ENABLED=0", "--env", "OMP_NUM_THREADS=2", *extra]


def test_ours_against_a_copy_of_itself(tmp_path, capsys):
    """The 'reference' is a copy of our script in its own record folder: both must train and be read."""
    record = tmp_path / "record"
    record.mkdir()
    for name in ("train_gpt.py", "kernels.py"):
        shutil.copy(REPO / name, record / name)
    assert bench.main(_args(tmp_path, record / "train_gpt.py", "--ref-env", "SEED=7")) == 0
    out = capsys.readouterr().out
    assert "ms/step" in out and "tokens/s" in out and "final_roundtrip_exact" in out
    ours = bench.parse_output((tmp_path / "runs" / "ours" / "console.txt").read_text(), "ours")
    ref = bench.parse_output((tmp_path / "runs" / "reference" / "console.txt").read_text(), "ref")
    assert ours["steps"] > 0 and ref["steps"] > 0 and ours["ms_per_step"] > 0
    assert [label for label, _ in ours["bpb"]] == ["final_prequant_exact", "final_roundtrip_exact"]
    assert ours["bpb"] != ref["bpb"]  # different seeds reached the reference only
    assert (tmp_path / "runs" / "reference" / "logs" / "bench_reference.txt").is_file()


def test_failing_and_foreign_references_give_clear_errors(tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nprint('loading shards')\nsys.exit('shard 3 is corrupt')\n")
    with pytest.raises(SystemExit, match="(?s)failed with exit code 1.*shard 3 is corrupt"):
        bench.run_one("reference", crash, {}, bench_args(tmp_path), tmp_path)
    foreign = tmp_path / "hello.py"
    foreign.write_text("print('hello')\n")
    with pytest.raises(SystemExit, match="no 'step_avg:...ms'"):
        bench.run_one("reference", foreign, {}, bench_args(tmp_path), tmp_path)
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        bench.main(_args(tmp_path, foreign, "--env", "NOEQUALS"))


def bench_args(tmp_path):
    import argparse
    return argparse.Namespace(data=str(PROXY_DATA), tokenizer=str(TOKENIZER), seconds=5, nproc=1, timeout=60,
                              batch_tokens=786_432)
