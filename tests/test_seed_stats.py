"""scripts/seed_stats.py on logs of real (short) CPU runs of train_gpt.py."""

import json
import math
import os
import re
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import seed_stats  # noqa: E402

RUN_LINE = "\n{} val_loss:"  # a run's score line (the log's embedded source also names each label)


@pytest.fixture(scope="module")
def logs(ab_workdir):
    """Two seeds of each configuration of conftest's toy A/B (real RECIPE=2135 runs): old its base, new
    MATRIX_LR=0.05."""
    return {side: [ab_workdir / "logs" / f"{name}_s{seed}.txt" for seed in (1, 2)]
            for side, name in (("old", "base"), ("new", "lr"))}


def test_summary_from_real_logs(logs):
    result = seed_stats.summarize(logs["old"], logs["new"], 0.005)
    for unit in ("nats", "bpb"):
        r = result[unit]
        assert r["old_std"] > 0 and 0 <= r["p_value"] <= 1 and r["old_mean"] > 0
    bytes_ratio = result["bpb"]["old_mean"] / result["nats"]["old_mean"]  # bpb per nat, from the logs
    assert result["bpb"]["margin"] == pytest.approx(0.005 * bytes_ratio, rel=0.05)


def test_p_value_direction():
    assert seed_stats.one_sided_p([1.10, 1.11, 1.12], [1.00, 1.01, 1.02], 0.005) < 0.01
    assert seed_stats.one_sided_p([1.00, 1.01, 1.02], [1.10, 1.11, 1.12], 0.005) > 0.99


def test_mixed_configs_are_refused(logs):
    with pytest.raises(SystemExit, match="not seeds of one configuration.*matrix_lr"):
        seed_stats.summarize([logs["old"][0], logs["new"][0]], logs["new"], 0.005)


def test_crashed_log_is_refused(logs, tmp_path):
    crashed = tmp_path / "crashed.txt"
    text = logs["old"][0].read_text()
    crashed.write_text(text[: text.index(RUN_LINE.format("final_prequant_exact")) + 1])  # not the source's mention
    with pytest.raises(SystemExit, match="crashed or is unfinished"):
        seed_stats.summarize([crashed, logs["old"][1]], logs["new"], 0.005)


def test_a_run_without_ttt_is_scored_by_its_roundtrip_and_never_mixed_with_ttt_runs(logs, tmp_path):
    """A TTT_ENABLED=0 log (here a real one without its TTT line) is scored by its quantized roundtrip; a side
    mixing it with a TTT run is refused."""
    no_ttt = tmp_path / "no_ttt.txt"
    text = logs["old"][0].read_text()
    ttt = text.index(RUN_LINE.format("final_ttt_exact")) + 1
    no_ttt.write_text(text[:ttt] + text[text.index("\n", ttt) + 1:])
    run = seed_stats.read_log(no_ttt)
    assert run["label"] == "final_roundtrip_exact"
    roundtrip = re.search(r"^final_roundtrip_exact val_loss:([0-9.]+) val_bpb:([0-9.]+)", text, re.M)
    assert (run["nats"], run["bpb"]) == (float(roundtrip.group(1)), float(roundtrip.group(2)))
    with pytest.raises(SystemExit, match="mix TTT and non-TTT final scores"):
        seed_stats.summarize([no_ttt, logs["old"][1]], logs["new"], 0.005)


def _published(tmp_path, scores, with_loss=False):
    results = {str(i): dict(val_bpb=b, **({"val_loss": b * 2} if with_loss else {})) for i, b in enumerate(scores)}
    path = tmp_path / "submission.json"
    path.write_text(json.dumps(dict(track="10min_16mb", seed_results=results)))
    return path


def test_against_a_published_record(logs, tmp_path, capsys):
    new = seed_stats.read_side(logs["new"], "new")
    worse = [b + 0.5 for b in new["bpb"]]  # a baseline far worse than ours: we beat it
    beaten = seed_stats.compare(seed_stats.published_scores(_published(tmp_path, worse)), new)
    # the same test in either unit; the logs round each score to 8 decimals, which moves the p-value by far less
    # than 1e-3 of itself
    assert beaten["bpb"]["p_value"] < 0.01
    assert beaten["nats"]["p_value"] == pytest.approx(beaten["bpb"]["p_value"], rel=1e-3)
    assert beaten["bpb"]["old_mean"] == pytest.approx(sum(worse) / 2)
    same = seed_stats.compare(dict(nats=None, bpb=new["bpb"]), new)
    assert same["nats"]["p_value"] > 0.5  # equal scores do not clear the 0.005-nat bar
    seed_stats.main(["--new", *map(str, logs["new"]), "--old-bpb", *map(str, worse)])
    assert "new beats old by 0.005 nats at p < 0.01" in capsys.readouterr().out
    seed_stats.main(["--new", *map(str, logs["new"]), "--old-submission", str(_published(tmp_path, worse)),
                     "--p", "1e-9"])
    assert "does not beat old by 0.005 nats at p < 1e-09" in capsys.readouterr().out
    seed_stats.main(["--new", *map(str, logs["new"]), "--baseline", "caseops"])  # toy runs: ~4.5 bpb, not 1.06
    out = capsys.readouterr().out
    assert out.startswith("old: PR #2135") and "does not beat old" in out


def test_bad_inputs_are_refused(logs, tmp_path):
    with pytest.raises(SystemExit, match="names one log twice"):
        seed_stats.summarize(logs["old"], [logs["new"][0], logs["new"][0]])
    binary = tmp_path / "model.golf"
    binary.write_bytes(b"\x00\xff" * 100)
    with pytest.raises(SystemExit, match="binary data"):
        seed_stats.summarize(logs["old"], [logs["new"][0], binary])
    with pytest.raises(SystemExit, match="no seed_results"):
        seed_stats.published_scores(_published(tmp_path, [1.0]))
    with pytest.raises(SystemExit, match="not JSON"):
        seed_stats.published_scores(logs["old"][0])
    with pytest.raises(SystemExit):
        seed_stats.main(["--new", *map(str, logs["new"]), "--old-bpb", "1.0", "1.1", "--p", "2"])


REFERENCE = REPO.parent / "shared" / "reference"


def test_published_baselines_match_the_records():
    """BASELINES' per-seed val_bpb and bytes per token give each record's published val_loss (the records' own
    logs and submission.json, in ../shared/reference)."""
    if not REFERENCE.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{REFERENCE} missing; CI must check the baselines, not skip them")
        pytest.skip(f"needs {REFERENCE}")
    finals = [re.search(r"^quantized_ttt_phased val_loss:([0-9.]+) val_bpb:([0-9.]+)", p.read_text(), re.M)
              for p in sorted(REFERENCE.glob("record_1886_seed*.log"))]
    published = dict(sp8192=[(float(m.group(1)), float(m.group(2))) for m in finals],
                     caseops=[(r["val_loss"], r["val_bpb"]) for r in json.loads(
                         (REFERENCE / "record_2135" / "submission.json").read_text())["seed_results"].values()])
    assert set(published) == set(seed_stats.BASELINES)
    for family, pairs in published.items():
        baseline = seed_stats.BASELINES[family]
        assert sorted(baseline["bpb"]) == sorted(bpb for _, bpb in pairs)
        for nats, bpb in pairs:
            assert bpb * math.log(2) * baseline["bytes_per_token"] == pytest.approx(nats, abs=2e-8)
    best = {}  # the leaderboard's best val_bpb per tokenizer family
    for line in (REFERENCE / "LEADERBOARD.md").read_text().splitlines():
        cells = [c.strip(" *") for c in line.split("|")]
        if len(cells) > 3 and re.fullmatch(r"1\.\d{5}", cells[1]):
            best[cells[3].lower()] = min(best.get(cells[3].lower(), 9.0), float(cells[1]))
    assert best == {family: round(sum(b["bpb"]) / len(b["bpb"]), 5) for family, b in seed_stats.BASELINES.items()}


def test_a_baseline_is_in_nats_by_its_own_bytes_per_token(logs):
    """Not by the new logs' ratio (these toy logs score another text: ~2.6 bytes per token, not SP8192's 3.73)."""
    new = seed_stats.read_side(logs["new"], "new")
    baseline = seed_stats.BASELINES["sp8192"]
    result = seed_stats.compare(baseline, new)
    expected = [b * math.log(2) * baseline["bytes_per_token"] for b in baseline["bpb"]]
    assert result["nats"]["old_mean"] == pytest.approx(sum(expected) / 3, rel=1e-9)
    assert result["nats"]["old_mean"] == pytest.approx(2.76281627, abs=1e-7)  # the record's mean val_loss
