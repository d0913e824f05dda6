#!/usr/bin/env bash
# The GPU pipeline check, run on a lent GPU machine through the device tool (see docs/BENCHMARKS.md):
#   GPU tests, the kernel benchmark, then the full record configuration on the proxy data:
#   train for $TRAIN_SECONDS with torch.compile, quantize, roundtrip, TTT. Writes logs to $OUT.
# Usage: OUT=/tmp/out NPROC=1 PIPE_TRAIN_SECONDS=150 PIPE_TIMEOUT=440 bash scripts/gpu_pipeline.sh [tests] [bench] [train]
set -u -o pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
OUT=${OUT:-/tmp/gpu_out}; NPROC=${NPROC:-1}; SECONDS_CAP=${PIPE_TRAIN_SECONDS:-150}; TIMEOUT_CAP=${PIPE_TIMEOUT:-440}
unset PIPE_TRAIN_SECONDS PIPE_TIMEOUT  # train_gpt.py rejects unknown knob-like env vars
DATA=${GPU_DATA:-.gpu_data}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then  # wheels the GPU image lacks (brotli)
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
for stage in "${@:-tests bench train}"; do
  case $stage in
    tests) python3 -m pytest -q tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt" ;;
    bench) python3 scripts/bench_kernels.py 2>&1 | tee "$OUT/bench_kernels.txt" ;;
    train)
      RUN=${RUN_ID:-gpu_${NPROC}x_$(date +%H%M%S)}
      env DATA_PATH=$DATA TOKENIZER_PATH=$DATA/fineweb_8192_bpe.model MAX_WALLCLOCK_SECONDS=$SECONDS_CAP \
          RUN_ID=$RUN ${EXTRA_ENV:-} timeout $TIMEOUT_CAP torchrun --standalone --nproc_per_node=$NPROC train_gpt.py 2>&1 | tail -n 80
      cp logs/$RUN.txt "$OUT/" ;;
  esac
done
