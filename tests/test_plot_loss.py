"""scripts/plot_loss.py on the log of a real CPU smoke run."""

import re
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import plot_loss  # noqa: E402


def test_curve_and_png_from_a_real_log(smoke_log, tmp_path):
    _, log = smoke_log
    path = tmp_path / "smoke.txt"
    path.write_text(log)
    curve = plot_loss.read_curve(path)
    steps = [int(s) for s in re.findall(r"^step:(\d+)/", log, re.M)]
    assert [p[0] for p in curve["points"]] == steps and len(steps) >= 5
    assert set(curve["finals"]) == {"pre-quant", "quantized", "TTT"}
    assert curve["points"][-1][1] < curve["points"][0][1]  # it trained
    out = plot_loss.main([str(path), str(path), "-o", str(tmp_path / "loss.png"), "--x", "time"])
    png = (tmp_path / "loss.png").read_bytes()
    assert out == 0 and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_log_without_training_steps_is_refused(smoke_log, tmp_path):
    _, log = smoke_log
    path = tmp_path / "eval_only.txt"
    path.write_text(re.sub(r"^step:.*\n", "", log, flags=re.M))
    with pytest.raises(SystemExit, match="no 'step:N/M train_loss"):
        plot_loss.read_curve(path)
    with pytest.raises(SystemExit, match="no such log file"):
        plot_loss.main([str(tmp_path / "missing.txt")])
