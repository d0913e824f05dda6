"""scripts/compare_curves.py at toy size on the CPU: the record and ours, from the same weights on the same
batches, give the same train losses and the same final score (fp32 on the CPU), and its logs plot."""

import os
import sys

import pytest

from conftest import PROXY_DATA, REPO, TOKENIZER

sys.path.insert(0, str(REPO / "scripts"))
import compare_curves  # noqa: E402
import plot_loss  # noqa: E402
import record_oracle  # noqa: E402


def test_toy_run_gives_the_same_curve_and_score(tmp_path, capsys):
    reason = record_oracle.reference_missing_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the oracle, not skip it")
        pytest.skip(reason)
    compare_curves.main(["--toy", "--data", str(PROXY_DATA), "--tokenizer", str(TOKENIZER), "--steps", "2",
                         "--log-every", "1", "--val-tokens", "2048", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "worst train-loss ratio" in out and "prequant val_bpb" in out
    record, ours = (plot_loss.read_curve(tmp_path / name) for name in ("record.txt", "ours.txt"))
    assert [p[0] for p in record["points"]] == [p[0] for p in ours["points"]] == [1, 2]
    for (_, loss_r, _), (_, loss_o, _) in zip(record["points"], ours["points"]):
        assert abs(loss_o / loss_r - 1) < 1e-4, (loss_r, loss_o)
    bpb_r, bpb_o = record["finals"]["pre-quant"], ours["finals"]["pre-quant"]
    assert abs(bpb_o - bpb_r) < 1e-4 * bpb_r
    plot_loss.plot([record, ours], tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 0
