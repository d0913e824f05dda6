#!/usr/bin/env bash
# The cost-model table of docs/runs/2026-12-05g/ttt_cost.md: session 18's fit (#2135's whole-val TTT, one H200),
# projecting the second Adam step limited to the first TTT_GRAD_STEPS_TOKENS tokens of each document, alone and
# beside chunk 36 and short-document chunks. VAL: ../shared/data/proxy2_caseops's val shard, decompressed.
# --fixed: artifact load 26.0 s (twelfth session) + roundtrip eval 10.3 s (the record's seed-42 log, 8x H100);
# --limit: issue 27's 540 s.
set -eu
VAL=$(realpath "${1:?usage: ttt_cost.sh VAL.bin}")
cd "$(dirname "$0")/../../.."
R=docs/runs
python3 scripts/ttt_cost.py --fit $R/2026-12-04b/ttt2135_ours_full_val_h200.json --val "$VAL" \
  --settings RECIPE=2135 PHASED_TTT_PREFIX_DOCS=246 --fixed 36.3 --limit 540 \
  --variant steps2 TTT_GRAD_STEPS=2 \
  --variant s2t512 TTT_GRAD_STEPS=2 TTT_GRAD_STEPS_TOKENS=512 \
  --variant s2t1024 TTT_GRAD_STEPS=2 TTT_GRAD_STEPS_TOKENS=1024 \
  --variant s2t2048 TTT_GRAD_STEPS=2 TTT_GRAD_STEPS_TOKENS=2048 \
  --variant c36_s2t1024 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS=2 TTT_GRAD_STEPS_TOKENS=1024 \
  --variant c36_s2t1536 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS=2 TTT_GRAD_STEPS_TOKENS=1536 \
  --variant c36_s2t2048 TTT_CHUNK_SIZE=36 TTT_GRAD_STEPS=2 TTT_GRAD_STEPS_TOKENS=2048 \
  --variant sd_s2t1024 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 TTT_GRAD_STEPS=2 TTT_GRAD_STEPS_TOKENS=1024 \
  --variant golf17_t256 TTT_CHUNK_SIZE=36 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 TTT_GRAD_STEPS=2 \
    TTT_GRAD_STEPS_TOKENS=256 \
  --variant golf17_t512 TTT_CHUNK_SIZE=36 TTT_SHORT_SCORE_FIRST_STEPS=256:8,2000:24 TTT_GRAD_STEPS=2 \
    TTT_GRAD_STEPS_TOKENS=512 \
  --variant steps3_t512 TTT_GRAD_STEPS=3 TTT_GRAD_STEPS_TOKENS=512 \
  --variant steps3_t1024 TTT_GRAD_STEPS=3 TTT_GRAD_STEPS_TOKENS=1024
