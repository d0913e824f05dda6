#!/usr/bin/env bash
# The cost-model table of docs/runs/2026-12-05f/ttt_cost.md: fitted on session 8's #2135 whole-val TTT (one H200),
# checked against session 17's golf (the three TTT candidates) cut short on the whole val (one H100, s21).
# VAL: ../shared/data/proxy2_caseops's val shard, decompressed. --fixed: artifact load 26.0 s (twelfth session)
# + roundtrip eval 10.3 s (the record's seed-42 log, 8x H100); --limit: issue 27's 540 s.
set -eu
VAL=$(realpath "${1:?usage: ttt_cost.sh VAL.bin}")
cd "$(dirname "$0")/../../.."
R=docs/runs
python3 scripts/ttt_cost.py --fit $R/2026-12-04b/ttt2135_ours_full_val_h200.json --val "$VAL" \
  --settings RECIPE=2135 PHASED_TTT_PREFIX_DOCS=246 --fixed 36.3 --limit 540 \
  --variant chunk36 TTT_CHUNK_SIZE=36 \
  --variant shortdoc TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 \
  --variant steps2 TTT_GRAD_STEPS=2 \
  --variant chunk36_shortdoc TTT_CHUNK_SIZE=36 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 \
  --variant steps2_chunk36 TTT_GRAD_STEPS=2 TTT_CHUNK_SIZE=36 \
  --variant steps2_shortdoc TTT_GRAD_STEPS=2 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 \
  --variant golf17 TTT_GRAD_STEPS=2 TTT_CHUNK_SIZE=36 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 \
  --variant steps3 TTT_GRAD_STEPS=3 \
  --variant steps2_c52 TTT_GRAD_STEPS=2 TTT_CHUNK_SIZE=52 \
  --variant steps2_b96 TTT_GRAD_STEPS=2 TTT_BATCH_SIZE=96 \
  --variant steps2_ctx2048 TTT_GRAD_STEPS=2 TTT_EVAL_SEQ_LEN=2048 \
  --check golf17 $R/2026-12-05f/ttt_golf17_full_val_h100_partial.txt \
  --check fitted $R/2026-12-04b/ttt2135_ours_full_val_h200.txt
