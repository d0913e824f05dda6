"""Shards, the document-packing loader, and the bits-per-byte accounting."""

import dataclasses
import math
import types

import numpy as np
import pytest
import torch

import train_gpt as tg
from conftest import PROXY_DATA, TOKENIZER


def write_shard(path, tokens, magic=tg.SHARD_MAGIC, version=1, count=None):
    header = np.zeros(256, dtype="<i4")
    header[:3] = [magic, version, len(tokens) if count is None else count]
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


def test_shard_roundtrip(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", [1, 5, 6, 7])
    assert tg.read_shard(tmp_path / "fineweb_train_000000.bin").tolist() == [1, 5, 6, 7]


@pytest.mark.parametrize("case, message", [("magic", "magic"), ("version", "magic"), ("truncated", "truncated"),
                                           ("tiny", "shorter than its 1024-byte header")])
def test_corrupt_shards_are_named(tmp_path, case, message):
    path = tmp_path / "fineweb_train_000000.bin"
    if case == "magic":
        write_shard(path, [1, 2], magic=123)
    elif case == "version":
        write_shard(path, [1, 2], version=7)
    elif case == "truncated":
        write_shard(path, [1, 2, 3], count=10)
    else:
        path.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=message) as err:
        tg.read_shard(path)
    assert str(path) in str(err.value) and "download" in str(err.value)


def test_empty_glob_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="DATA_PATH.*download_data.py"):
        tg.find_shards(str(tmp_path), "train")


def test_stream_reads_across_shards_and_wraps(tmp_path):
    write_shard(tmp_path / "a.bin", [1, 2, 3])
    write_shard(tmp_path / "b.bin", [4, 5])
    stream = tg.TokenStream([tmp_path / "a.bin", tmp_path / "b.bin"])
    assert stream.read(1, 6).tolist() == [2, 3, 4, 5, 1, 2]


def test_pack_window_cuts_at_bos_and_max_len():
    bos = 1
    window = np.array([1, 10, 11, 12, 13, 14, 1, 20, 21, 1, 30, 31])
    batch = tg.pack_window(window, bos, max_len=4)
    assert batch.inputs.tolist() == window[:-1].tolist() and batch.targets.tolist() == window[1:].tolist()
    # pieces: [0..4) [4..6) (doc 1 cut at 4), [6..9) doc 2, [9..11) doc 3
    assert batch.cu_seqlens.tolist() == [0, 4, 6, 9, 11]
    assert batch.positions.tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 2, 0, 1]
    assert int(torch.diff(batch.cu_seqlens).max()) <= batch.max_seqlen


def test_loader_is_deterministic_and_world_size_invariant():
    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(PROXY_DATA)})
    single = tg.TrainLoader(h, tg.DistContext(), grad_accum_steps=8)
    windows_1 = [single.batch(3, m).inputs for m in range(8)]
    windows_2 = [tg.TrainLoader(h, tg.DistContext(rank=r, world_size=2), 4).batch(3, m).inputs
                 for r in range(2) for m in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(windows_1, windows_2))
    assert not torch.equal(windows_1[0], windows_1[1])  # distinct windows: disjoint streams per rank
    again = tg.TrainLoader(h, tg.DistContext(), grad_accum_steps=8).batch(3, 0).inputs
    assert torch.equal(again, windows_1[0])


def test_no_attention_across_documents():
    """A token's output is unchanged when another document of the same window changes."""
    h = tg.load_hyperparameters({"SMOKE": "1"})
    torch.manual_seed(0)
    model = tg.GPT(h).eval()
    with torch.no_grad():  # non-zero output projections so every path carries signal
        for block in model.blocks:
            block.attn.proj.weight.normal_(std=0.05)
            block.mlp.down.weight.normal_(std=0.05)
    rng = np.random.default_rng(0)
    window = rng.integers(2, h.vocab_size, 301)
    window[[0, 100, 180]] = h.bos_id  # documents [0,100) [100,180) [180,300)
    changed = window.copy()
    changed[120:170] = rng.integers(2, h.vocab_size, 50)  # only the middle document
    outs = []
    for w in (window, changed):
        b = tg.pack_window(w, h.bos_id, h.train_seq_len)
        layout = dict(cu_seqlens=b.cu_seqlens, max_seqlen=b.max_seqlen, positions=b.positions)
        with torch.no_grad():
            outs.append(model.hidden(b.inputs, b.positions, layout))
    assert torch.equal(outs[0][:100], outs[1][:100]) and torch.equal(outs[0][180:], outs[1][180:])
    assert not torch.allclose(outs[0][120:180], outs[1][120:180])


def test_padded_varlen_attention_matches_dense_per_document():
    torch.manual_seed(0)
    q, k, v = torch.randn(12, 4, 8), torch.randn(12, 2, 8), torch.randn(12, 2, 8)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    positions = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6])
    out = tg.padded_sdpa_varlen(q, k, v, dict(cu_seqlens=cu, max_seqlen=8, positions=positions))
    for s, e in ((0, 5), (5, 12)):
        ref = tg.dense_causal_attention(q[None, s:e], k[None, s:e], v[None, s:e])[0]
        assert torch.allclose(out[s:e], ref, atol=1e-6)


def test_bpb_bytes_match_brute_force_decode():
    """Sum of per-target bytes over each val document == UTF-8 bytes of the decoded document."""
    sp = tg.load_tokenizer(str(TOKENIZER), 8192)
    tables = tg.build_byte_tables(sp)
    tokens = torch.from_numpy(tg.TokenStream(tg.find_shards(str(PROXY_DATA), "val")).read(0, 62_569))
    counted = tables.target_bytes(tokens[:-1], tokens[1:], torch.arange(len(tokens) - 1))
    assert int(counted.sum()) == 188_129  # the figure sample_data/README.md gives for this shard
    starts = torch.nonzero(tokens == 1).squeeze(1).tolist() + [len(tokens)]
    for s, e in list(zip(starts[:-1], starts[1:]))[:20]:
        text = sp.decode(tokens[s:e].tolist())
        assert int(counted[s:e - 1].sum()) == len(text.encode("utf-8"))


def test_byte_fallback_and_control_pieces():
    sp = tg.load_tokenizer(str(TOKENIZER), 8192)
    tables = tg.build_byte_tables(sp)
    byte_id = sp.piece_to_id("<0xE2>")
    assert tables.base_bytes[byte_id] == 1 and not tables.has_space[byte_id]
    assert tables.is_boundary[1] and tables.base_bytes[1] == 0


def test_tokenizer_vocab_mismatch_is_an_error():
    with pytest.raises(ValueError, match="VOCAB_SIZE"):
        tg.load_tokenizer(str(TOKENIZER), 4096)


def test_val_windows_score_every_target_once_with_the_same_context_at_any_world_size():
    h = tg.load_hyperparameters({"SMOKE": "1", "VAL_BATCH_TOKENS": "1024", "TRAIN_SEQ_LEN": "256",
                                 "EVAL_SEQ_LEN": "320"})  # validation cuts at EVAL_SEQ_LEN, not TRAIN_SEQ_LEN
    tokens = np.arange(5000) % 300 + 2
    tokens[[0, 700, 1234, 3000]] = h.bos_id  # documents of several lengths, some longer than EVAL_SEQ_LEN
    seen = []
    for world in (1, 2, 3):
        scored = {}
        for r in range(world):
            for batch, index in tg.val_windows(tokens, h, tg.DistContext(rank=r, world_size=world)):
                assert torch.equal(batch.targets, torch.from_numpy(tokens[index.numpy() + 1]))
                for i, pos in zip(index.tolist(), batch.positions.tolist()):
                    assert i not in scored
                    scored[i] = pos  # the target's position inside its piece: its context length
        seen.append(scored)
    assert sorted(seen[0]) == list(range(len(tokens) - 1))
    assert seen[0] == seen[1] == seen[2]
    assert max(seen[0].values()) == h.eval_seq_len - 1

# ---- CaseOps: val bytes from the byte sidecar, by stream position ----

CASEOPS_STREAM = [1, 10, 11, 12, 1, 13, 14, 15]  # two documents
CASEOPS_SIDECAR = [0, 3, 0, 4, 0, 1, 5, 2]  # each token's original bytes (BOS and a case operator: 0)


def caseops_data(tmp_path, sidecar=CASEOPS_SIDECAR, stream=CASEOPS_STREAM):
    write_shard(tmp_path / "fineweb_val_000000.bin", stream)
    if sidecar is not None:
        write_shard(tmp_path / "fineweb_val_bytes_000000.bin", sidecar)
    return tg.load_hyperparameters({"SMOKE": "1", "CASEOPS_ENABLED": "1", "DATA_PATH": str(tmp_path),
                                    "TOKENIZER_PATH": str(TOKENIZER), "EVAL_SEQ_LEN": "3"})


def test_val_glob_leaves_the_byte_sidecar_out(tmp_path):
    caseops_data(tmp_path)
    assert [p.name for p in tg.find_shards(str(tmp_path), "val")] == ["fineweb_val_000000.bin"]


class OneNatPerTarget:
    """A stand-in model: every target costs 1 nat, so val_bpb = targets / ln 2 / bytes counted."""

    def eval(self): pass

    def train(self): pass

    def hidden(self, inputs, positions, layout):
        return inputs

    def token_losses(self, hidden, targets):
        return torch.ones(targets.shape)


def test_caseops_bytes_of_a_target_are_the_sidecar_entry_at_its_position(tmp_path):
    """evaluate and the TTT scorer count sidecar[i] for the target at stream position i (their index is the
    input's, i - 1): 3 + 0 + 4 + 0 + 1 + 5 + 2 = 15 bytes here; sidecar[i - 1] would give 13, the tokenizer's
    pieces another count."""
    h = caseops_data(tmp_path)
    tables = tg.build_byte_tables(tg.load_tokenizer(str(TOKENIZER), 8192))
    tokens, tables = tg.load_val_data(h, tables)
    assert tokens.tolist() == CASEOPS_STREAM and tables.sidecar.tolist() == CASEOPS_SIDECAR
    loss, bpb, _ = tg.evaluate(OneNatPerTarget(), tokens, tables, h, tg.DistContext())
    assert loss == 1.0 and bpb == pytest.approx(7 / math.log(2) / 15, rel=1e-12)
    # the TTT scorer: a chunk of two rows, inputs at stream positions 0..2 and 4..5 (+ one unscored slot)
    state = types.SimpleNamespace(tables=tables, scores=torch.zeros(len(tokens)),
                                  sums=torch.zeros(3, dtype=torch.float64))
    target_index = torch.tensor([[0, 1, 2], [4, 5, 6]])
    ids = torch.from_numpy(tokens)[target_index]
    chunk_tgt = torch.from_numpy(tokens)[target_index + 1]
    chunk_tgt[1, 2] = -1  # not scored: counts no bytes
    tg.record_scores(state, ids, torch.tensor([[0, 1, 2], [0, 1, 2]]), chunk_tgt, target_index,
                     torch.ones(2, 3) * (chunk_tgt >= 0))
    assert state.sums.tolist() == [5.0, 3 + 0 + 4 + 1 + 5, 5.0]


@pytest.mark.parametrize("case, message", [
    ("missing", "CaseOps val shard .*fineweb_val_000000.bin has no byte sidecar fineweb_val_bytes_000000.bin"),
    ("short", "byte sidecar .*fineweb_val_bytes_000000.bin has 7 entries but fineweb_val_000000.bin has 8 tokens"),
    ("not caseops", "fineweb_val_bytes_000000.bin is a CaseOps byte sidecar.*Set CASEOPS_ENABLED=1")])
def test_caseops_val_shard_needs_its_sidecar_of_its_length(tmp_path, case, message):
    h = caseops_data(tmp_path, sidecar={"missing": None, "short": CASEOPS_SIDECAR[:-1]}.get(case, CASEOPS_SIDECAR))
    if case == "not caseops":
        h = dataclasses.replace(h, caseops_enabled=False)
    with pytest.raises(ValueError, match=message) as err:
        tg.load_val_data(h, None)
    assert case == "not caseops" or "download_data.py --variant caseops" in str(err.value)


def test_every_stream_starts_with_bos(tmp_path):
    """Documents are delimited by BOS, so only a stream's first can lack one. A train shard after the first
    may start inside a document (the stream is cut by size): accepted."""
    write_shard(tmp_path / "fineweb_val_000000.bin", [1, 5, 6, 1, 7])
    write_shard(tmp_path / "fineweb_train_000000.bin", [1, 5, 6, 7])
    write_shard(tmp_path / "fineweb_train_000001.bin", [8, 9, 1, 5])
    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(tmp_path)})
    tg.check_shards(h, ("val", "train"))
    write_shard(tmp_path / "fineweb_val_000000.bin", [5, 6, 1, 7])
    with pytest.raises(ValueError, match=r"fineweb_val_000000.bin starts with token 5, not BOS_ID=1"):
        tg.check_shards(h, ("val", "train"))
