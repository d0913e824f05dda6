#!/usr/bin/env bash
# wholeval.sh NAME [SETTING=VALUE ...]: RECIPE=golf's TTT on the whole proxy2_caseops val with the settings given,
# on an H100 only (the 8xH100 projection needs one; elsewhere it writes "NAME done" and stops): its scoring time,
# projected evaluation and peak memory -> "NAME done". Carry .gpu_data (`docs/runs/2026-12-05e/next/prepare.sh s21`).
#   mkdir -p /tmp/g/out; setsid nohup bash docs/runs/2026-12-06g/next/wholeval.sh b96 TTT_BATCH_SIZE=96 \
#     > /tmp/g/driver_console.txt 2>&1 < /dev/null & sleep 5; bash docs/runs/2026-12-05d/next/collect.sh 560 "b96 done"
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
name=${1:?usage: wholeval.sh NAME [SETTING=VALUE ...]}; shift
G=.gpu_data; O=/tmp/g/out; V=/tmp/g/val
TOK=$PWD/$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
rm -rf $O; mkdir -p $O $V  # a warm machine may hold an earlier call's files
echo "start $(date -u +%T)" > $O/driver.txt  # a fresh log: collect.sh waits for this run's marker
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } \
  > $O/gpu.txt 2>&1
for f in $G/val_full/*.xz; do xz -dc $f > $V/$(basename $f .xz); done
if head -1 $O/gpu.txt | grep -q H100; then  # the GPU line (the commit line may name one too)
  env "$@" RECIPE=golf PHASED_TTT_PREFIX_DOCS=246 python3 scripts/bench_ttt_vs_reference.py --only ours \
    --val $V/fineweb_val_000000.bin --val-bytes $V/fineweb_val_bytes_000000.bin --tokenizer $TOK \
    --save $O/ttt_golf_$name.json > $O/ttt_golf_$name.txt 2>&1
  echo "ttt golf_$name rc $? $(date -u +%T)" >> $O/driver.txt
  grep "projected\|ours val_bpb" $O/ttt_golf_$name.txt >> $O/driver.txt
else
  echo "not an H100: nothing run" >> $O/driver.txt
fi
echo "$name done $(date -u +%T)" >> $O/driver.txt
