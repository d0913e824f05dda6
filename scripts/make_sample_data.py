"""Rebuild sample_data/: the small tokenized sample that ships with golfrun (SMOKE=1 and the tests use it).

    python scripts/make_sample_data.py --docs ../shared/data/proxy --tokenizer PATH/fineweb_8192_bpe.model

Takes the public-domain Project Gutenberg documents (source "gutenberg:...") of the proxy set's
docs_train.jsonl / docs_val.jsonl, in file order, until each split holds its token quota; tokenizes them with the
challenge's SP8192 tokenizer exactly as the challenge does (BOS, then the document's pieces; no EOS); writes one
train and one val shard in the challenge's format, a copy of the tokenizer, and a manifest.json in the
challenge's format (plus the tokenizer's sha256, so train_gpt.py can check the pairing). The output is
deterministic: the same inputs give the same bytes.
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import sentencepiece as spm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from train_gpt import SHARD_HEADER_WORDS, SHARD_MAGIC, SHARD_VERSION, read_shard  # noqa: E402

DATASET_NAME = "sample_sp8192"
TOKENIZER_NAME = "sp_bpe_8192"
TOKENIZER_FILE = "fineweb_8192_bpe.model"
# Enough for the 50 smoke steps of 4,096 tokens without repeating, and a 32,768-token smoke val set.
TOKEN_QUOTA = {"train": 400_000, "val": 60_000}
PUBLIC_DOMAIN_SOURCE = "gutenberg:"


def select_documents(docs_jsonl: Path, sp, quota: int) -> tuple[list[np.ndarray], list[str]]:
    """Whole Gutenberg documents in file order until the token quota is reached; token ids and sources."""
    tokens, sources, total = [], [], 0
    for line in docs_jsonl.read_text(encoding="utf-8").splitlines():
        doc = json.loads(line)
        if not doc["source"].startswith(PUBLIC_DOMAIN_SOURCE):
            continue
        ids = np.array([sp.bos_id(), *sp.encode(doc["text"])], dtype=np.uint16)
        tokens.append(ids)
        sources.append(doc["source"])
        total += len(ids)
        if total >= quota:
            break
    return tokens, sources


def write_shard(path: Path, tokens: np.ndarray) -> None:
    header = np.zeros(SHARD_HEADER_WORDS, dtype="<i4")
    header[:3] = [SHARD_MAGIC, SHARD_VERSION, len(tokens)]
    path.write_bytes(header.tobytes() + tokens.astype("<u2").tobytes())
    read_shard(path)  # the check train_gpt.py does


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, default=REPO.parent / "shared/data/proxy",
                        help="folder with docs_train.jsonl and docs_val.jsonl")
    parser.add_argument("--tokenizer", type=Path,
                        default=REPO.parent / "shared/data/tokenizers" / TOKENIZER_FILE)
    parser.add_argument("--out", type=Path, default=REPO / "sample_data")
    args = parser.parse_args(argv)
    sp = spm.SentencePieceProcessor(model_file=str(args.tokenizer))
    dataset_dir = args.out / "datasets" / DATASET_NAME
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (args.out / "tokenizers").mkdir(exist_ok=True)
    shutil.copyfile(args.tokenizer, args.out / "tokenizers" / TOKENIZER_FILE)
    stats, works = {}, set()
    for split, quota in TOKEN_QUOTA.items():
        docs, sources = select_documents(args.docs / f"docs_{split}.jsonl", sp, quota)
        tokens = np.concatenate(docs)
        write_shard(dataset_dir / f"fineweb_{split}_000000.bin", tokens)
        stats.update({f"docs_{split}": len(docs), f"tokens_{split}": int(len(tokens)), f"files_{split}": 1})
        works.update(s.split(":", 1)[1] for s in sources)
    manifest = dict(
        version="golfrun-sample", source="public-domain Project Gutenberg texts (see sample_data/README.md)",
        works=sorted(works),
        tokenizers=[dict(name=TOKENIZER_NAME, kind="sentencepiece_bpe", vocab_size=sp.vocab_size(),
                         bos_id=sp.bos_id(), eos_id=sp.eos_id(), model_path=f"tokenizers/{TOKENIZER_FILE}",
                         sha256=sha256(args.tokenizer))],
        datasets=[dict(name=DATASET_NAME, tokenizer_name=TOKENIZER_NAME, vocab_size=sp.vocab_size(),
                       bos_id=sp.bos_id(), eos_id=sp.eos_id(), stats=stats)],
    )
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
