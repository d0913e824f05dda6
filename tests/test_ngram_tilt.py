"""The token-only n-gram tilt (train_gpt.py, TTT section): its hints and tilted scores equal record #2135's (its
C state, compiled by its own code, on proxy2_caseops val tokens), no score depends on a later token, and the
tilted distribution sums to 1."""

import lzma
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
import train_gpt as tg

sys.path.insert(0, str(REPO / "scripts"))
import bench_ngram_tilt as BENCH  # noqa: E402
import record_oracle as ro  # noqa: E402

RECORD = REPO.parent / "shared" / "reference" / "record_2135"
VAL_XZ = REPO.parent / "shared" / "data" / "proxy2_caseops" / "datasets" / "proxy2_caseops" / "fineweb_val_000000.bin.xz"
CASEOPS_TOKENIZER = RECORD / "tokenizers" / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
VOCAB = 8192
SHARD_HEADER_BYTES = 256 * 4
PREFIX_TOKENS = 100_000  # ~300 hints fire at order 16; the lower orders below fire on most positions
# The record's n-gram settings as its seed logs' Hyperparameters block has them: the token channel's three, and
# the other channels' gates set so that they never fire (tau 99 > any confidence), hence no agreement bonus.
TOKEN_ORDER, TOKEN_THRESHOLD, TOKEN_BOOST = 16, 0.8, 2.625
RECORD_OFF_CHANNELS = dict(within_tau=99.0, within_boost=0.0, word_order=4, word_normalize="strip_punct_lower",
                           word_tau=99.0, word_boost=0.0, agree_add_boost=0.0)
# Tilted scores: the same closed form in fp32 as the record's scoring path, each of its few operations rounded
# to half an ulp (6e-8 relative); 1e-6 admits another, equally exact order of operations and is far below the
# tilt itself (up to b = 2.625 nats a position).
SCORE_TOLERANCE = 1e-6


def _require(present: bool, what: str):
    """Skip where ../shared is not beside the repo; in CI, fail instead: these tests must run there."""
    if not present:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is missing: the n-gram tilt tests must run in CI")
        pytest.skip(f"no {what} here")


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """The record's online_ngram_tilt module, from a copy (it builds its C library next to itself)."""
    _require((RECORD / "online_ngram_tilt.py").exists() and shutil.which("gcc") is not None,
             "../shared/reference/record_2135 (or gcc)")
    return ro.load_ngram_tilt(RECORD, tmp_path_factory.mktemp("record_2135"), "record_online_ngram_tilt")


@pytest.fixture(scope="module")
def targets() -> np.ndarray:
    """The scored targets of the val stream's first PREFIX_TOKENS + 1 tokens, as the record makes them."""
    _require(VAL_XZ.exists(), "../shared/data/proxy2_caseops val shard")
    with lzma.open(VAL_XZ) as f:
        raw = f.read(SHARD_HEADER_BYTES + 2 * (PREFIX_TOKENS + 1))
    return np.frombuffer(raw, dtype="<u2", offset=SHARD_HEADER_BYTES)[1:].copy()


def _record_token_channel(record, targets: np.ndarray, order: int):
    """Hinted token and confidence per target from the record's C state (scripts/bench_ngram_tilt.record_c)."""
    return BENCH.record_c(record, CASEOPS_TOKENIZER, targets, order)


@pytest.mark.parametrize("order", [1, 2, 4, TOKEN_ORDER])
def test_hints_equal_record(record, targets, order):
    """Hinted token and confidence at every position, exactly: counts are integers and the confidence is one
    IEEE float32 division of two of them in both. Order 1 is the empty context; 2 and 4 fire on most positions
    (ties and changing top tokens); 16 is the record's."""
    ref_token, ref_conf = _record_token_channel(record, targets, order)
    hint, conf = tg.token_hints(torch.from_numpy(targets), order)
    assert (ref_conf > 0).sum() > 200  # not vacuous: 275 positions have a hint at order 16, most at 1, 2, 4
    np.testing.assert_array_equal(hint.numpy(), ref_token)
    np.testing.assert_array_equal(conf.numpy(), ref_conf)


def _fixed_log_probs(hint: torch.Tensor, rows: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A stand-in model's log-probs at the given positions: random logits, the hinted token raised at some, so
    that p(hint) spans small to near 1 and the hinted token is sometimes the target, sometimes not."""
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(rows.numel(), VOCAB, generator=gen)
    lift = 12.0 * torch.rand(rows.numel(), generator=gen)
    logits[torch.arange(rows.numel()), hint[rows]] += lift
    return torch.log_softmax(logits, dim=-1)


@pytest.mark.parametrize("order", [4, TOKEN_ORDER])
def test_tilted_scores_equal_record(record, targets, order):
    """Record's build_hints_for_targets at its logged settings (token channel only firing) and its scoring tilt
    against ours: same hints and boosts exactly, same tilted nats within SCORE_TOLERANCE. Order 4 has
    confidences of exactly the threshold (4/5, 8/10: 177 of them), so the gate's >= is tested."""
    ref = record.build_hints_for_targets(
        target_token_ids_np=targets, tokenizer_path=str(CASEOPS_TOKENIZER), vocab_size=VOCAB,
        log0=lambda *_: None, token_order=order, token_threshold=TOKEN_THRESHOLD,
        token_boost=TOKEN_BOOST, **RECORD_OFF_CHANNELS)
    hint, boost = tg.tilt_plan(torch.from_numpy(targets), order, TOKEN_THRESHOLD, TOKEN_BOOST)
    np.testing.assert_array_equal(hint.numpy(), ref["hint_ids"])
    np.testing.assert_array_equal(boost.numpy(), ref["boost"])
    np.testing.assert_array_equal(boost.numpy() > 0, ref["gate_mask"])
    fired = torch.from_numpy(ref["gate_mask"]).nonzero().squeeze(1)[:2000]  # bounds the logits' memory
    assert fired.numel() > 100
    rows = torch.cat([fired, torch.arange(0, targets.size, 97)])  # fired positions and a spread of others
    log_probs = _fixed_log_probs(hint, rows)
    y = torch.from_numpy(targets.astype(np.int64))[rows]
    nll = -log_probs.gather(1, y[:, None]).squeeze(1)
    log_p_hint = log_probs.gather(1, hint[rows, None]).squeeze(1)
    ours = tg.tilted_nll(nll, log_p_hint, y, hint[rows], boost[rows])
    theirs = record.apply_tilt_to_ptl_torch_fast(
        ptl=nll, log_q_hint=log_p_hint, target_ids=y, hint_ids=torch.from_numpy(ref["hint_ids"])[rows],
        gate_mask=torch.from_numpy(ref["gate_mask"])[rows], boost=torch.from_numpy(ref["boost"])[rows])
    hit = y == hint[rows]
    assert 0 < hit[: fired.numel()].sum() < fired.numel()  # both hits and misses among the fired positions
    torch.testing.assert_close(ours, theirs, rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE)
    unfired = boost[rows] == 0
    assert unfired.sum() > 100 and torch.equal(ours[unfired], nll[unfired])  # no hint: the model's nats, exactly


def test_future_tokens_never_change_earlier_hints_or_scores(targets):
    """Replace every target from t on by the stream's beginning again (so later hints fire): hints and boosts at positions <= t (the hint at t uses
    targets < t only) and the tilted scores at positions < t (a fixed model) stay the same bit for bit."""
    stream = torch.from_numpy(targets[:20_000].astype(np.int64))
    hint, boost = tg.tilt_plan(stream, TOKEN_ORDER, TOKEN_THRESHOLD, TOKEN_BOOST)
    fired = boost.nonzero().squeeze(1)
    rows = torch.arange(stream.numel())
    log_probs = _fixed_log_probs(hint, rows)  # depends on positions, not on tokens: causal by construction
    for t in [int(fired[0]), int(fired[len(fired) // 2]), int(fired[-1]), 5_000]:
        changed = stream.clone()
        changed[t:] = stream[: stream.numel() - t]
        hint2, boost2 = tg.tilt_plan(changed, TOKEN_ORDER, TOKEN_THRESHOLD, TOKEN_BOOST)
        assert torch.equal(hint2[: t + 1], hint[: t + 1]) and torch.equal(boost2[: t + 1], boost[: t + 1])
        assert not torch.equal(boost2, boost)  # the change does reach later hints
        scores = [tg.tilted_nll(-log_probs.gather(1, s[:, None]).squeeze(1),
                                        log_probs.gather(1, h[:, None]).squeeze(1), s, h, b)
                  for s, h, b in ((stream, hint, boost), (changed, hint2, boost2))]
        assert torch.equal(scores[0][:t], scores[1][:t])


@pytest.mark.parametrize("max_prob", [1.0, 0.9], ids=["record", "capped"])
def test_tilted_distribution_sums_to_one(targets, max_prob):
    """Scoring every vocabulary entry as the target gives the whole tilted distribution: it sums to 1 at every
    position (fp32 terms summed in fp64: error ~1e-7), fired or not, and differs from the model's where fired.
    With TOKEN_MAX_PROB's cap too: its boost may read the model's distribution, never the target."""
    stream = torch.from_numpy(targets.astype(np.int64))
    hint, boost = tg.tilt_plan(stream, TOKEN_ORDER, TOKEN_THRESHOLD, TOKEN_BOOST)
    rows = torch.cat([boost.nonzero().squeeze(1)[:48], torch.arange(16)])
    log_probs = _fixed_log_probs(hint, rows)
    every = torch.arange(VOCAB).expand(rows.numel(), VOCAB)
    log_p_hint = log_probs.gather(1, hint[rows, None])
    tilted = tg.tilted_nll(-log_probs, log_p_hint.expand_as(log_probs), every, hint[rows, None],
                                   boost[rows, None], max_prob)
    total = torch.exp(-tilted.double()).sum(1)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-5)
    changed = (tilted[:48] - (-log_probs[:48])).abs().amax(1) > 1e-3  # the tilt is there to normalise
    assert changed.all() if max_prob == 1 else 24 < changed.sum() < 48  # the cap: no boost where p(hint) >= 0.9


def test_the_capped_tilt_lifts_p_hint_to_the_cap_at_most(targets):
    """TOKEN_MAX_PROB=0.9: where the record's tilt would leave p'(hint) below 0.9 the score is the record's to
    the bit; where it would lift it past 0.9, p'(hint) is 0.9 (or the model's own p, if higher); both kinds
    occur. The cap has a cost: a hint that is right scores worse than under the full boost."""
    stream = torch.from_numpy(targets.astype(np.int64))
    hint, boost = tg.tilt_plan(stream, TOKEN_ORDER, TOKEN_THRESHOLD, TOKEN_BOOST)
    rows = boost.nonzero().squeeze(1)[:400]
    log_probs = _fixed_log_probs(hint, rows)
    lp = log_probs.gather(1, hint[rows, None]).squeeze(1)
    score_hint = {m: tg.tilted_nll(-lp, lp, hint[rows], hint[rows], boost[rows], m) for m in (1.0, 0.9)}
    p_record, p_capped = torch.exp(-score_hint[1.0].double()), torch.exp(-score_hint[0.9].double())
    below = p_record < 0.9
    assert 20 < below.sum() < rows.numel() - 20  # both kinds
    assert torch.equal(score_hint[0.9][below], score_hint[1.0][below])
    expected = torch.maximum(lp[~below].double().exp(), torch.tensor(0.9, dtype=torch.float64))
    torch.testing.assert_close(p_capped[~below], expected, rtol=1e-5, atol=0)
    assert (p_capped[~below] < p_record[~below]).all()
