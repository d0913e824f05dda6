#!/usr/bin/env bash
# s17 (session 15, 2026-12-05): issue 27's A/B on one GPU: RECIPE=2135 trained x seeds 1-3 at the harness's scale
# (60 s, brotli), then eval-only and quantize-only variants on each seed's base (variants.txt), then the report.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
O=/tmp/g/out; W=/tmp/g/ab
mkdir -p $O
echo "start $(date -u +%T)" >> $O/driver.txt
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_data/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; git log --oneline -1;
  python3 -c "import torch, triton, brotli; print(torch.__version__, triton.__version__, brotli.__version__)"; } > $O/gpu.txt 2>&1
cp .gpu_data/variants.txt $O/
python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 --variants .gpu_data/variants.txt \
  --data .gpu_data/ds --tokenizer .gpu_data/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model > $O/ab_console.txt 2>&1
echo "ab done rc $? $(date -u +%T)" >> $O/driver.txt
echo "all done $(date -u +%T)" >> $O/driver.txt
