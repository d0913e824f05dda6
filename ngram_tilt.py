"""Token-only online n-gram tilt (the strictly causal channel of record #2135's evaluator), in torch.

The hint. Read the scored stream left to right. Before scoring target t, look at the context of the ORDER-1 tokens
just before it and at every earlier position that had the same context: `total` of them, of which the token seen
most often after it was seen `top_count` times (ties: the token that first reached that count). The hint is that
token with confidence top_count / total (float32), or no hint when the context never occurred. It fires when the
confidence is >= THRESHOLD. Only tokens before t enter, so the hint never depends on target t or anything later.

The tilt. Where a hint h fires with boost b, the model's distribution p becomes p'(a) = p(a) exp(b [a == h]) / Z,
Z = sum_a p(a) exp(b [a == h]) = 1 + p(h) (e^b - 1): p' sums to 1 over the whole vocabulary (challenge issue
#1017, C2). The score of target y is then -log p'(y) = -log p(y) - b [y == h] + log1p(p(h) expm1(b)). Where no
hint fires, b = 0 and the score is -log p(y) exactly.

No hash table and no sequential pass: the "online" counts at t are counts over earlier equal keys, so one stable
sort by key puts each context's occurrences together in stream order, and ranks and running maxima inside those
groups give every position's state before it at once (the same on the CPU and the GPU).

Contexts and (context, token) pairs are keyed by the record's 64-bit hashes, so that its hash collisions, which
merge distinct contexts, give the same hints here: the oracle test proves the hints equal. As in the record, the
stream is the targets with the first target prepended as the one prefix-only token.
"""

import torch

# The record's hash: a context's key XORs its tokens times these, oldest first; a pair mixes in the token.
HASH_COEFFS = (36313, 27191, 51647, 81929, 131071, 196613, 262147, 393241, 524309, 655373, 786433, 917521,
               1048583, 1179653, 1310729, 1441801, 1572869, 1703941, 1835017, 1966087, 2097169, 2228243,
               2359319, 2490389, 2621471, 2752549, 2883617, 3014687, 3145757, 3276833, 3407903, 3538973)
PAIR_MIX = 1000003


def _group_starts(sorted_keys: torch.Tensor) -> torch.Tensor:
    """Index of the first element of each element's run of equal keys (keys sorted)."""
    new = torch.ones_like(sorted_keys, dtype=torch.bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    idx = torch.arange(sorted_keys.numel(), device=sorted_keys.device)
    return torch.where(new, idx, 0).cummax(0).values


def token_hints(targets: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target position: (hinted token int64, confidence float32), both 0 where there is no hint."""
    ctx_len = order - 1
    if not 0 <= ctx_len <= len(HASH_COEFFS):
        raise ValueError(f"error: TOKEN_ORDER={order} must be 1..{len(HASH_COEFFS) + 1}")
    n, dev = targets.numel(), targets.device
    tok = targets.to(torch.int64)  # int64 products wrap like the record's uint64 ones: same bits
    stream = torch.cat([tok[:1], tok])  # stream[t + 1] is target t
    first = max(ctx_len - 1, 0)  # the first target with a whole context
    pos = torch.arange(first, n, device=dev)
    key = torch.zeros_like(pos)
    for j in range(ctx_len):  # target t's context is stream[t + 1 - ctx_len : t + 1]
        key ^= stream[first + 1 - ctx_len + j : n + 1 - ctx_len + j] * HASH_COEFFS[j]
    tok = tok[first:]
    pair = (key * PAIR_MIX) ^ (tok * HASH_COEFFS[ctx_len % len(HASH_COEFFS)])
    # count of each pair up to and including this position = its rank among equal pairs, plus 1
    pair_sorted, by_pair = torch.sort(pair, stable=True)
    rank = torch.arange(pos.numel(), device=dev)
    count = torch.empty_like(rank)
    count[by_pair] = rank - _group_starts(pair_sorted) + 1
    # per context, in stream order: running max of those counts and the token that first reached it
    key_sorted, by_key = torch.sort(key, stable=True)
    start = _group_starts(key_sorted)
    count, tok = count[by_key], tok[by_key]
    offset = start * (n + 1)  # makes every group's values exceed the previous groups': one cummax for all
    top_count = (count + offset).cummax(0).values - offset
    is_new_top = (rank == start) | (count > top_count.roll(1))
    top_tok = tok[torch.where(is_new_top, rank, 0).cummax(0).values]
    # the state before each occurrence is the one after the previous occurrence of its context
    seen = rank > start
    hint = torch.zeros(n, dtype=torch.int64, device=dev)
    conf = torch.zeros(n, dtype=torch.float32, device=dev)
    earlier = (rank - 1).clamp(min=0)
    hint[pos[by_key]] = torch.where(seen, top_tok[earlier], 0)
    conf[pos[by_key]] = torch.where(seen, top_count[earlier].float() / (rank - start).float(), 0.0)
    return hint, conf


def tilt_plan(targets: torch.Tensor, order: int, threshold: float, boost: float):
    """(hint int64, boost float32) per target position; boost 0 (no tilt) where the hint does not fire."""
    hint, conf = token_hints(targets, order)
    fires = conf >= torch.tensor(threshold, dtype=torch.float32)
    return torch.where(fires, hint, 0), torch.where(fires, boost, 0.0).float()


def tilted_nll(nll: torch.Tensor, log_p_hint: torch.Tensor, target: torch.Tensor, hint: torch.Tensor,
               boost: torch.Tensor) -> torch.Tensor:
    """-log p'(target) of the tilted, renormalised distribution, from -log p(target) and log p(hint), in fp32."""
    boost = boost.float()
    log_z = torch.log1p(log_p_hint.float().clamp(max=0.0).exp() * torch.expm1(boost))
    return nll.float() - boost * (target == hint).float() + log_z
