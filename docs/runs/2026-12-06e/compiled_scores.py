"""Cast once vs cast at every use, compiled (twenty-fifth session; a reviewing helper's script, CPU): the toy TTT
evaluator (tests/test_ttt.py's _setup, RECIPE=golf with the MLP gate, bf16 activations, every parameter moved off
bf16's grid, no learning) scored through Inductor (the CPU's C++ backend here) with weights_cast_for_scoring and
with every name in READ_IN_FP32 (the casts at every use), each twice, and eagerly. Output: compiled_scores.txt.

    python3 docs/runs/2026-12-06e/compiled_scores.py
"""
import sys, os, torch
from pathlib import Path
REPO = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
import train_gpt as tg
import test_ttt as T
tg.activation_dtype = lambda device: torch.bfloat16
env = dict(RECIPE="golf", MLP_GATE_ENABLED="1", VAL_MAX_TOKENS="700", TTT_LORA_LR="0", TTT_WEIGHT_DECAY="0",
           PHASED_TTT_PREFIX_DOCS="0")
h, model, tables, tokens = T._setup(**env)
with torch.no_grad():
    for p in model.parameters():
        p.add_(torch.randn_like(p), alpha=0.02)
res = {}
every = tuple({n.rsplit(".", 1)[-1] for n, _ in (*model.named_parameters(), *model.named_buffers())})
orig = tg.READ_IN_FP32
for label, names in (("once", orig), ("at_use", every)):
    tg.READ_IN_FP32 = names
    torch._dynamo.reset()
    fn = tg.compiled_chunk_fn("inductor")
    tg.warm_up_ttt(fn, model, h, tg.DistContext())
    res[label] = T._run_ttt(h, model, tables, tokens, fn)[1]
    res[label + "2"] = T._run_ttt(h, model, tables, tokens, fn)[1]
    res[label + "_eager"] = T._run_ttt(h, model, tables, tokens)[1]
a, b = res["once"], res["at_use"]
print("deterministic:", torch.equal(a, res["once2"]), torch.equal(b, res["at_use2"]))
print("no-learning compiled once==at_use:", torch.equal(a, b), "differ frac:", (a != b).float().mean().item(),
      "max abs diff:", (a - b).abs().max().item(), "mean abs", (a-b).abs().mean().item())
print("eager once==at_use:", torch.equal(res["once_eager"], res["at_use_eager"]))
e = res["at_use_eager"]
print("compiled once vs eager mean", (a - e).abs().mean().item(), "compiled at_use vs eager mean", (b - e).abs().mean().item())
print("bpb-ish mean nats once/at_use/eager", a.mean().item(), b.mean().item(), e.mean().item())
