#!/usr/bin/env bash
# The GPU pipeline check, run on a lent GPU machine through the device tool (see docs/BENCHMARKS.md).
usage() {
  cat <<'USAGE'
Usage: [OUT=DIR] [NPROC=N] [PIPE_TRAIN_SECONDS=S] [PIPE_TIMEOUT=S] [GPU_DATA=DIR] [EXTRA_ENV='K=V ...']
       bash scripts/gpu_pipeline.sh [STAGE ...]

Stages, run in the order given (default: tests bench train):
  tests   the CUDA tests (tests/test_gpu.py)          -> $OUT/gpu_tests.txt
  bench   the Triton kernel benchmark                  -> $OUT/bench_kernels.txt
  train   the full record configuration on GPU_DATA (default .gpu_data: shards + fineweb_8192_bpe.model):
          train for PIPE_TRAIN_SECONDS (150) with torch.compile on NPROC GPUs (1), quantize, roundtrip, TTT,
          killed after PIPE_TIMEOUT (440) seconds        -> $OUT/<RUN_ID>.txt
OUT defaults to /tmp/gpu_out. Exits non-zero when a stage fails.
USAGE
}
set -u -o pipefail
STAGES=()
for arg in "$@"; do
  case $arg in
    -h|--help) usage; exit 0 ;;
    tests|bench|train) STAGES+=("$arg") ;;
    *) echo "gpu_pipeline.sh: unknown stage '$arg' (stages: tests bench train; --help for usage)" >&2; exit 2 ;;
  esac
done
[ ${#STAGES[@]} -eq 0 ] && STAGES=(tests bench train)
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
status=0
for stage in "${STAGES[@]}"; do
  case $stage in
    tests) python3 -m pytest -q tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.txt" || status=1 ;;
    bench) python3 scripts/bench_kernels.py 2>&1 | tee "$OUT/bench_kernels.txt" || status=1 ;;
    train)
      RUN=${RUN_ID:-gpu_${NPROC}x_$(date +%H%M%S)}
      env DATA_PATH=$DATA TOKENIZER_PATH=$DATA/fineweb_8192_bpe.model MAX_WALLCLOCK_SECONDS=$SECONDS_CAP \
          RUN_ID=$RUN ${EXTRA_ENV:-} timeout $TIMEOUT_CAP torchrun --standalone --nproc_per_node=$NPROC train_gpt.py 2>&1 \
          | tail -n 80 || status=1
      cp "logs/$RUN.txt" "$OUT/" || status=1 ;;
  esac
done
exit $status
