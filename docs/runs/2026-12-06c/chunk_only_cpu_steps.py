import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import train_gpt as tg
h = tg.load_hyperparameters({"RECIPE": "golf", "DATA_PATH": "/tmp", "TOKENIZER_PATH": "/tmp/x.model"})
torch.manual_seed(0)
model = tg.GPT(h); model.looping = True; model.requires_grad_(False)
rows, C = 2, h.ttt_chunk_size
shapes = tg.lora_shapes(h, True)
A = tg.draw_lora_a(h, shapes, rows, torch.Generator().manual_seed(0), torch.device("cpu"))
work = tg.LoRAWork(h, shapes, torch.device("cpu")); work.start_batch(rows)
fn = tg.compiled_chunk_fn(sys.argv[1]) if sys.argv[1] != "eager" else tg.ttt_chunk_losses
def step(T, mode):
    leaves = work.leaves(A, 0, rows)
    ids = torch.randint(0, 8192, (rows, T))
    pos = torch.arange(T - C, T).expand(rows, C).contiguous()
    tgt = torch.randint(0, 8192, (rows, C))
    t0 = time.perf_counter()
    if mode == "default":
        fn(model, ids, pos, tgt, work.scale, *leaves).mean().backward()
        fn(model, ids, pos, tgt, work.scale, *leaves).mean().backward()
    else:
        with torch.no_grad():
            _, kept = fn(model, ids, pos, tgt, work.scale, *leaves, keep_kv=True)
        P = T - C
        prefix = tuple(t[:, :P] for t in kept)
        for _ in range(2):
            fn(model, ids[:, P - 1:], torch.arange(C).expand(rows, C).contiguous(), tgt, work.scale, *leaves, prefix_kv=prefix).mean().backward()
    return time.perf_counter() - t0
mode = sys.argv[2]
for T in (2560, 1000, 2560, 1500, 2560):
    print(mode, T, f"{step(T, mode):.2f}s", flush=True)
