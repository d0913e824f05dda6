#!/usr/bin/env bash
# The projections of docs/BENCHMARKS.md's twenty-first session: scripts/ttt_cost.py fitted on s23's whole-val TTT
# (one H100; golf was then RECIPE=2135 + TTT_GRAD_STEPS=2, named by --settings) for chunk 36 with the second Adam
# step cut at 2,048 (today's RECIPE=golf), 2,560, 3,072 and 4,096 tokens or not cut, and checked against the one
# chunk-36 run measured on an H100 (session 17's golf17, cut short after 21 batches; before the fused Adam, as
# the fit). VAL: ../shared/data/proxy2_caseops's val shard, decompressed.
set -eu
VAL=$(realpath "${1:?usage: ttt_cost.sh VAL.bin}")
cd "$(dirname "$0")"
FIT=$(mktemp --suffix .json); trap 'rm -f $FIT' EXIT
xz -dc ../2026-12-05h/ttt_golf_full_val_h100.json.xz > "$FIT"
python3 ../../../scripts/ttt_cost.py --fit "$FIT" --val "$VAL" --fixed 36.3 --limit 540 \
  --settings RECIPE=2135 TTT_GRAD_STEPS=2 PHASED_TTT_PREFIX_DOCS=246 \
  --variant c36_s2t2048 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS_TOKENS=2048 \
  --variant c36_s2t2560 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS_TOKENS=2560 \
  --variant c36_s2t3072 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS_TOKENS=3072 \
  --variant c36_s2t4096 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS_TOKENS=4096 \
  --variant c36_steps2 TTT_CHUNK_SIZE=36 \
  --variant golf17 TTT_CHUNK_SIZE=36 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 \
  --check golf17 ../2026-12-05f/ttt_golf17_full_val_h100_partial.txt
