#!/usr/bin/env bash
# profile.sh: one RECIPE=2135 training step of ours profiled on one GPU with its Chrome trace (issue 26's host-idle
# lead: where the GPU waits for the host). Carry .gpu_data (prepare.sh s22: train shards, compile caches). ~4
# minutes cold, less with the carried caches. Writes $OUT/prof/m8/ and m1/ (ours.json, ours_off_trace.json.gz, console, gaps);
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
# the whole 1-GPU step (8 micro-batches), then an 8-GPU rank's share (1): synced each step vs back to back
for m in 8 1; do
  P=$OUT/prof/m$m; mkdir -p $P
  timeout $((m == 8 ? 300 : 180)) python3 scripts/profile_vs_reference.py --which ours --data-dir /tmp/pd --ours-env RECIPE=2135 \
    --trace --no-looping --warmup 3 --steps $((m == 8 ? 5 : 30)) --micro-batches $m --out $P > $P/console.txt 2>&1
  echo "profile m$m rc $?"; grep -m3 'recurrence\|Error' $P/console.txt
  python3 scripts/profile_vs_reference.py gaps $P/ours_off_trace.json.gz --top 12 > $P/gaps.txt 2>&1; head -40 $P/gaps.txt
done
