import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import train_gpt as tg
from torch.utils.flop_counter import FlopCounterMode
h = tg.load_hyperparameters({"RECIPE": "golf", "DATA_PATH": "/tmp", "TOKENIZER_PATH": "/tmp/x.model"})
torch.manual_seed(0)
model = tg.GPT(h); model.looping = True; model.requires_grad_(False)
rows, T, C = int(sys.argv[1]), int(sys.argv[2]), h.ttt_chunk_size
shapes = tg.lora_shapes(h, True)
A = tg.draw_lora_a(h, shapes, rows, torch.Generator().manual_seed(0), torch.device("cpu"))
work = tg.LoRAWork(h, shapes, torch.device("cpu")); work.start_batch(rows)
leaves = work.leaves(A, 0, rows)
ids = torch.randint(0, 8192, (rows, T))
pos = torch.arange(T - C, T).expand(rows, C).contiguous()
tgt = torch.randint(0, 8192, (rows, C))
def count(label, fn):
    t0 = time.perf_counter()
    with FlopCounterMode(display=False) as fc:
        fn()
    tot = fc.get_total_flops()
    print(f"{label}: {tot/1e9:.1f} GFLOP  {time.perf_counter()-t0:.1f}s cpu", flush=True)
    return tot
def default_step():
    nats = tg.ttt_chunk_losses(model, ids, pos, tgt, work.scale, *leaves)
    nats.mean().backward()
def score_keep():
    global kept
    with torch.no_grad():
        _, kept = tg.ttt_chunk_losses(model, ids, pos, tgt, work.scale, *leaves, keep_kv=True)
def chunk_step():
    P = T - C
    prefix = tuple(t[:, :P] for t in kept)
    nats = tg.ttt_chunk_losses(model, ids[:, P - 1:], torch.arange(C).expand(rows, C).contiguous(), tgt, work.scale, *leaves, prefix_kv=prefix)
    nats.mean().backward()
d = count("default fwd+bwd (window)", default_step)
s = count("chunk-only scoring (no grad, keep K/V)", score_keep)
c = count("chunk-only step fwd+bwd", chunk_step)
print(f"steps2: default {2*d/1e9:.1f} GFLOP; chunk-only {(s+2*c)/1e9:.1f} GFLOP; ratio {(s+2*c)/(2*d):.3f}")
