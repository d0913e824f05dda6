"""An issue-26 lead (twenty-fifth session, CPU): how many kernels of the training step's generated forward only
cast a weight. The training loss (GPT.packed_loss, as CompiledLoss compiles it) through Inductor's Triton code
generation on a CPU (scripts/check_ttt_codegen.py's backend), bf16 activations as on the GPU, one packed row of
256 tokens, recurrence on; its forward and backward wrappers' Triton launches tallied by kernel.

    RECIPE=golf SMOKE=1 python3 docs/runs/2026-12-06e/train_casts.py
"""
import collections
import os
import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]
import check_ttt_codegen as check  # noqa: E402
import train_gpt as tg  # noqa: E402

tallies, count_launches = [], check.wrapper_launches


def tally(source: str):
    body = source[source.find("def call("):]
    tallies.append(collections.Counter(re.sub(r"_\d+$", "", k) for k in re.findall(r"(triton_\w+)\.run\(", body)))
    return count_launches(source)


check.wrapper_launches = tally
h = tg.load_hyperparameters({"DATA_PATH": "data", **os.environ})
check.generate_only()
tg.activation_dtype = lambda device: torch.bfloat16
torch.manual_seed(0)
model = tg.GPT(h)
model.looping = h.num_loops > 0
results = []
loss_fn = torch.compile(model.packed_loss, backend=check.codegen_backend(results))
T = 256
ids, targets, positions = torch.randint(0, h.vocab_size, (T,)), torch.randint(0, h.vocab_size, (T,)), torch.arange(T)
loss_fn(ids, targets, model.rotary(positions), positions, torch.tensor([0, T], dtype=torch.int32), T).backward()
for name, (nodes, error, launches), kinds in zip(("forward", "backward"), results, tallies):
    casts = kinds["triton_poi_fused__to_copy"]
    print(f"{name}: {nodes} nodes, {error or 'code generated'}: {launches[0]} Triton launches ({casts} of them only "
          f"cast), {launches[1]} extern calls")
