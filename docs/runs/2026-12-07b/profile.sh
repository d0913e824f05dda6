#!/usr/bin/env bash
# profile.sh [BEFORE]: one RECIPE=2135 training step of ours profiled on one GPU (recurrence off) with its Chrome
# trace, as the whole 1-GPU step (8 micro-batches) and as an 8-GPU rank's share (1), each timed synced around every
# step and back to back (issue 26: where the GPU waits for the host). With BEFORE, a folder holding another
# train_gpt.py and its kernels.py (.git does not travel: make it here, e.g. `git show C:train_gpt.py`), the same two
# shapes then run those on the same GPU (no trace): the before of a change. Carry .gpu_data (prepare.sh s22: train
# shards, compile caches). ~2 minutes with the carried caches, ~1 more with BEFORE; it stops starting profiles
# PROFILE_SECONDS (420) after it starts, so that its files are packed inside the call. Writes $OUT/prof.tar.xz (a
# call brings back at most 8 files): m8/, m1/ (ours.json, ours_off_trace.json.gz, console.txt, gaps.txt) and
# before_m8/, before_m1/; read a trace anywhere with `python3 scripts/profile_vs_reference.py gaps TRACE`.
set -u
cd "$(dirname "$0")/../../.."
END=$((SECONDS + ${PROFILE_SECONDS:-420}))
G=.gpu_data; D=/tmp/pd/datasets/fineweb10B_sp8192  # profile_vs_reference reads the record's DATA_DIR layout
mkdir -p $D $OUT/prof
for i in 0 1; do xz -dc $G/ds/fineweb_train_00000$i.bin.xz > $D/fineweb_train_00000$i.bin; done
[ -d /tmp/g/ab/cache ] || { mkdir -p /tmp/g/ab && [ -f $G/cache.tar.xz ] && tar -xJf $G/cache.tar.xz -C /tmp/g/ab; }
export PYTHONUNBUFFERED=1
CACHE_ENV=$(python3 scripts/ab_runs.py cache-env --workdir /tmp/g/ab) || exit 1
export $CACHE_ENV  # s27's caches
profile() {  # profile NAME MICRO_BATCHES [ARGS...]: the first (cold) ~90 s, the others ~40 s with its caches
  local name=$1 m=$2 rc limit; shift 2; mkdir -p $OUT/prof/$name
  limit=$((END - SECONDS)); [ $limit -gt $((m == 8 ? 200 : 100)) ] && limit=$((m == 8 ? 200 : 100))
  if [ $limit -lt 30 ]; then echo "profile $name skipped: PROFILE_SECONDS spent"; return; fi
  timeout $limit python3 scripts/profile_vs_reference.py --which ours --data-dir /tmp/pd --ours-env RECIPE=2135 \
    --no-looping --warmup 3 --steps $((m == 8 ? 5 : 30)) --micro-batches $m --out $OUT/prof/$name "$@" \
    > $OUT/prof/$name/console.txt 2>&1
  rc=$?; echo "profile $name rc $rc"; grep -m3 'recurrence\|Error' $OUT/prof/$name/console.txt
}
for m in 8 1; do
  profile m$m $m --trace
  [ -f $OUT/prof/m$m/ours_off_trace.json.gz ] && timeout 60 python3 scripts/profile_vs_reference.py gaps \
    $OUT/prof/m$m/ours_off_trace.json.gz --top 12 > $OUT/prof/m$m/gaps.txt 2>&1 && head -12 $OUT/prof/m$m/gaps.txt
done
if [ -n "${1:-}" ]; then
  if [ -f "$1/train_gpt.py" ] && [ -f "$1/kernels.py" ]; then
    for m in 8 1; do profile before_m$m $m --train-gpt "$1/train_gpt.py"; done
  else echo "BEFORE $1 lacks train_gpt.py or kernels.py: no before"; fi
fi
tar -cJf $OUT/prof.tar.xz -C $OUT prof && rm -r $OUT/prof
