#!/usr/bin/env bash
# s20: issue 27's A/B, eval-only session on s19's bases (docs/runs/2026-12-05d): the workdir is s19's pack, its
# three base artifacts and compile caches (carry/, tracked: they travel with the checkout); base_s3, cut during its
# TTT, is finished from its artifact (base_s3_finish); then the eval-only variants, seed by seed. No train shards.
# Carry .gpu_data with whl/ (brotli) and the CaseOps tokenizer.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
R=docs/runs/2026-12-05d; O=/tmp/g/out; W=/tmp/g/ab
mkdir -p $O $W/artifacts
echo "start $(date -u +%T)" >> $O/driver.txt
tar -xJf $R/ab_logs.tar.xz -C $W && cp $R/carry/base_s*.golf $W/artifacts/ && chmod u+w $W/artifacts/*
tar -xJf $R/carry/cache.tar.xz -C $W && du -sh $W/cache >> $O/driver.txt
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_data/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } > $O/gpu.txt 2>&1
python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 --variants $R/next/variants_s20.txt \
  --data $R/carry/val --tokenizer .gpu_data/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model > $O/ab_console.txt 2>&1
echo "ab done rc $? $(date -u +%T)" >> $O/driver.txt
echo "all done $(date -u +%T)" >> $O/driver.txt
