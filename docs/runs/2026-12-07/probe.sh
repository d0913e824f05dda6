#!/usr/bin/env bash
# probe.sh [BATCH ...]: RECIPE=golf's TTT peak memory at each TTT_BATCH_SIZE given (default 96 64) on
# .gpu_data/probe (make_probe.py: 96 documents of 4,000 tokens, one batch whose rows all reach the full window),
# without phases. A call: `bash docs/runs/2026-12-07/probe.sh 96 64`, one run a batch size, each `timeout 200`:
# ~3 minutes a run cold, ~1 warm. It shares s27's compile caches (/tmp/g/ab/cache, as ab_runs sets them): after s27
# on the same machine, golf's TTT graphs are warm (the batch's rows are a dynamic dim). Each run's console in
# $OUT/probe_bN.txt, its peak_memory_gib in the last line (the warm-up's full batch at the full window counts).
set -u
cd "$(dirname "$0")/../../.."
G=.gpu_data; P=/tmp/probe
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
CACHE_ENV=$(python3 scripts/ab_runs.py cache-env --workdir /tmp/g/ab) || exit 1
export $CACHE_ENV  # as ab_runs sets them
mkdir -p $P; for f in $G/probe/*.xz; do xz -dc $f > $P/$(basename $f .xz); done
# a fresh machine starts from the carried caches (prepare.sh's cache.tar.xz), as s27.sh does
[ -d /tmp/g/ab/cache ] || { mkdir -p /tmp/g/ab && [ -f $G/cache.tar.xz ] && tar -xJf $G/cache.tar.xz -C /tmp/g/ab; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
[ $# -gt 0 ] || set -- 96 64
for b in "$@"; do
  TTT_BATCH_SIZE=$b RECIPE=golf PHASED_TTT_PREFIX_DOCS=0 timeout 200 python3 scripts/bench_ttt_vs_reference.py \
    --only ours --val $P/fineweb_val_000000.bin --val-bytes $P/fineweb_val_bytes_000000.bin \
    --tokenizer $PWD/$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model > $OUT/probe_b$b.txt 2>&1
  echo "b$b rc $?"; grep "ttt_plan\|ttt_timing\|ours val_bpb" $OUT/probe_b$b.txt
done
