"""make_probe.py [OUT] [ROWS] [TOKENS]: the TTT peak-memory probe's val: the ROWS (96) longest documents of
proxy2_caseops' val, each cut to its first TOKENS (4,000) tokens, with their CaseOps byte sidecar, as two
xz'd shards in OUT (.gpu_data/probe). Every row of its one TTT batch reaches the full TTT_EVAL_SEQ_LEN window,
where a batch's memory peaks, in ~110 chunk steps instead of the whole val's ~2,900."""
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
import train_gpt as tg  # noqa: E402

VAL = REPO.parent / "shared/data/proxy2_caseops/datasets/proxy2_caseops"
NAMES = ("fineweb_val_000000.bin", "fineweb_val_bytes_000000.bin")


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / ".gpu_data/probe")
    rows, tokens = (int(a) for a in (sys.argv[2:4] + ["96", "4000"][len(sys.argv[2:4]):]))
    out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        subprocess.run(["xz", "-dkf", "-c", str(VAL / f"{name}.xz")], stdout=open(out / name, "wb"), check=True)
    val, sidecar = (np.asarray(tg.read_shard(out / name)) for name in NAMES)
    starts, lengths = tg.find_documents(val, tg.Hyperparameters.bos_id)
    longest = np.sort(np.argsort(-lengths, kind="stable")[:rows])
    if lengths[longest].min() <= tokens:
        raise SystemExit(f"only {int((lengths > tokens).sum())} documents are longer than {tokens} tokens")
    keep = np.concatenate([np.arange(starts[d], starts[d] + tokens) for d in longest])
    for name, stream in zip(NAMES, (val, sidecar)):
        header = np.zeros(tg.SHARD_HEADER_WORDS, dtype="<i4")
        header[:3] = tg.SHARD_MAGIC, tg.SHARD_VERSION, len(keep)
        (out / name).write_bytes(header.tobytes() + stream[keep].astype("<u2").tobytes())
        subprocess.run(["xz", "-9f", str(out / name)], check=True)
    print(f"{rows} documents of {tokens} tokens ({len(keep):,}) in {out}")


if __name__ == "__main__":
    main()
