"""scripts/make_record.py on the log of a real CPU smoke run."""

import json
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import make_record  # noqa: E402


def test_record_folder_from_a_real_log(smoke_log, tmp_path):
    _, log = smoke_log
    path = tmp_path / "run.txt"
    path.write_text(log)
    folder = make_record.make_record([path], "Smoke", "a", "b", "blurb", tmp_path / "records", "2026-11-24")
    assert folder.name == "2026-11-24_Smoke"
    sub = json.loads((folder / "submission.json").read_text())
    run = make_record.parse_log(path)
    assert sub["val_bpb"] == round(run["ttt"], 8) and sub["bytes_total"] == run["bytes_total"] < 16_000_000
    assert run["prequant"] > 0 and run["steps"] > 0
    assert {"train_gpt.py", "kernels.py", "README.md", "train_seed1337.log"} <= {p.name for p in folder.iterdir()}
    assert f"{run['ttt']:.5f}" in (folder / "README.md").read_text()


@pytest.mark.parametrize("line, value", [("artifact_total_bytes:", "16000001"), ("train_time:", "600001")])
def test_over_limit_runs_are_refused(smoke_log, tmp_path, line, value):
    _, log = smoke_log
    import re
    bad = re.sub(rf"^{line}\d+", f"{line}{value}", log, count=1, flags=re.M)
    path = tmp_path / "bad.txt"
    path.write_text(bad)
    with pytest.raises(SystemExit, match="over the challenge limit"):
        make_record.make_record([path], "Bad", "a", "b", "", tmp_path / "records", "2026-11-24")


def test_crashed_log_is_refused(smoke_log, tmp_path):
    _, log = smoke_log
    path = tmp_path / "crashed.txt"
    path.write_text(log[: log.index("final_roundtrip_exact")])
    with pytest.raises(SystemExit, match="crashed or unfinished"):
        make_record.parse_log(path)
