#!/usr/bin/env bash
# The cost-model table of docs/runs/2026-12-05h/ttt_cost.md: scripts/ttt_cost.py refitted on s23's measured
# RECIPE=golf whole-val TTT (one H100; golf was then RECIPE=2135 + TTT_GRAD_STEPS=2, which --settings names: the
# JSON stores the recipe's name only, and golf has changed since), projecting
# #2135's TTT and the stacks that may beat golf, and checked against the run's own console. VAL:
# ../shared/data/proxy2_caseops's val shard, decompressed. --fixed and --limit as in ../2026-12-05g/ttt_cost.sh.
set -eu
VAL=$(realpath "${1:?usage: ttt_cost.sh VAL.bin}")
cd "$(dirname "$0")"
FIT=$(mktemp --suffix .json); trap 'rm -f $FIT' EXIT
xz -dc ttt_golf_full_val_h100.json.xz > "$FIT"
python3 ../../../scripts/ttt_cost.py --fit "$FIT" --val "$VAL" --fixed 36.3 --limit 540 \
  --settings RECIPE=2135 TTT_GRAD_STEPS=2 PHASED_TTT_PREFIX_DOCS=246 \
  --variant r2135 TTT_GRAD_STEPS=1 \
  --variant c36 TTT_GRAD_STEPS=1 TTT_CHUNK_SIZE=36 \
  --variant sd TTT_GRAD_STEPS=1 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 \
  --variant c36_sd TTT_GRAD_STEPS=1 TTT_CHUNK_SIZE=36 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 \
  --variant s2t1024 TTT_GRAD_STEPS_TOKENS=1024 \
  --variant s2t2048 TTT_GRAD_STEPS_TOKENS=2048 \
  --variant c36_s2t1024 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS_TOKENS=1024 \
  --variant c36_s2t2048 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS_TOKENS=2048 \
  --variant c36_s2t4096 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS_TOKENS=4096 \
  --variant c36_steps2 TTT_CHUNK_SIZE=36 \
  --variant c40_steps2 TTT_CHUNK_SIZE=40 \
  --variant c36_sd_s2t2048 TTT_CHUNK_SIZE=36 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 TTT_GRAD_STEPS_TOKENS=2048 \
  --variant golf17_t512 TTT_CHUNK_SIZE=36 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 TTT_GRAD_STEPS_TOKENS=512 \
  --variant golf17 TTT_CHUNK_SIZE=36 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 \
  --check fitted ttt_golf_full_val_h100.txt
