#!/usr/bin/env bash
# s22: issue 27's A/B, quantize-only candidates (variants_s22.txt) on fresh RECIPE=2135 bases, seed by seed: each
# base writes its unquantized weights, which its candidates quantize again (s19's bases did not keep theirs).
# Starts warm from s19's compile caches. Carry .gpu_data, built by `next/prepare.sh s22`.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
R=docs/runs/2026-12-05e; G=.gpu_data; O=/tmp/g/out; W=/tmp/g/ab  # collect.sh reads /tmp/g/ab
mkdir -p $O $W
echo "start $(date -u +%T)" >> $O/driver.txt
tar -xJf $G/cache.tar.xz -C $W && du -sh $W/cache >> $O/driver.txt
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } > $O/gpu.txt 2>&1
python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 --variants $R/next/variants_s22.txt \
  --data $G/ds --tokenizer $G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model > $O/ab_console.txt 2>&1
echo "ab done rc $? $(date -u +%T)" >> $O/driver.txt
echo "all done $(date -u +%T)" >> $O/driver.txt
