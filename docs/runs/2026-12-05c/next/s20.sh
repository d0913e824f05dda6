#!/usr/bin/env bash
# s20: issue 27's A/B, eval-only session on s19's bases: carry .gpu_data with val/ (val + sidecar), art/ (s19's
# base_s*.golf), pack/ab_logs.tar.xz (s19's pack), variants.txt; no train shards (64 MiB: artifacts or shards).
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
O=/tmp/g/out; W=/tmp/g/ab
mkdir -p $O $W/artifacts
echo "start $(date -u +%T)" >> $O/driver.txt
tar -xJf .gpu_data/pack/ab_logs.tar.xz -C $W && cp .gpu_data/art/base_s*.golf $W/artifacts/
[ -f .gpu_data/cache.tar.xz ] && tar -xJf .gpu_data/cache.tar.xz -C $W  # s19's compile caches, if they came back
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_data/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } > $O/gpu.txt 2>&1
cp .gpu_data/variants_s20.txt $O/
python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 --variants .gpu_data/variants_s20.txt \
  --data .gpu_data/val --tokenizer .gpu_data/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model > $O/ab_console.txt 2>&1
echo "ab done rc $? $(date -u +%T)" >> $O/driver.txt
echo "all done $(date -u +%T)" >> $O/driver.txt
