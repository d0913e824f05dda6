"""Tokenize your own documents the CaseOps way (record #2135's data): shards in the challenge's format plus the
val byte sidecar that val_bpb needs.

    python scripts/prepare_caseops.py --docs docs.jsonl --val-docs 50000 --out data/datasets/mine_caseops
    python scripts/prepare_caseops.py --docs val.jsonl train.jsonl --val-docs 5000 --out OUT --tokenizer MODEL

Input: JSON lines, one document per line, either {"text": "..."} (other keys ignored) or a bare JSON string;
blank lines are skipped. The files are read in the order given, and the first --val-docs documents are the val
set (the challenge's docs_selected.jsonl lists its 50,000 val documents first), the rest train.

CaseOps moves the case of ASCII words into four operator characters of Unicode's private use area, so that the
tokenizer sees "the", "The" and "THE" as one lowercase word plus at most an operator:
  TITLE U+E001    the next letter, a word's first, is upper case
  ALLCAPS U+E002  the whole word that follows (two letters or more) is upper case
  CAPNEXT U+E003  the next letter, inside a word, is upper case
  ESC U+E004      the next character is an operator that was in the input itself, kept as it is
A word is a maximal run of ASCII letters A-Z/a-z; every other character (digits, other scripts, accented
letters) passes through unchanged. `decode` inverts `encode` exactly.

Output in --out: fineweb_train_NNNNNN.bin, fineweb_val_NNNNNN.bin and fineweb_val_bytes_NNNNNN.bin (256 int32
header words: magic 20240520, version 1, count; then uint16 values), each split one stream cut every
--shard-tokens tokens; every document starts with BOS. The sidecar has one entry per val token: the UTF-8 bytes
of the original (untransformed) text that the token stands for, 0 for BOS and for the operators, so val_bpb
counts the bytes of the real text. Also manifest.json (the challenge's format: counts, tokenizer sha256).

Train documents that also occur in val (the same text exactly) are refused before anything is written: a model
trained on its val text scores too well (three CaseOps records were excluded for it, challenge issue #2127).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import sentencepiece as spm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from train_gpt import SHARD_HEADER_WORDS, SHARD_MAGIC, SHARD_VERSION  # noqa: E402

TITLE, ALLCAPS, CAPNEXT, ESC = "\ue001", "\ue002", "\ue003", "\ue004"
OPERATORS = TITLE + ALLCAPS + CAPNEXT + ESC
TRANSFORM_NAME = "lossless_caps_caseops_v1"  # the name record #2135's tokenizer and data go by
TOKENIZER_FILE = "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
DEFAULT_TOKENIZER = REPO / "sample_data" / "tokenizers" / TOKENIZER_FILE
CHALLENGE_VAL_DOCS = 50_000  # the challenge's val set: the first 50,000 documents of its docs_selected.jsonl
CHALLENGE_SHARD_TOKENS = 100_000_000  # the challenge's export cuts each split every 1e8 tokens
MAX_UINT16 = 2**16 - 1


class PrepError(Exception):
    """Bad input: the message says what is wrong and how to fix it."""


# -----------------------------------------------------------------------------
# The transform and its inverse

WORD_OR_OPERATOR = re.compile(f"[A-Za-z]+|[{OPERATORS}]")


def _encode_match(match: re.Match) -> str:
    word = match.group()
    if word in OPERATORS:
        return ESC + word
    if word.islower():
        return word
    if len(word) > 1 and word.isupper():
        return ALLCAPS + word.lower()
    # Title case and mixed case: each capital is marked, TITLE for the first letter, CAPNEXT inside the word.
    return "".join((CAPNEXT if i else TITLE) + ch.lower() if ch.isupper() else ch for i, ch in enumerate(word))


def encode(text: str) -> str:
    """The CaseOps form of text: ASCII words lowercased, their capitals carried by operators."""
    return WORD_OR_OPERATOR.sub(_encode_match, text)


# In encoded text an operator is always followed by what it applies to; anything else is malformed.
ENCODED_UNIT = re.compile(f"{ESC}(.)|{ALLCAPS}([a-z]+)|[{TITLE}{CAPNEXT}]([a-z])|([{OPERATORS}])", re.DOTALL)


def _decode_match(match: re.Match) -> str:
    literal, upper_word, upper_letter, stray = match.groups()
    if stray is not None:
        raise ValueError(f"malformed CaseOps text: operator U+{ord(stray):04X} at character {match.start()} "
                         "is not followed by what it applies to")
    return literal if literal is not None else (upper_word or upper_letter).upper()


def decode(text: str) -> str:
    """The original text back from encode's output."""
    return ENCODED_UNIT.sub(_decode_match, text)


def original_bytes(surfaces) -> list[int]:
    """Per token, the UTF-8 bytes of the original text it stands for, from the tokens' surfaces (the spans of
    the encoded text each token covers, in order). An operator stands for no original byte, unless ESC made it a
    literal; an escape can end one token and its operator start the next, so the state runs across tokens."""
    counts, escaped = [], False
    for surface in surfaces:
        n = 0
        for ch in surface:
            if escaped or ch not in OPERATORS:
                n += len(ch.encode("utf-8"))
                escaped = False
            else:
                escaped = ch == ESC
        counts.append(n)
    return counts


# -----------------------------------------------------------------------------
# Tokenizing documents

def load_tokenizer(path: Path) -> spm.SentencePieceProcessor:
    if not path.is_file():
        raise PrepError(f"tokenizer {path} not found: pass --tokenizer (the CaseOps model, {TOKENIZER_FILE})")
    sp = spm.SentencePieceProcessor(model_file=str(path))
    missing = [f"U+{ord(op):04X}" for op in OPERATORS if sp.piece_to_id(op) == sp.unk_id()]
    if missing:
        raise PrepError(f"tokenizer {path} has no piece for the operators {', '.join(missing)}: it is not a "
                        f"CaseOps tokenizer; pass --tokenizer {TOKENIZER_FILE}")
    if sp.vocab_size() > MAX_UINT16 + 1:
        raise PrepError(f"tokenizer {path} has {sp.vocab_size()} pieces; shards hold uint16 ids (at most 65,536)")
    return sp


def tokenize_val(sp, text: str) -> tuple[list[int], list[int]]:
    """BOS + the document's tokens, and each token's original bytes (BOS: 0)."""
    encoded = encode(text)
    mapping = sp.encode_as_offset_mapping(encoded)  # offsets in characters of `encoded`
    surfaces = (encoded[begin:end] for begin, end in mapping["offsets"])
    return [sp.bos_id(), *mapping["ids"]], [0, *original_bytes(surfaces)]


def tokenize_train(sp, texts: list[str]) -> list[list[int]]:
    return [[sp.bos_id(), *ids] for ids in sp.encode([encode(t) for t in texts])]


# -----------------------------------------------------------------------------
# Reading documents, the val/train overlap check

def read_documents(paths: list[Path]):
    """(where, text) per document, in order; where is 'FILE:LINE' for messages."""
    for path in paths:
        if not path.is_file():
            raise PrepError(f"--docs {path}: no such file")
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as err:
                    raise PrepError(f"{where} is not JSON ({err.msg}): write one JSON object per line") from None
                text = doc.get("text") if isinstance(doc, dict) else doc
                if not isinstance(text, str):
                    raise PrepError(f"{where} has no text: write {{\"text\": \"...\"}} or a JSON string per line")
                yield where, text


def content_hash(where: str, text: str) -> bytes:
    try:
        return hashlib.sha256(text.encode("utf-8")).digest()
    except UnicodeEncodeError:
        raise PrepError(f"{where} holds a lone surrogate (\\ud800-\\udfff), not text: fix or drop it") from None


def check_no_overlap(paths: list[Path], val_docs: int) -> tuple[int, int]:
    """Refuse train documents whose text is a val document's, before anything is written. Returns the
    numbers of val and train documents."""
    val_hashes, n_val, n_train, repeats, first = set(), 0, 0, set(), None
    for where, text in read_documents(paths):
        digest = content_hash(where, text)
        if n_val < val_docs:
            val_hashes.add(digest)
            n_val += 1
            continue
        n_train += 1
        if digest in val_hashes:
            first = first or where
            repeats.add(digest)
    if n_val < val_docs:
        raise PrepError(f"--val-docs {val_docs} asked, --docs holds {n_val} documents: lower --val-docs")
    if repeats:
        n_dupes = sum(1 for w, t in read_documents(paths) if content_hash(w, t) in repeats) - len(repeats)
        raise PrepError(f"{n_dupes} of the {n_train} train documents repeat {len(repeats)} of the {n_val} val "
                        f"documents exactly (first at {first}): the model would train on the text it is scored "
                        "on (challenge issue #2127). Remove them from the train part of --docs; nothing was written")
    return n_val, n_train


# -----------------------------------------------------------------------------
# Shards

def write_shard(path: Path, values: np.ndarray) -> None:
    header = np.zeros(SHARD_HEADER_WORDS, dtype="<i4")
    header[:3] = [SHARD_MAGIC, SHARD_VERSION, len(values)]
    path.write_bytes(header.tobytes() + values.astype("<u2").tobytes())


class ShardWriter:
    """One split as one stream of uint16 values, cut every shard_tokens into NAME_NNNNNN.bin files."""

    def __init__(self, out: Path, name: str, shard_tokens: int):
        self.out, self.name, self.shard_tokens = out, name, shard_tokens
        self.pending: list[int] = []
        self.files: list[Path] = []
        self.total = 0

    def add(self, values: list[int]) -> None:
        self.pending.extend(values)
        self.total += len(values)
        while len(self.pending) >= self.shard_tokens:
            self._write(self.pending[:self.shard_tokens])
            del self.pending[:self.shard_tokens]

    def close(self) -> None:
        if self.pending:
            self._write(self.pending)
            self.pending = []

    def _write(self, values: list[int]) -> None:
        path = self.out / f"{self.name}_{len(self.files):06d}.bin"
        write_shard(path, np.asarray(values, dtype=np.int64))
        self.files.append(path)


def batches(iterable, size: int):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


TRAIN_BATCH_DOCS = 256  # sentencepiece encodes a list of documents on all cores


def prepare(paths: list[Path], out: Path, tokenizer: Path, val_docs: int, shard_tokens: int) -> dict:
    """Check, tokenize and write; returns the dataset's stats."""
    sp = load_tokenizer(tokenizer)
    if out.exists() and any(out.glob("fineweb_*.bin")):
        raise PrepError(f"--out {out} already holds fineweb_*.bin shards: choose an empty folder, or delete them "
                        "(old shards would mix with the new)")
    n_val, n_train = check_no_overlap(paths, val_docs)
    out.mkdir(parents=True, exist_ok=True)
    val, val_bytes = ShardWriter(out, "fineweb_val", shard_tokens), ShardWriter(out, "fineweb_val_bytes", shard_tokens)
    train = ShardWriter(out, "fineweb_train", shard_tokens)
    docs = read_documents(paths)
    for _, (_, text) in zip(range(val_docs), docs):
        ids, counts = tokenize_val(sp, text)
        if max(counts) > MAX_UINT16:
            raise PrepError(f"a val token stands for {max(counts)} bytes, more than a uint16 sidecar holds")
        val.add(ids)
        val_bytes.add(counts)
    for batch in batches((text for _, text in docs), TRAIN_BATCH_DOCS):
        for ids in tokenize_train(sp, batch):
            train.add(ids)
    for writer in (val, val_bytes, train):
        writer.close()
    return dict(docs_val=n_val, docs_train=n_train, tokens_val=val.total, tokens_train=train.total,
                files_val=len(val.files), files_train=len(train.files), val_bytes=int(sum_sidecar(val_bytes.files)))


def sum_sidecar(files: list[Path]) -> int:
    return sum(int(np.fromfile(f, dtype="<u2", offset=SHARD_HEADER_WORDS * 4).sum(dtype=np.int64)) for f in files)


def write_manifest(out: Path, tokenizer: Path, stats: dict) -> None:
    """The challenge's manifest format (what train_gpt.py's tokenizer pairing check reads)."""
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    name = f"sp_bpe_{sp.vocab_size()}_{TRANSFORM_NAME}"
    common = dict(vocab_size=sp.vocab_size(), bos_id=sp.bos_id(), eos_id=sp.eos_id())
    manifest = dict(
        version="golfrun-caseops",
        tokenizers=[dict(name=name, kind="sentencepiece_bpe", **common, text_transform=TRANSFORM_NAME,
                         model_path=f"tokenizers/{tokenizer.name}",
                         sha256=hashlib.sha256(tokenizer.read_bytes()).hexdigest())],
        datasets=[dict(name=out.name, tokenizer_name=name, **common, val_bytes_glob="fineweb_val_bytes_*.bin",
                       stats=stats,
                       sha256={p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.bin"))})],
    )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, nargs="+", required=True, help="JSON-lines files, read in order")
    parser.add_argument("--out", type=Path, required=True, help="folder for the shards (DATA_PATH for training)")
    parser.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER, help="the CaseOps SentencePiece model")
    parser.add_argument("--val-docs", type=int, default=CHALLENGE_VAL_DOCS, help="the first N documents are val")
    parser.add_argument("--shard-tokens", type=int, default=CHALLENGE_SHARD_TOKENS, help="tokens per shard file")
    args = parser.parse_args(argv)
    try:
        if args.val_docs < 1 or args.shard_tokens < 1:
            raise PrepError("--val-docs and --shard-tokens must be positive")
        stats = prepare(args.docs, args.out, args.tokenizer, args.val_docs, args.shard_tokens)
        write_manifest(args.out, args.tokenizer, stats)
    except PrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
