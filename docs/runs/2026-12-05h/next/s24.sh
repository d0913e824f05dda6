#!/usr/bin/env bash
# s24: what s23's lost machine left undone (issue 27). s23 measured RECIPE=golf's whole-val TTT (projected 506.7 s
# of evaluation on 8x H100, within 540 s) before its machine was taken back; the refit ttt_cost.py projects chunk 36
# with the second Adam step to each document's first 2,048 tokens at 497.4 s and golf17 with it to 512 at 470.8 s.
# Eval-only on s19's three RECIPE=2135 bases, continuing the s21 pack, one variant's three seeds before the next's
# (a cut-short call still leaves a variant whole): (1) c36_s2t2048, (2) golf17_t512, (3) c36_steps2 (over 540 s:
# the reference of the cut's cost by position). Carry .gpu_data, built by `docs/runs/2026-12-05e/next/prepare.sh s21`.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
G=.gpu_data; O=/tmp/g/out; W=/tmp/g/ab
TOK=$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
mkdir -p $O $W/artifacts
echo "start $(date -u +%T)" >> $O/driver.txt
tar -xJf docs/runs/2026-12-05f/ab_logs.tar.xz -C $W && cp $G/bases/base_s*.golf $W/artifacts/ && chmod u+w $W/artifacts/*
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } \
  > $O/gpu.txt 2>&1
while read -r line; do  # one variants file a variant: its three seeds run before the next variant's
  echo "$line" > /tmp/g/variant.txt
  python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 --variants /tmp/g/variant.txt \
    --data $G/val_thin --tokenizer $TOK >> $O/ab_console.txt 2>&1
  rc=$?; echo "ab ${line#eval } rc $rc $(date -u +%T)" >> $O/driver.txt
done < docs/runs/2026-12-05h/next/variants_s24.txt
echo "all done $(date -u +%T)" >> $O/driver.txt
