"""The score-first TTT evaluator: legality, equivalence with plain eval, and that it helps."""

import numpy as np
import pytest
import torch

import train_gpt as tg
from conftest import PROXY_DATA, TOKENIZER, metric


def _setup(**env):
    h = tg.load_hyperparameters({"SMOKE": "1", "DATA_PATH": str(PROXY_DATA), "VAL_MAX_TOKENS": "1500",
                                 "TTT_BATCH_SIZE": "3", "PHASED_TTT_PREFIX_DOCS": "4", "PHASED_TTT_NUM_PHASES": "2",
                                 "TTT_CHUNK_SIZE": "16", **env})
    torch.manual_seed(0)
    model = tg.GPT(h)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.proj.weight.normal_(std=0.05)
            block.mlp.down.weight.normal_(std=0.05)
    tables = tg.build_byte_tables(tg.load_tokenizer(str(TOKENIZER), 8192))
    return h, model, tables, tg.load_val_tokens(h)


def _run_ttt(h, model, tables, tokens):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    _, bpb, scores = tg.evaluate_ttt(model, tokens, tables, h, tg.DistContext(), log=lambda *a, **k: None)
    model.load_state_dict(state)  # the global SGD phases change the base weights
    return bpb, scores


def test_zero_lora_ttt_equals_plain_eval():
    h, model, tables, tokens = _setup(TTT_LORA_LR="0", PHASED_TTT_NUM_PHASES="0", TTT_WEIGHT_DECAY="0")
    _, plain_bpb, plain = tg.evaluate(model, tokens, tables, h, tg.DistContext(), keep_token_losses=True)
    ttt_bpb, scores = _run_ttt(h, model, tables, tokens)
    assert torch.allclose(scores, plain, atol=1e-5, rtol=1e-5)
    assert abs(ttt_bpb - plain_bpb) < 1e-6


def test_scores_never_depend_on_later_tokens():
    """Change a token in the middle of a piece of the first batch: every target scored before it (earlier
    positions of that piece, and the other pieces of its batch, which are independent) keeps its exact
    score; targets scored later may change, and some must (else the test proves nothing)."""
    h, model, tables, tokens = _setup()
    pieces = tg.stream_pieces(tokens, h)
    plan = tg.plan_ttt_batches(pieces, h, 1)
    first_batch = plan[0][0][0]
    s, e = first_batch[0]
    m = s + (e - s) // 2
    changed = tokens.copy()
    changed[m] = (changed[m] + 7) % 8000 + 2
    _, before = _run_ttt(h, model, tables, tokens)
    _, after = _run_ttt(h, model, tables, changed)
    fixed = np.zeros(len(tokens) - 1, dtype=bool)
    fixed[s:m - 1] = True  # targets tokens[s+1 .. m-1]: predicted before token m is read
    for ps, pe in first_batch[1:]:
        fixed[ps:pe] = True
    assert torch.equal(before[fixed], after[fixed])
    assert not torch.equal(before[~fixed], after[~fixed])


def test_phases_and_batches_cover_every_piece_once():
    h = tg.load_hyperparameters({"PHASED_TTT_PREFIX_DOCS": "10", "PHASED_TTT_NUM_PHASES": "3", "TTT_BATCH_SIZE": "4"})
    pieces = [(i * 10, i * 10 + 1 + (i * 7) % 9) for i in range(25)]
    plan = tg.plan_ttt_batches(pieces, h, world_size=2)
    flat = [p for phase in plan for rank in phase for batch in rank for p in batch]
    assert sorted(flat) == sorted(pieces) and len(plan) == 4
    assert tg.phase_bounds(25, h) == [(0, 3), (3, 7), (7, 10), (10, 25)]


def test_smoke_run_ttt_beats_no_ttt(smoke_log):
    _, log = smoke_log
    assert metric(log, "final_ttt_exact") < metric(log, "final_roundtrip_exact")
    assert "ttt_guard events:" in log


def _chunk_inputs(h, lora, b, T, chunk=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    tgt = torch.randint(0, h.vocab_size, (b, chunk), generator=g)
    tgt[0, -3:] = -1  # padding slots past the end of a piece
    return (torch.randint(0, h.vocab_size, (b, T), generator=g), torch.arange(T), torch.arange(T - chunk, T),
            tgt, lora.scale)


def test_compiled_chunk_function_matches_eager_with_one_graph():
    """TTT_COMPILE's unit: torch.compile of ttt_chunk_losses (Inductor's CPU backend here) gives the eager
    losses and LoRA gradients, and one graph serves every (rows, prefix) shape without recompiling."""
    h = tg.load_hyperparameters({"SMOKE": "1"})
    torch.manual_seed(0)
    model = tg.GPT(h)
    model.looping = True
    for p in model.parameters():
        p.requires_grad_(False)
    lora = tg.BatchedLoRA(h, 4, torch.device("cpu"))
    with torch.no_grad():
        for b in lora.B.values():
            b.normal_(std=0.05)
    for p in lora.parameters():
        p.requires_grad_(True)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # other tests' graphs
    compiled = torch.compile(tg.ttt_chunk_losses)
    for b, T, rows in [(4, 40, torch.arange(4)), (3, 56, torch.tensor([0, 2, 3])), (2, 72, torch.tensor([1, 3]))]:
        inputs = _chunk_inputs(h, lora, b, T, seed=T)
        results = []
        for fn in (compiled, tg.ttt_chunk_losses):
            args = (*inputs, *lora.select(rows))
            if fn is compiled:
                tg.mark_ttt_dynamic(args)
            losses = fn(model, *args)
            losses.sum().backward()
            results.append((losses.detach(), [p.grad.clone() for p in lora.parameters()]))
            for p in lora.parameters():
                p.grad = None
        (got, got_grads), (want, want_grads) = results
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4) and (got[0, -3:] == 0).all()
        for g, w in zip(got_grads, want_grads):
            assert torch.allclose(g, w, atol=1e-6, rtol=1e-3)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_whole_ttt_evaluation_compiles_one_graph(monkeypatch):
    """A whole TTT evaluation (phases, global SGD, batches whose rows finish one by one down to a single
    running piece) through the compiled chunk function gives the eager scores and compiles once: rows and
    prefix length are dynamic, and a lone running piece is padded to 2 rows (a size of 1 would specialise
    and compile again). Dynamo + AOTAutograd (backend aot_eager) decide the graphs, as for Inductor."""
    h, model, tables, tokens = _setup()
    model.looping = True
    want_bpb, want = _run_ttt(h, model, tables, tokens)
    monkeypatch.setattr(tg, "compile_ttt", lambda h, device: torch.compile(tg.ttt_chunk_losses, backend="aot_eager"))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    got_bpb, got = _run_ttt(h, model, tables, tokens)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5) and abs(got_bpb - want_bpb) < 1e-6
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_profile_cost_model_counts_what_ttt_batch_runs():
    """scripts/profile_gpu.py projects TTT time from (chunk steps, rows x prefix); check those counts
    against the evaluator's own loop on uneven pieces."""
    import sys
    from conftest import REPO
    sys.path.insert(0, str(REPO / "scripts"))
    import profile_gpu
    h, model, tables, tokens = _setup()
    calls = []

    def counting(model, ids, *rest):
        calls.append(ids.shape)
        return tg.ttt_chunk_losses(model, ids, *rest)
    batch = [(0, 70), (70, 100), (100, 133)]
    lora = tg.BatchedLoRA(h, 3, torch.device("cpu"))
    for p in lora.parameters():
        p.requires_grad_(True)
    for p in model.parameters():
        p.requires_grad_(False)
    scores = torch.zeros(len(tokens))
    tg.ttt_batch(counting, model, lora, tokens, batch, tables, h, tg.DistContext(), torch.zeros(len(tokens)),
                 tg.TTTStats(torch.device("cpu"), guard_on=True), scores)
    steps, processed = profile_gpu.chunk_work([70, 30, 33], h.ttt_chunk_size)
    assert steps == len(calls) == 5 and processed == sum(b * t for b, t in calls)
    # rows still inside their piece at starts 0, 16, .., 64, and never fewer than 2 (a finished row pads)
    assert [b for b, _ in calls] == [3, 3, 2, 2, 2]


def test_collapse_guard_fires_and_its_fallback_stops_adapting(capsys):
    """The guard compares TTT's running nats with the no-TTT nats it is given. Given no-TTT nats 1 nat per
    token better than the truth, it must fire: count every step, say it once per batch, and with
    TTT_COLLAPSE_FALLBACK=1 stop adapting for the rest of the batch (a score between no-TTT and full TTT)."""
    results = {}
    for name, env in (("no_ttt", dict(TTT_LORA_LR="0")), ("ttt", {}), ("fallback", dict(TTT_COLLAPSE_FALLBACK="1"))):
        h, model, tables, tokens = _setup(**{"VAL_MAX_TOKENS": "4000", "TTT_LORA_LR": "0.05", "TTT_WEIGHT_DECAY": "0",
                                             "PHASED_TTT_NUM_PHASES": "0", **env})
        _, _, plain = tg.evaluate(model, tokens, tables, h, tg.DistContext(), keep_token_losses=True)
        lines = []
        _, bpb, _ = tg.evaluate_ttt(model, tokens, tables, h, tg.DistContext(), log=lines.append,
                                    base_nats=plain - 1.0)
        events = int(next(line for line in lines if line.startswith("ttt_guard")).split("events:")[1].split()[0])
        results[name] = (bpb, events, capsys.readouterr().err)
    (bpb_plain, _, _), (bpb_ttt, events, err), (bpb_fallback, fallback_events, fallback_err) = results.values()
    n_batches = sum(len(rank) for phase in tg.plan_ttt_batches(tg.stream_pieces(tokens, h), h, 1) for rank in phase)
    assert events > n_batches >= err.count("ttt_collapse_guard") >= 1  # counted every step, said once a batch
    assert "fallback:0" in err and "fallback:1" in fallback_err and fallback_events >= 1
    assert bpb_ttt < bpb_fallback < bpb_plain  # TTT helps this model; the fallback cut its adaptation short


def _global_sgd_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    h, model, _, tokens = _setup(VAL_MAX_TOKENS="6000", GLOBAL_TTT_CHUNK_TOKENS="512")
    pieces = tg.stream_pieces(tokens, h)
    steps = tg.global_sgd_pass(model, tokens, pieces, h, tg.DistContext(rank, world_size))
    if rank == 0:
        torch.save(dict(steps=steps, windows=len(tg.group_pieces(pieces, 512)), state=model.state_dict()), out_file)
    if world_size > 1:
        dist.destroy_process_group()


def test_global_sgd_steps_do_not_depend_on_the_world_size(tmp_path):
    """The phase-boundary SGD averages 8 windows per step at any world size: 1 and 2 gloo ranks take the
    same steps and end with the same base weights (up to the order of float sums)."""
    import torch.multiprocessing as mp
    results = {}
    for world_size in (1, 2):
        out = tmp_path / f"w{world_size}.pt"
        mp.spawn(_global_sgd_worker, args=(world_size, str(tmp_path / f"init{world_size}"), str(out)),
                 nprocs=world_size, join=True)
        results[world_size] = torch.load(out)
    one, two = results[1], results[2]
    assert one["windows"] > 8 and one["steps"] == two["steps"] == -(-one["windows"] // 8)
    before = _setup()[1].state_dict()
    moved = sum((one["state"][k] - before[k]).abs().sum() for k in before)
    assert moved > 0
    for k, v in one["state"].items():
        assert torch.allclose(two["state"][k], v, atol=1e-6, rtol=1e-5), k
