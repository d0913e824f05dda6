"""Oracle: our TTT evaluator against the record's own (../shared/reference), same weights, same documents
(longer than the toy context, three batches per phase boundary), at world size 1 on the CPU."""

import os
import re
import sys

import pytest
import torch

from conftest import REPO, TOKENIZER

sys.path.insert(0, str(REPO / "scripts"))
import bench_ttt_vs_reference as bench  # noqa: E402

VAL = REPO.parent / "shared" / "data" / "proxy2" / "datasets" / "proxy2_sp8192" / "fineweb_val_000000.bin"
BPB_TOLERANCE = 2e-4  # the target
DOC_NATS_TOLERANCE = 2e-3  # fp32 sums of ~300 token losses, two implementations


def test_ttt_matches_record(capsys):
    if not (bench.REFERENCE / "record_1886_train_gpt.py").exists() or not VAL.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("../shared/reference or the proxy2 val shard is missing: the TTT oracle must run in CI")
        pytest.skip("no ../shared/reference here")
    torch.set_num_threads(1)
    bench.main(["--toy", "--docs", "16", "--val", str(VAL), "--tokenizer", str(TOKENIZER)])
    out = capsys.readouterr().out
    fields = dict(kv.split(":", 1) for line in out.splitlines() for kv in line.split() if ":" in kv)
    phase_ends = re.search(r"phase_ends:\[([^\]]*)\]", out).group(1).split(",")
    assert int(fields["documents"]) == 16 and len(phase_ends) == 3  # two phase pauses with SGD
    assert abs(float(fields["bpb_difference"])) <= BPB_TOLERANCE, out
    assert float(fields["worst_doc_nats_difference"]) <= DOC_NATS_TOLERANCE, out
