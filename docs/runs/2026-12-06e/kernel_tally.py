"""The kernels in each TTT graph's generated wrapper, by kind (twenty-fifth session, CPU): scripts/check_ttt_codegen.py
on the train_gpt.py of another folder, its Triton kernels tallied by their fused op names (digits dropped) and its
extern calls by name. Shows what a change of the chunk step's code removes (here: the per-use weight casts).

    RECIPE=golf python3 docs/runs/2026-12-06e/kernel_tally.py CODE [--toy]
"""
import collections
import re
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
import train_gpt  # noqa: E402,F401  (CODE's: check_ttt_codegen's own import finds it loaded)

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
import check_ttt_codegen  # noqa: E402

count_launches = check_ttt_codegen.wrapper_launches
tallies = []


def tally(source: str):
    body = source[source.find("def call("):]
    kinds = collections.Counter(re.sub(r"_\d+$", "", k) for k in re.findall(r"(triton_\w+)\.run\(", body))
    kinds.update(re.findall(r"(?:extern_kernels|torch\.ops)\.[\w.]+(?=\()", body))
    tallies.append(kinds)
    return count_launches(source)


check_ttt_codegen.wrapper_launches = tally
rc = check_ttt_codegen.main(sys.argv[2:])
for i, kinds in enumerate(tallies):
    print(f"graph {i}: the 12 most launched kernels")
    for name, n in kinds.most_common(12):
        print(f"  {n:4d}  {name[:110]}")
sys.exit(rc)
