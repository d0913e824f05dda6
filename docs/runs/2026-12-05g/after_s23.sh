#!/usr/bin/env bash
# After s23 (docs/runs/2026-12-05f/next/s23.sh), on this machine: the golf decision's numbers from what s23 brought
# back. OUT: the unpacked all.tar.xz's out/ folder; VAL: ../shared/data/proxy2_caseops's val shard, decompressed.
# (1) ttt_cost.py refitted on golf's own whole-val run (golf then: RECIPE=2135 + TTT_GRAD_STEPS=2, as --settings says) (the GPU that ran it, a second Adam step's own times),
# projecting #2135, golf and the stacks the A/B measures; checked against its own console. (2) The A/B report:
# against the base, steps2 (= RECIPE=golf) and c36_steps2, with the differences by position in the document
# weighted by the whole val's positions (the cut's whole-val cost).
set -eu
OUT=$(realpath "${1:?usage: after_s23.sh OUT VAL.bin}"); VAL=$(realpath "${2:?usage: after_s23.sh OUT VAL.bin}")
cd "$(dirname "$0")/../../.."
python3 scripts/ttt_cost.py --fit "$OUT/ttt_golf.json" --val "$VAL" --fixed 36.3 --limit 540 \
  --settings RECIPE=2135 TTT_GRAD_STEPS=2 PHASED_TTT_PREFIX_DOCS=246 \
  --variant r2135 TTT_GRAD_STEPS=1 \
  --variant s2t1024 TTT_GRAD_STEPS_TOKENS=1024 \
  --variant s2t2048 TTT_GRAD_STEPS_TOKENS=2048 \
  --variant c36_s2t1024 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS_TOKENS=1024 \
  --variant c36_s2t2048 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS_TOKENS=2048 \
  --variant c36_steps2 TTT_CHUNK_SIZE=36 \
  --variant golf17_t512 TTT_CHUNK_SIZE=36 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 TTT_GRAD_STEPS_TOKENS=512 \
  --check fitted "$OUT/ttt_golf.txt"
W=$(mktemp -d)
tar -xJf "$OUT/ab_logs.tar.xz" -C "$W"
python3 scripts/ab_runs.py report --workdir "$W" --against steps2 --against c36_steps2 --positions --weigh-val "$VAL"
