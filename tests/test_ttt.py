"""The score-first TTT evaluator: legality (score before update, each target once, no peeking at later
tokens, including past the context length of a long document), its plan, the global SGD at any world size,
compilation, and that it helps. The equality with the record's evaluator is tests/test_oracle_ttt.py."""

import math
import re

import numpy as np
import pytest
import torch

import train_gpt as tg
from conftest import FEW_LAYERS, PROXY_DATA, TOKENIZER, metric

TOY_CONTEXT = 48  # TTT_EVAL_SEQ_LEN here: proxy documents run to ~2000 tokens, far past it


def _setup(**env):
    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(PROXY_DATA), "VAL_MAX_TOKENS": "1500",
                                 "TTT_BATCH_SIZE": "3", "PHASED_TTT_PREFIX_DOCS": "4", "PHASED_TTT_NUM_PHASES": "2",
                                 "TTT_CHUNK_SIZE": "16", "TTT_EVAL_SEQ_LEN": str(TOY_CONTEXT),
                                 "GLOBAL_TTT_CHUNK_TOKENS": "512", "TTT_RECORD_WORLD_SIZE": "2", **env})
    torch.manual_seed(0)
    model = tg.GPT(h)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.proj.weight.normal_(std=0.05)
            block.mlp.down.weight.normal_(std=0.05)
    model.looping = True
    tables = tg.build_byte_tables(tg.load_tokenizer(str(TOKENIZER), 8192))
    return h, model, tables, _short_docs(tg.load_val_tokens(h))


def _short_docs(tokens: np.ndarray) -> np.ndarray:
    """Cut the proxy stream into documents of 40..400 tokens (a BOS every so often) so that several batches
    and phases fit in 1500 tokens; some documents stay longer than the context."""
    tokens = tokens.copy()
    rng = np.random.default_rng(0)
    at = 0
    while at < len(tokens):
        tokens[at] = 1
        at += int(rng.integers(40, 400))
    return tokens


def _run_ttt(h, model, tables, tokens, chunk_fn=None):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    lines = []
    _, bpb, scores = tg.evaluate_ttt(model, tokens, tables, h, tg.DistContext(), lines.append, chunk_fn)
    model.load_state_dict(state)  # the global SGD phases change the base weights
    model.looping = True
    return bpb, scores, lines


def test_plan_covers_every_document_once_and_pauses_after_in_flight_batches():
    h = tg.load_hyperparameters({"PHASED_TTT_PREFIX_DOCS": "10", "PHASED_TTT_NUM_PHASES": "2", "TTT_BATCH_SIZE": "4",
                                 "TTT_RECORD_WORLD_SIZE": "2"})
    lengths = [3 + (i * 7) % 30 for i in range(25)]
    tokens = np.concatenate([[1] + [5] * (n - 2) for n in lengths])
    plan = tg.plan_ttt(tokens, h)
    assert sorted(np.concatenate(plan.batches).tolist()) == list(range(25))
    maxes = [plan.lengths[b].max() for b in plan.batches]
    assert maxes == sorted(maxes, reverse=True) and len(plan.batches[0]) == 1  # the short batch is the longest
    # phase 1 reaches 5 documents after batches 0, 1 (1 + 4 docs); batch 2 was then in flight on the other GPU
    assert plan.phase_ends == [3, 5, 7] and plan.phase_docs == [5, 10, 0]
    # the SGD data: the first 5 scored documents in length order
    stream = tg.sgd_stream(tokens, plan, 0)
    scored = np.concatenate(plan.batches[:3])
    assert len(stream) == sum(sorted(plan.lengths[scored].tolist())[:5])


# #2014's short-document chunks at toy lengths: batches whose longest document has <= 150 tokens take 8-token
# chunks, <= 400 (every batch here) 12, longer ones TTT_CHUNK_SIZE (16).
SHORT = {"TTT_SHORT_SCORE_FIRST_STEPS": "150:8,400:12"}
ONE_SHORT = {"TTT_SHORT_SCORE_FIRST_STEPS": "400:12"}  # one size besides TTT_CHUNK_SIZE: fewer graphs to compile


@pytest.mark.parametrize("env", [{}, SHORT], ids=["plain", "short_chunks"])
def test_zero_lora_scores_each_target_once_on_its_sliding_window(env):
    """With B at zero (no learning) TTT is the base model on each chunk's window: every target is scored
    once, the first TOY_CONTEXT of a document like the plain eval, and a target far into a long document
    like a forward over the <= TOY_CONTEXT tokens that end its chunk (its batch's chunk size)."""
    h, model, tables, tokens = _setup(TTT_LORA_LR="0", TTT_WEIGHT_DECAY="0", PHASED_TTT_PREFIX_DOCS="0", **env)
    _, _, plain = tg.evaluate(model, tokens, tables, h, tg.DistContext(), keep_token_losses=True)
    _, scores, lines = _run_ttt(h, model, tables, tokens)
    assert f"scored_targets:{len(tokens) - 1}" in "".join(lines)
    starts, lengths = tg.find_documents(tokens, h.bos_id)
    near_start = np.zeros(len(tokens) - 1, dtype=bool)
    for s, n in zip(starts, lengths):
        near_start[s:s + min(n - 1, TOY_CONTEXT)] = True
    assert torch.allclose(scores[near_start], plain[near_start], atol=1e-5, rtol=1e-5)
    s, n = max(zip(starts, lengths), key=lambda d: d[1])  # the longest of the first batch
    C = tg.batch_chunk_size(h, n)
    assert C == (12 if env else h.ttt_chunk_size)
    for j in (TOY_CONTEXT + 5, n - 2):  # input positions past the context (targets j + 1)
        chunk_end = min((j // C + 1) * C, n - 1)
        w = max(0, chunk_end - TOY_CONTEXT)
        ids = torch.from_numpy(tokens[s + w:s + chunk_end]).long()[None]
        with torch.no_grad():
            hidden = model.hidden(ids, torch.arange(ids.size(1)), None)
            want = model.token_losses(hidden[:, j - w], torch.tensor([int(tokens[s + j + 1])]))
        assert torch.allclose(scores[s + j], want[0], atol=1e-5), j


# The n-gram tilt at a low order and threshold: its hints fire on most targets of these short documents.
TILT = {"NGRAM_TILT_ENABLED": "1", "TOKEN_ORDER": "2", "TOKEN_THRESHOLD": "0.3"}


# TOKEN_MAX_PROB at 0.001: above this random model's p(hint) (~1e-4), below it plus the boost: the cap bites.
CAPPED = {**TILT, "TOKEN_MAX_PROB": "0.001"}


@pytest.mark.parametrize("env", [{}, TILT, SHORT, {"TTT_GRAD_STEPS": "2"}, CAPPED,
                                 {"TTT_GRAD_CHUNK_ONLY": "1", "TTT_GRAD_STEPS": "2", **TILT}],
                         ids=["plain", "tilted", "short_chunks", "two_steps", "capped_tilt", "chunk_only"])
def test_scores_never_depend_on_later_tokens(env):
    """Change a token past the context length of the longest document (first batch): every target scored
    before it (earlier positions of that document, and the other documents of its batch) keeps its exact
    score; targets scored later may change, and some must (else the test proves nothing). With the tilt, whose
    hints come from the whole stream: fails when a hint reads a token after its target."""
    h, model, tables, tokens = _setup(**env)
    plan = tg.plan_ttt(tokens, h)
    first = plan.batches[0]
    d = first[-1]  # the longest document of the first batch
    s, n = plan.starts[d], plan.lengths[d]
    m = s + n - 20
    assert m - s > TOY_CONTEXT + h.ttt_chunk_size
    changed = tokens.copy()
    changed[m] = (changed[m] + 7) % 8000 + 2
    _, before, lines = _run_ttt(h, model, tables, tokens)
    _, after, _ = _run_ttt(h, model, tables, changed)
    if "NGRAM_TILT_ENABLED" in env:  # not vacuous: many targets are tilted
        fired = int(re.search(r"ngram_tilt_hints fired:(\d+)/", "\n".join(lines)).group(1))
        assert fired > len(tokens) // 5, lines
    fixed = np.zeros(len(tokens) - 1, dtype=bool)
    fixed[s:m - 1] = True  # targets tokens[s+1 .. m-1]: predicted before token m is read
    for other in first[:-1]:
        fixed[plan.starts[other]:plan.starts[other] + plan.lengths[other] - 1] = True
    assert torch.equal(before[fixed], after[fixed])
    assert not torch.equal(before[~fixed], after[~fixed])


def test_short_documents_take_more_smaller_chunks():
    """TTT_SHORT_SCORE_FIRST_STEPS: batches of short documents are scored in more, smaller chunks (each target
    still once), and the extra adaptation steps change the scores."""
    runs = {}
    for name, env in (("plain", {}), ("short", SHORT)):
        h, model, tables, tokens = _setup(TTT_LORA_LR="0.01", PHASED_TTT_PREFIX_DOCS="0", **env)
        bpb, _, lines = _run_ttt(h, model, tables, tokens)
        steps, scored = re.search(r"ttt_timing chunk_steps:(\d+) scored_targets:(\d+)", "\n".join(lines)).groups()
        runs[name] = bpb, int(steps), int(scored)
    assert runs["short"][2] == runs["plain"][2] == len(tokens) - 1
    assert runs["short"][1] > 1.3 * runs["plain"][1] and runs["short"][0] != runs["plain"][0], runs
    assert [tg.batch_chunk_size(h, n) for n in (2, 150, 151, 400, 401)] == [8, 8, 12, 12, 16]


def test_extra_grad_steps_stop_at_their_document_position():
    """TTT_GRAD_STEPS_TOKENS=P: chunk ci takes TTT_GRAD_STEPS Adam steps if it ends within its document's first P
    tokens, else one. So a chunk whose earlier chunks all took two is scored exactly as with two steps
    everywhere, and later chunks not (fresh A each batch, so no batch inherits another's adapters). Fails when
    the limit is off by a chunk (`<` for `<=`) or ignored."""
    C, P = 16, 64
    scores = {}
    for name, env in (("two", {"TTT_GRAD_STEPS": "2"}), ("one", {}),
                      ("mixed", {"TTT_GRAD_STEPS": "2", "TTT_GRAD_STEPS_TOKENS": str(P)})):
        h, model, tables, tokens = _setup(TTT_LORA_LR="0.01", PHASED_TTT_PREFIX_DOCS="0", TTT_WARM_START_A="0",
                                          **env)
        scores[name] = _run_ttt(h, model, tables, tokens)[1]
    plan = tg.plan_ttt(tokens, h)
    chunk = np.full(len(tokens) - 1, -1)  # each target's chunk index in its document
    for s, n in zip(plan.starts, plan.lengths):
        chunk[s:s + n - 1] = np.arange(n - 1) // C
    assert tg.batch_chunk_size(h, int(plan.lengths.max())) == C and chunk.max() * C > P
    as_two = torch.from_numpy(chunk * C <= P)  # chunks 0..P/C: every chunk before them ended within P
    assert torch.equal(scores["mixed"][as_two], scores["two"][as_two])
    assert (scores["mixed"][~as_two] != scores["two"][~as_two]).float().mean() > 0.9
    assert (scores["mixed"][as_two] != scores["one"][as_two]).float().mean() > 0.5


def test_the_scores_by_document_position_add_up():
    """The ttt_position_nats line: each target's score in the bucket of its position in its document, counted
    here document by document; the buckets add up to the score. Fails when a bucket's edge is on the wrong side
    (a target at position 256 counted below it) or a document's positions start at its BOS token's successor's."""
    h, model, tables, tokens = _setup(VAL_MAX_TOKENS="3000")
    _, scores, lines = _run_ttt(h, model, tables, tokens)
    line = next(line for line in lines if line.startswith("ttt_position_nats "))
    fields = dict(part.split(":") for part in line.split()[1:])
    nats, targets = ([float(x) for x in fields[k].split(",")] for k in ("nats", "targets"))
    assert fields["edges"] == "256,512,1024,2048,4096,8192" and len(nats) == len(targets) == 7
    position = np.concatenate([np.arange(n - 1) for n in tg.find_documents(tokens, h.bos_id)[1]])
    bucket = np.searchsorted(np.array(tg.POSITION_EDGES), position, side="right")
    assert (position == 256).any() and targets == np.bincount(bucket, minlength=7).tolist()
    want = np.bincount(bucket, scores.double().numpy(), minlength=7)
    np.testing.assert_allclose(nats, want, atol=1e-3)
    assert targets[1] > 0 and sum(targets[2:]) == 0


def test_adams_step_count_follows_the_steps_taken(monkeypatch):
    """With TTT_GRAD_STEPS_TOKENS the chunks take 2 or 1 steps; AdamW's bias correction counts the steps as taken:
    1, 2, ... through each batch, as many as its learning chunks took (the record's optimizer counts its step()
    calls). Fails with the count of a fixed TTT_GRAD_STEPS a chunk (ci x steps + step + 1)."""
    h, model, tables, tokens = _setup(TTT_GRAD_STEPS="2", TTT_GRAD_STEPS_TOKENS="64", PHASED_TTT_PREFIX_DOCS="0")
    counts, adamw_rows = [], tg.adamw_rows
    monkeypatch.setattr(tg, "adamw_rows", lambda *args: counts.append(args[3]) or adamw_rows(*args))
    _run_ttt(h, model, tables, tokens)
    plan = tg.plan_ttt(tokens, h)
    expected = []
    for docs in plan.batches:
        n_chunks = -(-(plan.lengths[docs] - 1) // h.ttt_chunk_size)
        expected += list(range(1, sum(tg.chunk_grad_steps(h, h.ttt_chunk_size, int(n_chunks.max()))[:-1]) + 1))
    assert counts == expected and 1 in np.diff(counts) and len(set(counts)) > 10


def test_adam_step_is_the_records_fused_adamw_bit_for_bit(monkeypatch):
    """adamw_rows on the rows that learn (a suffix of each batch tensor, as ttt_batch passes them) equals
    torch.optim.AdamW(fused=True), the records' TTT optimizer, on those rows to the last bit over several steps
    with #2135's settings and a weight decay, and leaves the other rows alone; its step counts are float32 on the
    tensors' device, as the GPU kernel reads them (the CPU's accepts any). Fails with the former foreach
    emulation of the same update (2e-9 off), a step count off by one or of another dtype, or the betas swapped."""
    counts, fused = [], torch._fused_adamw_
    monkeypatch.setattr(torch, "_fused_adamw_", lambda *a, **k: counts.extend(a[5]) or fused(*a, **k))
    h = tg.load_hyperparameters({"RECIPE": "2135", "TTT_BETA1": "0.9", "TTT_WEIGHT_DECAY": "0.5"})
    gen = torch.Generator().manual_seed(0)
    shapes, first, steps = [(6, 8, 24), (6, 40, 8), (6, 8, 16)], 2, 4
    start = [torch.randn(s, generator=gen) * 0.02 for s in shapes]
    grads = [[torch.randn(s, generator=gen) * 1e-3 for s in shapes] for _ in range(steps)]
    ours, moments = [t.clone() for t in start], [torch.zeros(s) for s in shapes for _ in range(2)]
    record = [t[first:].clone().requires_grad_() for t in start]
    opt = torch.optim.AdamW(record, lr=h.ttt_lora_lr, betas=(h.ttt_beta1, h.ttt_beta2), eps=1e-10,
                            weight_decay=h.ttt_weight_decay, fused=True)
    for step, g in enumerate(grads, 1):
        tg.adamw_rows([t[first:] for t in ours], [x[first:] for x in g], [m[first:] for m in moments], step, h)
        for p, x in zip(record, g):
            p.grad = x[first:].clone()
        opt.step()
    assert all(torch.equal(t[first:], p.detach()) for t, p in zip(ours, record))
    assert all(torch.equal(t[:first], s[:first]) for t, s in zip(ours, start))
    assert all(not torch.equal(t, s) for t, s in zip(ours, start))
    assert {(c.dtype, c.device.type, c.dim()) for c in counts} == {(torch.float32, "cpu", 0)}


def test_finish_batch_decays_each_row_by_the_adam_steps_it_missed():
    """A row of n chunks learns after its chunks 0..n-2; finish_batch gives it the weight decay of every later
    Adam step of its batch, counted here step by step along chunk_schedule. Fails when a row is charged the
    steps of the chunk it learned from, or the steps of the batch's last chunk (where nobody learns)."""
    h = tg.load_hyperparameters({"TTT_GRAD_STEPS": "3", "TTT_GRAD_STEPS_TOKENS": "40", "TTT_LORA_LR": "0.01",
                                 "TTT_WEIGHT_DECAY": "1"})
    n_chunks = np.array([1, 2, 2, 4, 7])
    grad_steps = tg.chunk_grad_steps(h, 10, int(n_chunks.max()))
    assert grad_steps == [3, 3, 3, 3, 1, 1, 1]
    missed = np.zeros(len(n_chunks))
    for ci, _, learn in tg.chunk_schedule(n_chunks):
        if learn < len(n_chunks):  # someone learns after this chunk: grad_steps[ci] Adam steps
            missed[:learn] += grad_steps[ci]
    A = torch.ones(len(n_chunks), 3)
    tg.finish_batch(h, A, n_chunks, grad_steps)
    assert missed.tolist() == [14, 11, 11, 5, 0]
    assert torch.allclose(A.double(), torch.from_numpy(0.99 ** missed)[:, None].expand(-1, 3))


@pytest.mark.parametrize("recipe, targets", [("2135", ("q", "v", "mlp", "o")), ("1886", ("q", "v", "k", "mlp", "o"))])
def test_adapters_are_one_flat_tensor_a_side_drawn_in_the_records_order(recipe, targets):
    """Under RECIPE=2135 (69 adapters, recurrence on; K LoRA off) and RECIPE=1886 (K LoRA on) every adapter's A
    and B are views of one flat tensor a side, laid end to end in lora_shapes' order with their shapes;
    draw_lora_a fills them with the draws the record makes adapter by adapter (uniform +-1/sqrt(fan_in), one
    generator, the LM head's and then target by target over all slots, as both records' BatchedTTTLoRA create
    them); a chunk step's adapters are those two tensors. Fails when views overlap or skip columns, a side's
    shapes are swapped, the draw order or bounds change, or leaves go back to one tensor an adapter."""
    h = tg.load_hyperparameters({"RECIPE": recipe, "TTT_LORA_RANK": "4", "TTT_BATCH_SIZE": "3"})
    shapes, r, rows = tg.lora_shapes(h, True), h.ttt_lora_rank, 3
    slots = len(sum(tg.virtual_layer_order(h, True), []))
    assert slots == 17 and len(shapes) == 1 + len(targets) * slots
    for side in "AB":
        flat = torch.arange(rows * tg.lora_width(shapes, r, side), dtype=torch.float32).view(rows, -1)
        views = tg.lora_views(flat, shapes, r, side)
        assert [v.shape[1:] for v in views] == [(r, i) if side == "A" else (o, r) for _, i, o in shapes]
        assert torch.equal(torch.cat([v.flatten(1) for v in views], 1), flat)
    gen, want = torch.Generator().manual_seed(5), {}
    created = [("head", "lm_head")] + [(slot, name) for name in targets for slot in range(slots)]
    for key in created:
        fan_in = next(i for k, i, _ in shapes if k == key)
        bound = 1.0 / math.sqrt(fan_in)
        want[key] = torch.empty(rows, r, fan_in).uniform_(-bound, bound, generator=gen)
    A = tg.draw_lora_a(h, shapes, rows, torch.Generator().manual_seed(5), "cpu")
    assert sorted(want, key=str) == sorted((k for k, _, _ in shapes), key=str)
    assert all(torch.equal(v, want[k]) for v, (k, _, _) in zip(tg.lora_views(A, shapes, r, "A"), shapes))
    leaves = tg.LoRAWork(h, shapes, "cpu").leaves(A, 1, rows)
    assert [t.shape for t in leaves] == [(2, tg.lora_width(shapes, r, side)) for side in "AB"]


def test_the_adapters_that_read_one_input_share_its_first_product():
    """q, v and o's adapters read the attention block's normed input, so their A are one unit, side by side in
    the flat tensor, and a chunk step's forward reads that input with one product for the three: per virtual
    layer one bmm for the unit's A, one for each B and two for the MLP's adapter; then two for the LM head's.
    Fails when the units split (three products) or merge adapters of other inputs or slots."""
    h, model, _, tokens = _setup(RECIPE="2135", VAL_MAX_TOKENS="400")
    shapes = tg.lora_shapes(h, model.looping)
    slots = len(sum(tg.virtual_layer_order(h, model.looping), []))
    groups = tg.lora_groups(shapes)
    assert [[shapes[i][0] for i in g] for g in groups[:3]] == [[("head", "lm_head")], [(0, "q"), (0, "v"), (0, "o")],
                                                              [(0, "mlp")]]
    assert len(groups) == 1 + 2 * slots and sum(map(len, groups)) == len(shapes)
    adapters = _window_leaves(h, model, 2)
    ids = torch.from_numpy(tokens[:33].astype(np.int64)).view(1, -1).expand(2, -1)
    is_bmm = []  # one entry an aten call

    class CountBmm(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            is_bmm.append(func is torch.ops.aten.bmm.default)
            return func(*args, **(kwargs or {}))

    with CountBmm():
        tg.ttt_chunk_losses(model, ids[:, :-1], torch.arange(24, 32).expand(2, -1), ids[:, 25:], 1.0, *adapters)
    assert sum(is_bmm) == slots * (1 + 3 + 2) + 2


@pytest.mark.parametrize("env, phases, sgd_steps, rank", [
    ({}, 1, 9, 8), ({"PHASED_TTT_NUM_PHASES": "2"}, 2, 5, 8), ({"GLOBAL_TTT_EPOCHS": "2"}, 1, 18, 8),
    ({"PHASED_TTT_PREFIX_DOCS": "9"}, 1, 12, 8), ({"TTT_LORA_RANK": "16"}, 1, 9, 16)],
    ids=["recipe", "two_phases", "two_epochs", "prefix_9", "rank_16"])
def test_more_adaptation_settings_take_effect_under_recipe_2135(env, phases, sgd_steps, rank):
    """Issue 27's "more adaptation": a second phase, a second global-SGD epoch, a longer prefix, a larger LoRA
    rank are settings over RECIPE=2135's one phase: the plan pauses for that many SGD passes, the first pass
    takes that many steps (the prefix's 6 documents, or 9; 128-token chunks of 64-token sequences), and the
    adapters have that rank."""
    h, model, _, tokens = _setup(**{"RECIPE": "2135", "VAL_MAX_TOKENS": "3000", "PHASED_TTT_NUM_PHASES": "1",
                                    "PHASED_TTT_PREFIX_DOCS": "6", "GLOBAL_TTT_CHUNK_TOKENS": "128",
                                    "EVAL_SEQ_LEN": "64", **env})
    plan = tg.plan_ttt(tokens, h)
    assert sum(d > 0 for d in plan.phase_docs) == phases
    assert tg.global_sgd(model, tg.sgd_stream(tokens, plan, 0), h, tg.DistContext()) == sgd_steps
    shapes = tg.lora_shapes(h, model.looping)
    A = tg.draw_lora_a(h, shapes, 2, torch.Generator(), "cpu")
    assert A.shape == (2, rank * sum(fan_in for _, fan_in, _ in shapes))


def test_the_tilt_cap_reaches_the_scores():
    """TOKEN_MAX_PROB reaches the evaluator: where a hint fires the capped tilt scores differently, elsewhere the
    same to the bit (the adapters learn from the untilted loss either way)."""
    h, model, tables, tokens = _setup(VAL_MAX_TOKENS="700", **TILT)
    _, full, _ = _run_ttt(h, model, tables, tokens)
    _, capped, _ = _run_ttt(tg.dataclasses.replace(h, token_max_prob=0.001), model, tables, tokens)
    fired = tg.ngram_hints(tokens, h, "cpu")[1] > 0
    assert fired.sum() > 50 and torch.equal(capped[~fired], full[~fired])
    assert (capped[fired] != full[fired]).float().mean() > 0.9


def test_weights_cast_once_a_phase_score_as_cast_at_every_use_in_bf16(monkeypatch):
    """TTT scores with the base weights cast to the activations' dtype once a phase (weights_cast_for_scoring),
    not at every use: eager, with bf16 activations (the GPU's), the per-target scores equal, bit for bit, those of
    a run that casts at every use (every name in READ_IN_FP32). Compiled they may not: Inductor skips the rounding
    of a cast it fuses into its use. RECIPE=golf with the MLP gate: every kind of parameter. The SGD pass between
    phases trains the fp32 weights."""
    monkeypatch.setattr(tg, "activation_dtype", lambda device: torch.bfloat16)
    h, model, tables, tokens = _setup(RECIPE="golf", MLP_GATE_ENABLED="1")
    with torch.no_grad():  # no value exact in bf16 (the gates' zeros, the softcaps' start are)
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.02)
    c_q, seen = model.blocks[0].attn.c_q.weight, []
    for name in ("ttt_batch", "global_sgd"):
        monkeypatch.setattr(tg, name, lambda *a, f=getattr(tg, name), name=name: seen.append((name, c_q.dtype))
                            or f(*a))
    _, once, _ = _run_ttt(h, model, tables, tokens)
    assert set(seen) == {("ttt_batch", torch.bfloat16), ("global_sgd", torch.float32)} and c_q.dtype == torch.float32
    every = {name.rsplit(".", 1)[-1] for name, _ in (*model.named_parameters(), *model.named_buffers())}
    monkeypatch.setattr(tg, "READ_IN_FP32", tuple(every))
    _, at_use, _ = _run_ttt(h, model, tables, tokens)
    assert torch.equal(once, at_use)


def test_ttt_learns_on_long_documents():
    """Adaptation helps this (random) model's later chunks: TTT beats the no-learning score."""
    h, model, tables, tokens = _setup(TTT_LORA_LR="0.01", PHASED_TTT_PREFIX_DOCS="0")
    frozen, _, _ = _run_ttt(*_setup(TTT_LORA_LR="0", PHASED_TTT_PREFIX_DOCS="0"))
    learned, _, _ = _run_ttt(h, model, tables, tokens)
    assert learned < frozen


def test_smoke_run_ttt_beats_no_ttt(smoke_log):
    _, log = smoke_log
    assert metric(log, "final_ttt_exact") < metric(log, "final_roundtrip_exact")
    assert "ttt_compile_warmup_seconds:" in log and "ttt_global_sgd phase:1 docs:2" in log
    # the eval clock says what it covered: the rules' parts in, TTT's compile warm-up (random tokens) out
    assert re.search(r"^eval_time:\d+ms \(inside: artifact load, roundtrip eval, TTT; "
                     r"outside: TTT compile warm-up [0-9.]+s\)$", log, re.M), log[-2000:]


@pytest.mark.parametrize("env, graphs", [({}, 1), (TILT, 1), ({**SHORT, **TILT}, 1),
                                         ({**ONE_SHORT, **TILT, "TTT_GRAD_CHUNK_ONLY": "1"}, 4)],
                         ids=["plain", "tilted", "short_chunks_tilted", "short_chunks_chunk_only"])
def test_whole_ttt_evaluation_compiles_one_graph(env, graphs):
    """A whole TTT batch (rows that finish one by one down to a lone document, computed beside an ended
    one; windows that grow then slide) through the compiled chunk function gives the eager scores and
    compiles once, in the warm-up on random tokens (with the tilt: its variant, once; with short chunks: one
    graph for every chunk size, the batch's 12 among them; TTT_GRAD_CHUNK_ONLY with short chunks: four, the
    scoring pass that keeps keys and values, the first chunk's step, and the chunk's step over them for each of
    the two sizes, 12 and 16, its columns static: torch 2.11's Inductor asserts on dynamic ones). Dynamo +
    AOTAutograd (backend aot_eager) decide the graphs, as for Inductor."""
    h, model, tables, tokens = _setup(VAL_MAX_TOKENS="700", **FEW_LAYERS, **env)  # one batch of 3 (of 1: specialises)
    assert [len(b) for b in tg.plan_ttt(tokens, h).batches] == [3]
    want_bpb, want, _ = _run_ttt(h, model, tables, tokens)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # other tests' graphs
    inputs = []  # each graph's tensor inputs: name -> shape

    def aot_eager(gm, example_inputs):
        inputs.append({n.name: n.meta["example_value"].shape for n in gm.graph.find_nodes(op="placeholder")
                       if isinstance(n.meta.get("example_value"), torch.Tensor)})
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)
    chunk_fn = tg.compiled_chunk_fn(aot_eager)
    tg.warm_up_ttt(chunk_fn, model, h, tg.DistContext())  # as the run does, before its clock
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    got_bpb, got, _ = _run_ttt(h, model, tables, tokens, chunk_fn)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5) and abs(got_bpb - want_bpb) < 1e-6
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # nothing compiled on the clock
    chunk_steps = [shapes for shapes in inputs if "l_prefix_kv_0_" in shapes]
    assert len(chunk_steps) == graphs - 2 if "TTT_GRAD_CHUNK_ONLY" in env else not chunk_steps
    own = ("l_ids_", "l_chunk_pos_", "l_chunk_tgt_")  # the chunk's columns: static
    assert all(isinstance(shapes[name][1], int) for shapes in chunk_steps for name in own)


def test_ttt_compiles_under_the_inductor_settings_of_training(monkeypatch):
    """An eval-only or quantize-only run compiles TTT without compiling training first. Inductor's settings are in
    its cache keys, so they must be training's, or those runs miss the TTT graphs a training run cached (s27 on one
    H100: 118 s of TTT warm-up after the base run, against ~15 s between runs of one kind). No graph is compiled:
    torch.compile is lazy, so a CPU can build the GPU's compiled functions."""
    config = torch._inductor.config
    if not hasattr(config.triton, "mix_order_reduction"):
        pytest.skip("this torch has no mix-order reduction to turn off")
    monkeypatch.setattr(config.triton, "mix_order_reduction", True)  # torch's default
    torch_default = config.save_config_portable()
    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(PROXY_DATA), "COMPILE": "1", "TTT_COMPILE": "1"})
    cuda = torch.device("cuda")
    assert tg.compile_ttt(h, cuda) is not tg.ttt_chunk_losses
    ttt_alone = config.save_config_portable()
    config.triton.mix_order_reduction = True
    tg.compile_for_training(tg.GPT(h), h, cuda)
    tg.compile_ttt(h, cuda)
    assert ttt_alone == config.save_config_portable() != torch_default


def _global_sgd_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    h, model, _, tokens = _setup(VAL_MAX_TOKENS="3000", GLOBAL_TTT_CHUNK_TOKENS="1024")
    steps = tg.global_sgd(model, tokens, h, tg.DistContext(rank, world_size))
    if rank == 0:
        torch.save(dict(steps=steps, state=model.state_dict()), out_file)
    if world_size > 1:
        dist.destroy_process_group()


def test_global_sgd_does_not_depend_on_the_world_size(tmp_path):
    """The SGD pass splits each chunk over TTT_RECORD_WORLD_SIZE virtual GPUs at any world size: 1 and 2
    gloo ranks take the same steps and end with the same base weights (up to the order of float sums)."""
    import torch.multiprocessing as mp
    results = {}
    for world_size in (1, 2):
        out = tmp_path / f"w{world_size}.pt"
        mp.spawn(_global_sgd_worker, args=(world_size, str(tmp_path / f"init{world_size}"), str(out)),
                 nprocs=world_size, join=True)
        results[world_size] = torch.load(out)
    one, two = results[1], results[2]
    assert one["steps"] == two["steps"] == 2  # 3000 tokens: two full 1024-token chunks, the last is skipped
    before = _setup()[1].state_dict()
    assert sum((one["state"][k] - before[k]).abs().sum() for k in before) > 0
    for k, v in one["state"].items():
        assert torch.allclose(two["state"][k], v, atol=1e-6, rtol=1e-5), k


def test_a_token_limit_without_a_second_step_is_refused():
    h, model, tables, tokens = _setup(TTT_GRAD_STEPS_TOKENS="64")
    with pytest.raises(ValueError, match="TTT_GRAD_STEPS_TOKENS=64 limits .* TTT_GRAD_STEPS=1 takes none"):
        tg.evaluate_ttt(model, tokens, tables, h, tg.DistContext(), print)


def test_chunk_only_with_more_chunk_sizes_than_graphs_is_refused():
    """TTT_GRAD_CHUNK_ONLY compiles a chunk step per chunk size: past torch's graphs a function, some would run
    eagerly; at the limit it runs."""
    limit = torch._dynamo.config.recompile_limit
    sizes = lambda n: ",".join(f"{100 * (i + 1)}:{i + 1}" for i in range(n))  # noqa: E731  n short-chunk sizes
    h, model, tables, tokens = _setup(TTT_GRAD_CHUNK_ONLY="1", TTT_SHORT_SCORE_FIRST_STEPS=sizes(limit - 2))
    with pytest.raises(ValueError, match=f"make {limit - 1}: {limit + 1} graphs, past torch's {limit} .* at most "
                                         f"{limit - 3} short-document chunk sizes"):
        tg.check_ttt_settings(h, 1)
    tg.check_ttt_settings(tg.dataclasses.replace(h, ttt_short_score_first_steps=sizes(limit - 3)), 1)


def test_record_world_size_must_be_a_multiple_of_the_world_size():
    h, model, tables, tokens = _setup(TTT_RECORD_WORLD_SIZE="3")
    with pytest.raises(ValueError, match="TTT_RECORD_WORLD_SIZE=3"):
        tg.evaluate_ttt(model, tokens, tables, h, tg.DistContext(0, 2), print)


# TTT_GRAD_CHUNK_ONLY under RECIPE=2135 at toy size: SmearGate (given weight here: it starts at zero), the sparse
# attention gate, XSA, recurrence, parallel lanes.
CHUNK_ONLY = {"RECIPE": "2135", "TTT_GRAD_CHUNK_ONLY": "1", "EVAL_SEQ_LEN": "64"}


def _chunk_only_setup(**env):
    h, model, tables, tokens = _setup(**{**CHUNK_ONLY, **env})
    with torch.no_grad():
        model.smear_gate.normal_(std=0.5)
        model.smear_lambda.fill_(0.7)
    return h, model, tables, tokens


def _window_leaves(h, model, rows: int, seed: int = 3):
    """LoRA leaves of `rows` rows with A and B both random (B starts at zero in TTT: no gradient to A)."""
    g, shapes = torch.Generator().manual_seed(seed), tg.lora_shapes(h, model.looping)
    return [(torch.randn(rows, tg.lora_width(shapes, h.ttt_lora_rank, side), generator=g) * 0.1).requires_grad_()
            for side in "AB"]


def test_chunk_only_step_scores_as_the_window_and_stops_its_gradient_at_the_chunk(monkeypatch):
    """TTT_GRAD_CHUNK_ONLY's learning pass (the chunk's tokens, the token before it for the SmearGate, over the
    keys and values that the scoring pass kept) gives the window forward's nats at the chunk, and its LoRA
    gradient is the window forward's with the earlier columns' keys and values detached (not the full
    gradient). Fails when the kept keys/values are skipped or misaligned, the chunk's positions (RoPE) or its
    lead token (SmearGate) are off, or the causal mask is not aligned to the window's end."""
    h, model, _, tokens = _chunk_only_setup()
    rows, T, C = 3, 48, 16
    P = T - C
    ids = torch.from_numpy(tokens[:rows * T].reshape(rows, T).astype(np.int64))
    chunk_pos = torch.arange(P, T).expand(rows, C).contiguous()
    tgt = torch.from_numpy(tokens[1:rows * T + 1].reshape(rows, T).astype(np.int64))[:, P:]
    scale = 0.5
    leaves = _window_leaves(h, model, rows)

    def grads(nats):
        for t in leaves:
            t.grad = None
        nats.mean(dim=1).sum().backward()
        return torch.cat([t.grad.flatten() for t in leaves])

    full = tg.ttt_chunk_losses(model, ids, chunk_pos, tgt, scale, *leaves)
    full_grad = grads(full)
    with torch.no_grad():
        scored, kept = tg.ttt_chunk_losses(model, ids, chunk_pos, tgt, scale, *leaves, keep_kv=True)
    assert torch.equal(scored, full.detach()) and len(kept) == 2 * len(sum(tg.virtual_layer_order(h, True), []))
    tail = tg.ttt_chunk_losses(model, ids[:, P - 1:], torch.arange(C).expand(rows, C).contiguous(), tgt, scale,
                               *leaves, prefix_kv=tuple(t[:, :P] for t in kept))
    assert torch.allclose(tail, full, atol=1e-5, rtol=1e-5)
    tail_grad = grads(tail)
    window_attention = tg.dense_causal_attention

    def detached_before_chunk(q, k, v):
        k, v = (torch.cat((t[:, :P].detach(), t[:, P:]), 1) for t in (k, v))
        return window_attention(q, k, v)
    monkeypatch.setattr(tg, "dense_causal_attention", detached_before_chunk)
    want_grad = grads(tg.ttt_chunk_losses(model, ids, chunk_pos, tgt, scale, *leaves))
    assert torch.allclose(tail_grad, want_grad, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(tail_grad, full_grad, atol=1e-6, rtol=1e-3)  # the truncation is not vacuous


def test_chunk_only_ttt_is_the_evaluator_with_the_gradient_stopped_before_each_chunk(monkeypatch):
    """The whole evaluation with TTT_GRAD_CHUNK_ONLY=1 (one Adam step a chunk) scores as the plain evaluator
    whose window attention detaches the keys and values before the learning rows' chunk (the window's last C
    columns), and not as the plain evaluator. Fails when the chunk-only path learns from other rows, other
    columns, or the scoring pass's graph."""
    h, model, tables, tokens = _chunk_only_setup(TTT_LORA_LR="0.01", PHASED_TTT_PREFIX_DOCS="0")
    got_bpb, got, _ = _run_ttt(h, model, tables, tokens)
    plain = tg.dataclasses.replace(h, ttt_grad_chunk_only=False)
    plain_bpb, _, _ = _run_ttt(plain, model, tables, tokens)
    window_attention, C = tg.dense_causal_attention, h.ttt_chunk_size

    def detached_before_chunk(q, k, v):
        P = k.size(1) - C
        k, v = (torch.cat((t[:, :P].detach(), t[:, P:]), 1) for t in (k, v))
        return window_attention(q, k, v)
    monkeypatch.setattr(tg, "dense_causal_attention", detached_before_chunk)
    want_bpb, want, _ = _run_ttt(plain, model, tables, tokens)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4) and abs(got_bpb - want_bpb) < 1e-5
    assert abs(got_bpb - plain_bpb) > 1e-4, (got_bpb, plain_bpb)


def test_every_chunk_only_step_reads_the_context_its_scoring_pass_kept():
    """Each learning pass of TTT_GRAD_CHUNK_ONLY (both Adam steps of a chunk here) forwards the window's last
    columns from P - 1 over the scoring pass's keys and values of the first P = T - C columns, for the window's
    last rows (those that learn), and a window of one chunk learns through the window itself. Fails when a later
    step forgets the context or reads another pass's."""
    h, model, tables, tokens = _chunk_only_setup(TTT_LORA_LR="0.01", PHASED_TTT_PREFIX_DOCS="0", TTT_GRAD_STEPS="2")
    calls = []

    def recording(model, ids, chunk_pos, chunk_tgt, scale, *adapters, **options):
        out = tg.ttt_chunk_losses(model, ids, chunk_pos, chunk_tgt, scale, *adapters, **options)
        calls.append((ids, options, out))
        return out
    _run_ttt(h, model, tables, tokens, recording)
    C, learning_passes = h.ttt_chunk_size, []
    for ids, options, out in calls:
        if options.get("keep_kv"):
            window, kept = ids, out[1]
            learning_passes.append(0)
            continue
        learning_passes[-1] += 1
        prefix, P = options.get("prefix_kv"), window.size(1) - C
        if P == 0:
            assert prefix is None and torch.equal(ids, window[-len(ids):])
            continue
        rows = len(ids)
        assert prefix is not None and all(p.shape[:2] == (rows, P) for p in prefix)
        assert torch.equal(ids, window[-rows:, P - 1:])
        assert all(torch.equal(p, k[-rows:, :P]) for p, k in zip(prefix, kept))
    assert max(learning_passes) == 2 and learning_passes.count(2) > 10, learning_passes


def test_clean_gradients_take_effect_with_chunk_only_steps():
    """TTT_GRAD_STEPS_CLEAN clears the learning rows' gradients between the steps of the chunk-only path too."""
    runs = [_run_ttt(*_chunk_only_setup(TTT_LORA_LR="0.01", PHASED_TTT_PREFIX_DOCS="0", TTT_GRAD_STEPS="2",
                                        TTT_GRAD_STEPS_CLEAN=clean))[1] for clean in ("0", "1")]
    assert (runs[0] != runs[1]).float().mean() > 0.5
