"""scripts/prepare_caseops.py against record #2135's lossless_caps.py + prepare_caseops_data.py
(../shared/reference/record_2135): the same transformed text, the same shards and sidecar, the inverse exact;
and its refusals (val text in train, bad input)."""

import json
import lzma
import os
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import prepare_caseops as pc  # noqa: E402
import record_oracle as ro  # noqa: E402
from train_gpt import read_shard  # noqa: E402

SHARED = REPO.parent / "shared"
RECORD = SHARED / "reference" / "record_2135"
PROXY2_DOCS = SHARED / "data" / "proxy2" / "datasets" / "proxy2_sp8192" / "docs_val.jsonl.xz"
PROXY2_CASEOPS = SHARED / "data" / "proxy2_caseops" / "datasets" / "proxy2_caseops"
TOKENIZER = REPO / "sample_data" / "tokenizers" / pc.TOKENIZER_FILE
SAMPLE = REPO / "sample_data" / "datasets" / "sample_caseops"
N_PROXY2_DOCS = 300
RECORD_SENTENCEPIECE = "sentencepiece==0.2.1"  # its prep calls encode_as_immutable_proto, gone in 0.2.3
# Longer than any of the documents used, so the record's prep (one cut per document) cuts where ours does.
ORACLE_SHARD_TOKENS = 70_000

HARD_STRINGS = [
    "", "a", "A", "I", "THE NASA LAUNCH", "Title Case Words Here", "camelCase iPhone eBay McDonald's HTMLParser",
    "mIxEd CaSe ABCdef aBC XMLHttpRequest O'NEIL", "ALL CAPS, then lower. Then Title.",
    "\ue001\ue002\ue003\ue004", "\ue004\ue004 x\ue001Y \ue002AB\ue003c", "A\ue004", "\ue000X (the v1 sentinel is text)",
    "Ελληνικά ΑΒΓ Привет МИР İstanbul ıi STRASSE Straße ẞ", "e\u0301 A\u0301B Cafe\u0301 N\u0303andu",
    "123ABC456def 7Up x86_64 R2D2 3D", "  leading and trailing  ", "\n\n\t  \n", "ＡＢＣ ﬁne ½ ™ 😀 日本語 한국어",
    "tab\tseparated\tTEXT\r\nCRLF Line",
]


def need(*paths):
    """The oracle must run in CI; locally it skips when ../shared is not beside the repository."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing {missing}: the CaseOps prep oracle must run in CI")
        pytest.skip(f"no {missing[0]} here")


@pytest.fixture(scope="module")
def record():
    """The record's transform, loaded from its file: its folder on sys.path would hide our train_gpt from every
    process spawned after (a spawn child finds train_gpt by the parent's sys.path)."""
    need(RECORD / "lossless_caps.py")
    return ro.load_module(RECORD / "lossless_caps.py", "record_lossless_caps")


@pytest.fixture(scope="module")
def proxy2_texts():
    need(PROXY2_DOCS)
    with lzma.open(PROXY2_DOCS, "rt", encoding="utf-8") as lines:
        return [json.loads(line)["text"] for _, line in zip(range(N_PROXY2_DOCS), lines)]


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=str(TOKENIZER))


@pytest.fixture(scope="session")
def record_sentencepiece(request):
    """A folder holding sentencepiece 0.2.1 for the record's prep (installed once into pytest's cache)."""
    target = request.config.cache.mkdir("sentencepiece-0.2.1")
    if not (target / "sentencepiece").is_dir():
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               "--target", str(target), RECORD_SENTENCEPIECE], capture_output=True, text=True)
        if proc.returncode != 0:
            if os.environ.get("CI") == "true":
                pytest.fail(f"pip install {RECORD_SENTENCEPIECE} failed:\n{proc.stderr[-2000:]}")
            pytest.skip(f"cannot install {RECORD_SENTENCEPIECE} (offline?)")
    return target


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def shard_files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("fineweb_*.bin"))}


# -----------------------------------------------------------------------------
# The transform, its inverse and the byte rule, in process

def test_transform_matches_the_record_and_inverts(record, proxy2_texts):
    for text in HARD_STRINGS + proxy2_texts:
        ours = pc.encode(text)
        assert ours == record.encode_lossless_caps_v2(text), text
        assert pc.decode(ours) == text, text
        assert record.decode_lossless_caps_v2(ours) == text, text


def test_decode_refuses_malformed_text():
    for bad in ("\ue001", "\ue0011", "x\ue002", "\ue003A", "\ue004"):
        with pytest.raises(ValueError, match="malformed CaseOps text"):
            pc.decode(bad)


def test_byte_rule_matches_the_record(record, proxy2_texts, sp):
    """The same token surfaces give the same original bytes per token; the operators in HARD_STRINGS put an
    escape and its operator in different tokens."""
    for text in HARD_STRINGS + proxy2_texts:
        encoded = pc.encode(text)
        surfaces = [encoded[b:e] for b, e in sp.encode_as_offset_mapping(encoded)["offsets"]]
        expected = record.surface_piece_original_byte_counts(surfaces, text_transform_name=record.LOSSLESS_CAPS_CASEOPS_V1)
        assert pc.original_bytes(surfaces) == expected, text


# -----------------------------------------------------------------------------
# Whole shards: ours against the record's prep (run with sentencepiece 0.2.1) and the shipped proxy2_caseops

def run_record_prep(docs, out, val_docs, sentencepiece_dir):
    """The record's prepare_caseops_data.py, unmodified, in a subprocess; only its shard size is set."""
    script = (f"import sys; sys.path.insert(0, {str(RECORD)!r}); import prepare_caseops_data as p; "
              f"p.SHARD_TOKENS = {ORACLE_SHARD_TOKENS}; sys.argv = ['prep'] + sys.argv[1:]; p.main()")
    env = dict(os.environ, PYTHONPATH=str(sentencepiece_dir))
    proc = subprocess.run([sys.executable, "-c", script, "--docs", str(docs), "--out", str(out), "--sp",
                           str(TOKENIZER), "--val-docs", str(val_docs)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "datasets" / "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"


def test_shards_and_sidecar_equal_the_record_prep(tmp_path, record, proxy2_texts, record_sentencepiece):
    need(RECORD / "prepare_caseops_data.py")
    val_texts = HARD_STRINGS + proxy2_texts[:200]
    docs = write_jsonl(tmp_path / "docs.jsonl", val_texts + proxy2_texts[200:])
    theirs = run_record_prep(docs, tmp_path / "record", len(val_texts), record_sentencepiece)
    ours = tmp_path / "ours"
    assert pc.main(["--docs", str(docs), "--out", str(ours), "--tokenizer", str(TOKENIZER),
                    "--val-docs", str(len(val_texts)), "--shard-tokens", str(ORACLE_SHARD_TOKENS)]) == 0
    expected = shard_files(theirs)
    assert len([n for n in expected if n.startswith("fineweb_val_0")]) >= 2  # the cut is exercised
    assert shard_files(ours) == expected


def test_first_documents_equal_the_shipped_proxy2_caseops(tmp_path, proxy2_texts, sp):
    """proxy2_caseops was built by the record's prep from the same documents: our tokens and sidecar for the
    first documents are the first entries of its val shard and sidecar."""
    need(PROXY2_CASEOPS / "fineweb_val_000000.bin.xz")
    shipped = {}
    for name in ("fineweb_val_000000.bin", "fineweb_val_bytes_000000.bin"):
        (tmp_path / name).write_bytes(lzma.decompress((PROXY2_CASEOPS / f"{name}.xz").read_bytes()))
        shipped[name] = np.asarray(read_shard(tmp_path / name))
    ids, counts = [], []
    for text in proxy2_texts:
        doc_ids, doc_counts = pc.tokenize_val(sp, text)
        ids += doc_ids
        counts += doc_counts
    assert np.array_equal(shipped["fineweb_val_000000.bin"][:len(ids)], ids)
    assert np.array_equal(shipped["fineweb_val_bytes_000000.bin"][:len(counts)], counts)
    assert sum(counts) == sum(len(t.encode("utf-8")) for t in proxy2_texts)  # proxy2 has no edge whitespace


# -----------------------------------------------------------------------------
# Refusals: one `error:` line, nothing written

def run_cli(capsys, *args):
    code = pc.main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return code, err


def test_refuses_train_documents_that_are_val_documents(tmp_path, capsys):
    val = ["first val doc", "second val doc", "third"]
    docs = write_jsonl(tmp_path / "docs.jsonl", val + ["a train doc", "second val doc", "third", "third"])
    code, err = run_cli(capsys, "--docs", docs, "--out", tmp_path / "out", "--tokenizer", TOKENIZER, "--val-docs", 3)
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("error: 3 of the 4 train documents repeat 2 of the 3 val documents exactly")
    assert f"first at {docs}:5" in err and "#2127" in err and "nothing was written" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("lines, args, message", [
    (['{"text": "ok"}', "not json"], [], ":2 is not JSON"),
    (['{"body": "no text key"}'], [], ":1 has no text"),
    (['"a bare string is a document"'], ["--val-docs", "2"], "--val-docs 2 asked, --docs holds 1 documents"),
    (['{"text": "lone \\ud800 surrogate"}'], [], ":1 holds a lone surrogate"),
    (['{"text": "ok"}'], ["--tokenizer", REPO / "sample_data" / "tokenizers" / "fineweb_8192_bpe.model"],
     "is not a CaseOps tokenizer"),
    (['{"text": "ok"}'], ["--tokenizer", "/nonexistent.model"], "tokenizer /nonexistent.model not found"),
    (['{"text": "ok"}'], ["--val-docs", "0"], "must be positive"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, lines, args, message):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, err = run_cli(capsys, "--docs", docs, "--out", tmp_path / "out", "--val-docs", 1, *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 0 and message in err, err


def test_refuses_an_output_folder_with_shards(tmp_path, capsys):
    docs = write_jsonl(tmp_path / "docs.jsonl", ["val", "train"])
    out = tmp_path / "out"
    assert run_cli(capsys, "--docs", docs, "--out", out, "--tokenizer", TOKENIZER, "--val-docs", 1)[0] == 0
    code, err = run_cli(capsys, "--docs", docs, "--out", out, "--tokenizer", TOKENIZER, "--val-docs", 1)
    assert code == 2 and "already holds fineweb_*.bin shards" in err


def test_help_runs():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "prepare_caseops.py"), "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--val-docs" in proc.stdout and "U+E001" in proc.stdout


# -----------------------------------------------------------------------------
# The shipped CaseOps sample (sample_data/datasets/sample_caseops)

def test_shipped_sample_is_well_formed():
    """A bare clone's CaseOps sample: BOS first, sidecar as long as the val shard, a manifest that names the
    shipped tokenizer by hash."""
    val, sidecar = read_shard(SAMPLE / "fineweb_val_000000.bin"), read_shard(SAMPLE / "fineweb_val_bytes_000000.bin")
    train = read_shard(SAMPLE / "fineweb_train_000000.bin")
    assert val[0] == train[0] == 1 and len(sidecar) == len(val)
    assert (sidecar[val == 1] == 0).all() and sidecar.sum() > len(val)
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    import hashlib
    assert manifest["tokenizers"][0]["sha256"] == hashlib.sha256(TOKENIZER.read_bytes()).hexdigest()
    assert manifest["datasets"][0]["stats"]["tokens_val"] == len(val)


def test_shipped_sample_rebuilds_byte_for_byte(tmp_path):
    """The sample is what the README's rebuild command makes from the shared proxy's Gutenberg documents."""
    proxy = SHARED / "data" / "proxy"
    need(proxy / "docs_val.jsonl")
    stats = json.loads((SAMPLE / "manifest.json").read_text())["datasets"][0]["stats"]
    picked = []
    for split, count in (("val", stats["docs_val"]), ("train", stats["docs_train"])):
        lines = [line for line in (proxy / f"docs_{split}.jsonl").read_text().splitlines()
                 if json.loads(line)["source"].startswith("gutenberg:")]
        picked += lines[:count]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(picked) + "\n")
    out = tmp_path / "sample_caseops"
    assert pc.main(["--docs", str(docs), "--out", str(out), "--tokenizer", str(TOKENIZER),
                    "--val-docs", str(stats["docs_val"])]) == 0
    assert shard_files(out) == shard_files(SAMPLE)
