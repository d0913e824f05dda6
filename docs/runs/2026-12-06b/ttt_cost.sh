#!/usr/bin/env bash
# The projections of docs/BENCHMARKS.md's twenty-second session: scripts/ttt_cost.py fitted on s26's whole-val TTT
# of RECIPE=golf (one H100, main at 63e71ae, TTT's fused Adam), for the second Adam step's cut, the TTT batch size
# and progressive context's evaluation at 3,072 tokens; checked against the two earlier H100 runs, both before the
# fused Adam: s23's second step everywhere at chunk 48 (golf of sessions 18-20) and session 17's golf17 (cut short).
# VAL: ../shared/data/proxy2_caseops's val shard, decompressed.
set -eu
VAL=$(realpath "${1:?usage: ttt_cost.sh VAL.bin}")
cd "$(dirname "$0")"
FIT=$(mktemp --suffix .json); trap 'rm -f $FIT' EXIT
xz -dc ttt_golf_full_val_h100.json.xz > "$FIT"
python3 ../../../scripts/ttt_cost.py --fit "$FIT" --val "$VAL" --fixed 36.3 --limit 540 \
  --variant golf_b96 TTT_BATCH_SIZE=96 \
  --variant golf_b128 TTT_BATCH_SIZE=128 \
  --variant t2560 TTT_GRAD_STEPS_TOKENS=2560 \
  --variant t3072 TTT_GRAD_STEPS_TOKENS=3072 \
  --variant t3072_b96 TTT_GRAD_STEPS_TOKENS=3072 TTT_BATCH_SIZE=96 \
  --variant t4096 TTT_GRAD_STEPS_TOKENS=4096 \
  --variant c36_steps2 TTT_GRAD_STEPS_TOKENS=0 \
  --variant progctx TTT_EVAL_SEQ_LEN=3072 \
  --variant progctx_t1024 TTT_EVAL_SEQ_LEN=3072 TTT_GRAD_STEPS_TOKENS=1024 \
  --variant steps2 TTT_CHUNK_SIZE=48 TTT_GRAD_STEPS_TOKENS=0 \
  --variant golf17 TTT_GRAD_STEPS_TOKENS=0 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 \
  --check steps2 ../2026-12-05h/ttt_golf_full_val_h100.txt \
  --check golf17 ../2026-12-05f/ttt_golf17_full_val_h100_partial.txt
