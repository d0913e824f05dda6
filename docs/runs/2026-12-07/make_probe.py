"""make_probe.py [OUT] [ROWS] [TOKENS]: the TTT peak-memory probe's val: the ROWS (96) longest documents of
proxy2_caseops' val, each cut to its first TOKENS (4,000) tokens, with their CaseOps byte sidecar, as two
xz'd shards in OUT (.gpu_data/probe). Every row of its one TTT batch reaches the full TTT_EVAL_SEQ_LEN window,
where a batch's memory peaks, in 112 chunk steps instead of the whole val's ~2,400-2,900."""
import lzma
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
import train_gpt as tg  # noqa: E402

VAL = REPO.parent / "shared/data/proxy2_caseops/datasets/proxy2_caseops"
NAMES = ("fineweb_val_000000.bin", "fineweb_val_bytes_000000.bin")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / ".gpu_data/probe"
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 96
    tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 4000
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        streams = []
        for name in NAMES:
            (Path(tmp) / name).write_bytes(lzma.decompress((VAL / f"{name}.xz").read_bytes()))
            streams.append(np.array(tg.read_shard(Path(tmp) / name)))
    val, sidecar = streams
    starts, lengths = tg.find_documents(val, tg.Hyperparameters.bos_id)
    longest = np.sort(np.argsort(-lengths, kind="stable")[:rows])
    if lengths[longest].min() <= tokens:
        raise SystemExit(f"only {int((lengths > tokens).sum())} documents are longer than {tokens} tokens")
    keep = np.concatenate([np.arange(starts[d], starts[d] + tokens) for d in longest])
    for name, stream in zip(NAMES, (val, sidecar)):
        header = np.zeros(tg.SHARD_HEADER_WORDS, dtype="<i4")
        header[:3] = tg.SHARD_MAGIC, tg.SHARD_VERSION, len(keep)
        data = header.tobytes() + stream[keep].astype("<u2").tobytes()
        (out / f"{name}.xz").write_bytes(lzma.compress(data, preset=9))
    print(f"{rows} documents of {tokens} tokens ({len(keep):,}) in {out}")


if __name__ == "__main__":
    main()
