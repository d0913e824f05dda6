"""The #2135 TTT oracle's learning case (tests/test_oracle_ttt_2135.py: 16 proxy2_caseops documents, toy
model, tilt on, CPU fp32) on TREE's code, with its figures printed (the test only asserts them):
bpb_difference and the per-document relative differences against the record's evaluator (twenty-sixth session).

    python3 docs/runs/2026-12-06f/qvo_vs_record.py TREE [SETTING=VALUE ...]
"""
import lzma
import os
import sys
import tempfile
from pathlib import Path

tree = Path(sys.argv[1]).resolve()
sys.path[:0] = [str(tree), str(tree / "scripts"), str(tree / "tests")]
import torch  # noqa: E402

import bench_ttt_vs_reference as bench  # noqa: E402
import test_oracle_ttt_2135 as oracle  # noqa: E402

val = Path(tempfile.mkdtemp())
for name in ("fineweb_val_000000.bin", "fineweb_val_bytes_000000.bin"):
    (val / name).write_bytes(lzma.decompress((oracle.CASEOPS / f"{name}.xz").read_bytes()))
for name in set(bench.TOY) | set(oracle.TOY_2135) | set(oracle.TILT):  # as the test: its settings only
    os.environ.pop(name, None)
os.environ.update({**oracle.TOY_2135, **oracle.TILT, **dict(a.split("=", 1) for a in sys.argv[2:])})
torch.set_num_threads(1)
bench.main(["--toy", "--docs", "16", "--val", str(val / "fineweb_val_000000.bin"), "--val-bytes",
            str(val / "fineweb_val_bytes_000000.bin"), "--tokenizer", str(oracle.TOKENIZER),
            "--reference", str(oracle.RECORD)])
