"""What GPTQ calibration on self-generated tokens costs against calibration on training data (CPU or 1 GPU).

    SMOKE=1 ITERATIONS=30 DATA_PATH=../shared/data/proxy/datasets/proxy_sp8192 \
        TOKENIZER_PATH=../shared/data/tokenizers/fineweb_8192_bpe.model python scripts/calibration_cost.py

Trains one model with train_gpt.py's own settings (env vars as usual), then quantizes the same EMA weights twice:
with the Hessians of training batches (what train_gpt.py does, inside the training clock) and with the Hessians
of as many tokens sampled from the model itself (temperature 1, each row starting at BOS: no training data).
Prints the roundtrip val_bpb of each and their difference. The other option's cost, reserving the Hessian time
inside the 600 s, is the training time it removes: `train_data_access_end_seconds` - `train_time` in a log.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_gpt as tg  # noqa: E402


@torch.no_grad()
def generated_batches(model: tg.GPT, h: tg.Hyperparameters, n_batches: int, device) -> list[tg.PackedBatch]:
    """n_batches windows of the calibration size, each made of rows of train_seq_len tokens sampled from the
    model (a fresh BOS-led document per row), one token at a time with the whole prefix recomputed."""
    rows = max(1, (h.train_batch_tokens // 8) // h.train_seq_len)
    generator = torch.Generator(device="cpu").manual_seed(h.seed)
    batches = []
    for _ in range(n_batches):
        tokens = np.full((rows, 1), h.bos_id, dtype=np.int64)
        for _ in range(h.train_seq_len):
            window = np.append(tokens.reshape(-1), h.bos_id)
            batch = tg.pack_window(window, h.bos_id, h.train_seq_len).to(device)
            layout = dict(cu_seqlens=batch.cu_seqlens, max_seqlen=batch.max_seqlen, positions=batch.positions)
            last = model.hidden(batch.inputs, batch.positions, layout).view(rows, tokens.shape[1], -1)[:, -1]
            logits = model.logits(last).float()
            logits = h.logit_softcap * torch.tanh(logits / h.logit_softcap)
            nxt = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator).numpy()
            nxt[nxt == h.bos_id] = h.bos_id + 1  # one document per row
            tokens = np.concatenate([tokens, nxt], axis=1)
        batches.append(tg.pack_window(np.append(tokens[:, :-1].reshape(-1), h.bos_id), h.bos_id,
                                      h.train_seq_len).to(device))
    return batches


def roundtrip_bpb(model: tg.GPT, hessians: dict, h, ctx, tables, val_tokens) -> float:
    state = tg.dequantize(tg.quantize_model(model, hessians, h))
    quantized = tg.GPT(h).to(ctx.device)
    quantized.load_state_dict({k: v.to(ctx.device) for k, v in state.items()})
    quantized.looping = h.num_loops > 0
    return tg.evaluate(quantized, val_tokens, tables, h, ctx)[1]


def main() -> int:
    h = tg.load_hyperparameters()
    ctx = tg.init_distributed()
    accum = tg.validate_hyperparameters(h, ctx.world_size)
    torch.manual_seed(h.seed)
    tables = tg.build_byte_tables(tg.load_tokenizer(h.tokenizer_path, h.vocab_size)).to(ctx.device)
    val_tokens = tg.load_val_tokens(h)
    model = tg.GPT(h).to(ctx.device)
    model.configure_kernels(ctx.device, h.fused_ce_enabled, h.fused_mlp_enabled)
    result = tg.train(model, h, ctx, accum, lambda msg, console=True: print(msg) if console else None)
    model.looping = h.num_loops > 0
    prequant = tg.evaluate(model, val_tokens, tables, h, ctx)[1]
    t0 = time.perf_counter()
    n_batches = max(1, h.gptq_calibration_batches // ctx.world_size)
    own = tg.collect_hessians(model, generated_batches(model, h, n_batches, ctx.device), ctx)
    seconds = time.perf_counter() - t0
    data_bpb = roundtrip_bpb(model, result["hessians"], h, ctx, tables, val_tokens)
    own_bpb = roundtrip_bpb(model, own, h, ctx, tables, val_tokens)
    print(f"prequant val_bpb:{prequant:.5f}")
    print(f"calibration:training_data roundtrip val_bpb:{data_bpb:.5f}")
    print(f"calibration:self_generated roundtrip val_bpb:{own_bpb:.5f} (generation + Hessians {seconds:.1f}s)")
    print(f"self_generated_minus_training_data bpb:{own_bpb - data_bpb:+.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
