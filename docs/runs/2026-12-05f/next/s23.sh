#!/usr/bin/env bash
# s23: issue 27, RECIPE=golf (#2135's with TTT_GRAD_STEPS=2) against the 540 s evaluation rule. (1) golf's TTT on
# the whole proxy2_caseops val, random weights (TTT time does not depend on them): the measured projection that
# scripts/ttt_cost.py estimated at ~488 s on an H200 (+36.3 s load and roundtrip: ~524 s; ~550 s if the H100 is ~5%
# slower); (2) variants_s23.txt: chunk 36 paid for by TTT_GRAD_STEPS_TOKENS, and without the limit, eval-only on
# s19's three RECIPE=2135 bases, continuing s21's pack (its steps2 runs are golf's); (3) best effort: #2135's TTT
# on the whole val on this GPU (the H100 baseline of the fit, which was made on an H200). Carry .gpu_data, built
# by `docs/runs/2026-12-05e/next/prepare.sh s21`.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
R=docs/runs/2026-12-05f; G=.gpu_data; O=/tmp/g/out; W=/tmp/g/ab
TOK=$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
mkdir -p $O $W/artifacts /tmp/g/val
echo "start $(date -u +%T)" >> $O/driver.txt
tar -xJf $R/ab_logs.tar.xz -C $W && cp $G/bases/base_s*.golf $W/artifacts/ && chmod u+w $W/artifacts/*
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } \
  > $O/gpu.txt 2>&1
for f in $G/val_full/*.xz; do xz -dc $f > /tmp/g/val/$(basename $f .xz); done
ttt() {  # ttt NAME RECIPE: our TTT on the whole val, saved for ttt_cost.py (settings included); then batches
  # 10 (64 documents of ~1,500 tokens) and 40 (~510) under the profiler: where a chunk step's time goes
  TORCHINDUCTOR_CACHE_DIR=$W/cache/inductor TRITON_CACHE_DIR=$W/cache/triton TRITON_CACHE_AUTOTUNING=1 \
  RECIPE=$2 PHASED_TTT_PREFIX_DOCS=246 TORCH_LOGS=recompiles python3 scripts/bench_ttt_vs_reference.py \
    --val /tmp/g/val/fineweb_val_000000.bin --val-bytes /tmp/g/val/fineweb_val_bytes_000000.bin --tokenizer $TOK \
    --only ours --save $O/ttt_$1.json --profile 10 40 > $O/ttt_$1.txt 2>&1
  echo "ttt $1 rc $? $(date -u +%T)" >> $O/driver.txt
  grep projected $O/ttt_$1.txt >> $O/driver.txt  # collect.sh shows driver.txt: the projection with it
}
ttt golf golf
python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 --variants $R/next/variants_s23.txt \
  --data $G/val_thin --tokenizer $TOK >> $O/ab_console.txt 2>&1
echo "ab rc $? $(date -u +%T)" >> $O/driver.txt
ttt 2135 2135
echo "all done $(date -u +%T)" >> $O/driver.txt
