#!/usr/bin/env bash
# profile.sh: one RECIPE=2135 training step of ours profiled on one GPU with its Chrome trace (issue 26's host-idle
# lead: where the GPU waits for the host). Carry .gpu_data (prepare.sh s22: train shards, compile caches). ~4
# minutes cold, less with the carried caches. Writes $OUT/prof/ours.json, ours_off_trace.json.gz and the console;
# read the trace here with `python3 scripts/profile_vs_reference.py gaps ours_off_trace.json.gz`.
set -u
cd "$(dirname "$0")/../../.."
G=.gpu_data; D=/tmp/pd/datasets/fineweb10B_sp8192  # profile_vs_reference reads the record's DATA_DIR layout
mkdir -p $D $OUT/prof
for i in 0 1; do xz -dc $G/ds/fineweb_train_00000$i.bin.xz > $D/fineweb_train_00000$i.bin; done
[ -d /tmp/g/ab/cache ] || { mkdir -p /tmp/g/ab && [ -f $G/cache.tar.xz ] && tar -xJf $G/cache.tar.xz -C /tmp/g/ab; }
export PYTHONUNBUFFERED=1
CACHE_ENV=$(python3 scripts/ab_runs.py cache-env --workdir /tmp/g/ab) || exit 1
export $CACHE_ENV  # s27's caches
timeout 400 python3 scripts/profile_vs_reference.py --which ours --data-dir /tmp/pd --ours-env RECIPE=2135 \
  --trace --no-looping --warmup 3 --steps 3 --out $OUT/prof > $OUT/prof/console.txt 2>&1
echo "profile rc $?"; tail -25 $OUT/prof/console.txt
python3 scripts/profile_vs_reference.py gaps $OUT/prof/ours_off_trace.json.gz --top 15 | tee $OUT/prof/gaps.txt
