"""Write a thin copy of the val shard and its byte sidecar for a GPU call's carry (64 MiB): the documents that
ab_runs keeps (every --val-every-th of at most --val-max-doc-tokens tokens) whole, every other one cut to its BOS
(or, where it is too long to be kept, to BOS + that many zeros), so the harness selects the same documents and
writes the same bytes (the plan's val_sha256 checks it).

    python thin_val.py SOURCE_DIR OUT_DIR [EVERY MAX_DOC_TOKENS]
"""
import lzma
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "scripts"))
import ab_runs  # noqa: E402

src, out = Path(sys.argv[1]), Path(sys.argv[2])
every, longest = (int(a) for a in sys.argv[3:5]) if len(sys.argv) > 3 else (ab_runs.VAL_EVERY, ab_runs.VAL_MAX_DOC_TOKENS)
shards = [ab_runs.source_files(src, p)[0] for p in ("fineweb_val_[0-9]*", "fineweb_val_bytes_*")]
tokens, sidecar = (ab_runs.shard_tokens(p) for p in shards)
starts = list(np.flatnonzero(tokens == ab_runs.tg.Hyperparameters().bos_id)) + [len(tokens)]
spans = list(zip(starts, starts[1:]))
out.mkdir(parents=True, exist_ok=True)
for path, values in zip(shards, (tokens, sidecar)):
    pieces = []
    for i, (a, b) in enumerate(spans):
        if b - a > longest:  # never kept: a stand-in as long
            pieces.append(np.concatenate([values[a:a + 1], np.zeros(longest, values.dtype)]))
        else:  # kept whole, or its BOS alone
            pieces.append(values[a:b] if i % every == every - 1 else values[a:a + 1])
    target = out / (path.name.split(".")[0] + ".bin.xz")
    target.write_bytes(lzma.compress(ab_runs.shard_bytes(np.concatenate(pieces)), preset=9))
    print(target, target.stat().st_size)
