"""Aten calls a TTT chunk step makes outside the compiled chunk function (session 19, CPU): the host work that
CUDA graphs of the compiled step alone would not remove. RECIPE=2135's adapters (69, recurrence on) on a toy batch
of 4 documents; the chunk function is replaced by a stub whose own calls and backward are not the compiled
step's, so the stub's rows (sum's expand, AccumulateGrad's new_empty_strided + copy_ of an expanded gradient)
are left out of the total. CODE: the folder whose train_gpt.py it imports (the twenty-fourth session added it, to
count e9598e0's code and its flat adapters: docs/runs/2026-12-06d/host_ops.txt; session 19 ran the repository's
as `host_ops.py TOKENIZER.model [TTT_GRAD_STEPS]`).

    python3 docs/runs/2026-12-05g/host_ops.py CODE TOKENIZER.model [TTT_GRAD_STEPS]
"""
import collections
import sys

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, sys.argv[1])
import train_gpt as tg  # noqa: E402

STUB_OPS = {"aten.expand", "aten.new_empty_strided", "aten.copy_", "aten.sum"}


class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls, self.inside = collections.Counter(), False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.inside:
            self.calls[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    h = tg.load_hyperparameters({"RECIPE": "2135", "TTT_BATCH_SIZE": "4", "TTT_EVAL_SEQ_LEN": "64",
                                 "TTT_CHUNK_SIZE": "16", "PHASED_TTT_PREFIX_DOCS": "0", "TTT_RECORD_WORLD_SIZE": "1",
                                 "TTT_LORA_RANK": "4", "TTT_GRAD_STEPS": sys.argv[3] if len(sys.argv) > 3 else "1",
                                 "TOKENIZER_PATH": sys.argv[2]})
    torch.manual_seed(0)
    model = tg.GPT(h)
    model.looping = True
    tables = tg.build_byte_tables(tg.load_tokenizer(h.tokenizer_path, h.vocab_size))
    tokens = np.concatenate([[1] + [5 + i % 50 for i in range(n - 1)] for n in (120, 130, 140, 150)] + [[1, 7]])
    plan = tg.plan_ttt(tokens, h)
    mode = Count()

    def stub(model, ids, chunk_pos, chunk_tgt, scale, *adapters, hint=None, **_):
        mode.inside = True
        nats = torch.zeros(chunk_tgt.shape) + sum(a.sum() for a in adapters) * 0
        mode.inside = False
        return nats if hint is None else (nats, torch.zeros(chunk_tgt.shape))
    state = tg.new_ttt_state(model, tokens, tables, h, tg.DistContext(), stub, plan,
                             tg.ngram_hints(tokens, h, "cpu"))
    model.requires_grad_(False)
    docs = max(plan.batches, key=len)  # a whole batch: its rows are TTT_BATCH_SIZE (warm A, no draw)
    with mode:
        tg.ttt_batch(state, docs, tg.batch_adapters(state, 0, len(docs)))
    steps = state.chunk_steps
    kept = {op: n for op, n in mode.calls.items() if op not in STUB_OPS}
    print(f"adapters:{len(tg.lora_shapes(h, True))} chunk_steps:{steps} TTT_GRAD_STEPS:{h.ttt_grad_steps} "
          f"aten calls a chunk step outside the chunk function: {sum(kept.values()) / steps:.1f} "
          f"(left out, the stub's: {sum(mode.calls[op] for op in STUB_OPS) / steps:.1f})")
    for op, n in sorted(kept.items(), key=lambda item: -item[1])[:12]:
        print(f"  {n / steps:7.1f} {op}")


if __name__ == "__main__":
    main()
