"""scripts/check_ttt_codegen.py on the train_gpt.py of another folder (twenty-fourth session, CPU): each TTT graph's
kernel launches in its generated wrapper, bf16 activations as on the GPU, for code before and after the flat
adapters. Code from before activation_dtype existed gets its embedding cast to bf16 here (its adapters follow
the activations' dtype). Outputs: count_launches.txt.

    RECIPE=golf python3 docs/runs/2026-12-06d/count_launches.py CODE [--toy]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, sys.argv[1])
import train_gpt as tg  # noqa: E402  (CODE's: check_ttt_codegen's own import finds it loaded)

if not hasattr(tg, "activation_dtype"):
    def embed(self, ids):
        x = self.tok_emb(ids).to(torch.bfloat16)
        return tg.rms_norm(x if self.smear_gate is None else self.smear(x, ids))
    tg.GPT.embed = embed
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import check_ttt_codegen  # noqa: E402

sys.exit(check_ttt_codegen.main(sys.argv[2:]))
