#!/usr/bin/env bash
# s29: TTT_GRAD_CHUNK_ONLY (ours, new this session: each TTT Adam step backpropagates through the scored chunk only,
# over the context's keys and values from the scoring pass). (1) its bpb, eval-only on s19's three RECIPE=2135
# bases (thin val, paired with the session-21 pack's untruncated c36_steps2 and c36_s2t2048): two steps everywhere,
# golf's (two to 2,048 tokens), three everywhere; (2) its whole-val TTT time on one GPU with two steps everywhere
# (`s26.sh golf_co2`: against golf's 453.9 s of projected TTT on an H100; on another GPU, rerun `s26.sh golf`
# too). Carry .gpu_data (`docs/runs/2026-12-05e/next/prepare.sh s21`). Collect with marker "s29 done": (1) ~15
# minutes, (2) ~8 more.
set -u
cd "$(dirname "$0")/../../../.."
bash docs/runs/2026-12-06/next/s28.sh docs/runs/2026-12-06b/next/variants_s29.txt
mv /tmp/g/out/driver.txt /tmp/g/out/driver_ab.txt
bash docs/runs/2026-12-06/next/s26.sh golf_co2
cat /tmp/g/out/driver_ab.txt >> /tmp/g/out/driver.txt
echo "s29 done $(date -u +%T)" >> /tmp/g/out/driver.txt
