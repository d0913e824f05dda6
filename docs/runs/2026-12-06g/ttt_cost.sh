#!/usr/bin/env bash
# The projections of docs/BENCHMARKS.md's twenty-seventh session: scripts/ttt_cost.py fitted on s32's whole-val TTT
# of RECIPE=golf with the second Adam step to 3,072 tokens (one H100, main at 02adfc3: flat adapters, cast-once
# weights, q/v/o's shared first product), for the TTT batch size, the 2,048 and 4,096 cuts and progressive
# context's evaluation at 3,072 tokens; checked against s26's whole-val run of the 2,048 cut (the same kind of GPU,
# code of 63e71ae, before the flat adapters). VAL: ../shared/data/proxy2_caseops's val shard, decompressed.
set -eu
VAL=$(realpath "${1:?usage: ttt_cost.sh VAL.bin}")
cd "$(dirname "$0")"
FIT=$(mktemp --suffix .json); trap 'rm -f $FIT' EXIT
xz -dc ttt_golf_t3072_h100.json.xz > "$FIT"
python3 ../../../scripts/ttt_cost.py --fit "$FIT" --val "$VAL" --fixed 36.3 --limit 540 \
  --variant b96 TTT_BATCH_SIZE=96 \
  --variant b128 TTT_BATCH_SIZE=128 \
  --variant t2048 TTT_GRAD_STEPS_TOKENS=2048 \
  --variant t4096 TTT_GRAD_STEPS_TOKENS=4096 \
  --variant t4096_b96 TTT_GRAD_STEPS_TOKENS=4096 TTT_BATCH_SIZE=96 \
  --variant steps2_all TTT_GRAD_STEPS_TOKENS=0 \
  --variant progctx TTT_EVAL_SEQ_LEN=3072 \
  --variant progctx_b96 TTT_EVAL_SEQ_LEN=3072 TTT_BATCH_SIZE=96 \
  --variant progctx_t2048 TTT_EVAL_SEQ_LEN=3072 TTT_GRAD_STEPS_TOKENS=2048 \
  --check t2048 ../2026-12-06b/ttt_golf_full_val_h100.txt
