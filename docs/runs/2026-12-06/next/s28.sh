#!/usr/bin/env bash
# s28: s26 measured RECIPE=golf's whole-val TTT on one H100 (projected 490.2 s of 8x H100 evaluation); ttt_cost.py
# refitted on it projects the second Adam step to 2,560 tokens at 515.4 s and to 3,072 tokens with batches of 96
# documents at 505.9 s. Their bpb, eval-only on s19's three RECIPE=2135 bases, continuing this session's pack
# (c36_s2t2048 and c36_s2t3072 are in it), one variant's three seeds before the next's. Carry .gpu_data, built by
# `docs/runs/2026-12-05e/next/prepare.sh s21`. s28.sh [VARIANTS]: another variants file (one eval line a variant).
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
G=.gpu_data; O=/tmp/g/out; W=/tmp/g/ab
TOK=$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
mkdir -p $O $W/artifacts
echo "start $(date -u +%T)" > $O/driver.txt  # a fresh log: collect.sh waits for this run's "all done"
tar -xJf docs/runs/2026-12-06/ab_logs.tar.xz -C $W && cp $G/bases/base_s*.golf $W/artifacts/ && chmod u+w $W/artifacts/*
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } \
  > $O/gpu.txt 2>&1
while read -r line; do
  echo "$line" > /tmp/g/variant.txt
  python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 --variants /tmp/g/variant.txt \
    --data $G/val_thin --tokenizer $TOK >> $O/ab_console.txt 2>&1
  rc=$?; echo "ab ${line#eval } rc $rc $(date -u +%T)" >> $O/driver.txt
done < "${1:-docs/runs/2026-12-06/next/variants_s28.txt}"
echo "all done $(date -u +%T)" >> $O/driver.txt
