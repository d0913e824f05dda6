"""The toy TTT evaluator's per-target scores from the train_gpt.py of CODE (twenty-fourth session, CPU): e9598e0's
adapter-by-adapter tensors and this session's flat ones must print the same bpb and score hash. tests/test_ttt.py's
toy setup (SMOKE model, two phases, two virtual GPUs), two Adam steps, full-window with weight decay and
chunk-only. Output: same_scores.txt.

    python3 docs/runs/2026-12-06d/same_scores.py CODE
"""
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
sys.path.insert(1, str(Path(__file__).resolve().parents[3] / "tests"))
import train_gpt as tg  # noqa: E402
import test_ttt  # noqa: E402  (its own `import train_gpt` finds CODE's loaded)

print(tg.__file__)
for env in ({"TTT_GRAD_STEPS": "2", "TTT_WEIGHT_DECAY": "0.5", "TTT_LORA_LR": "0.01"},
            {"TTT_GRAD_CHUNK_ONLY": "1", "TTT_GRAD_STEPS": "2", "TTT_LORA_LR": "0.01"}):
    h, model, tables, tokens = test_ttt._setup(**env)
    bpb, scores, _ = test_ttt._run_ttt(h, model, tables, tokens)
    print(env, repr(bpb), hashlib.sha256(scores.numpy().tobytes()).hexdigest()[:16])
