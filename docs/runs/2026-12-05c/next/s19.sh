#!/usr/bin/env bash
# s19: issue 27's A/B, training session: RECIPE=2135's three base seeds at the harness's scale (60 s, brotli).
# collect.sh brings back the pack and the three base artifacts (for s20's eval-only session).
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
python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 \
  --data .gpu_data/ds --tokenizer .gpu_data/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model > $O/ab_console.txt 2>&1
echo "bases done rc $? $(date -u +%T)" >> $O/driver.txt
python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 --variants .gpu_data/variants_s19.txt \
  --data .gpu_data/ds --tokenizer .gpu_data/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model >> $O/ab_console.txt 2>&1
echo "quant done rc $? $(date -u +%T)" >> $O/driver.txt
du -sh $W/cache $W/cache/* >> $O/driver.txt 2>&1
echo "all done $(date -u +%T)" >> $O/driver.txt
