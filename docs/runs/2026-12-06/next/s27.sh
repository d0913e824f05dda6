#!/usr/bin/env bash
# s27 [PACK]: issue 27's quantize-only and trained candidates (variants_s27.txt) over RECIPE=golf at the A/B scale,
# resumable over GPU sessions: PACK (an ab_logs.tar.xz brought back from an earlier call) continues its workdir;
# finished runs are skipped. One ab_runs call a line, in the file's order. Carry .gpu_data, built by
# `docs/runs/2026-12-05e/next/prepare.sh s22` (train shards 0-4, the whole val; 50 MB). A compile cache
# (.gpu_data/cache.tar.xz, unpacked below when present) no longer fits beside it: collect.sh's `cache` brought back
# 13.6 MB on 2026-12-07, and the tree (9.7 MB) with .gpu_data must stay under the 64 MiB a call carries. Measured
# on an H100: a base or trained run ~470 s cold (first step ~160 s, TTT compile ~134 s), ~225 s with the session's
# caches warm; a quantize-only run ~120 s after its base (docs/runs/2026-12-07c, 2026-12-07d). A trained line of
# three seeds ~920 s.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
G=.gpu_data; O=/tmp/g/out; W=/tmp/g/ab  # collect.sh reads /tmp/g/ab
# RECIPE=golf of 2026-12-06 (twenty-seventh session: the cut at 3,072) by its values, not its name: a workdir
# resumed after golf changes keeps its base
BASE=RECIPE=2135,TTT_CHUNK_SIZE=36,TTT_GRAD_STEPS=2,TTT_GRAD_STEPS_TOKENS=3072
mkdir -p $O $W
echo $$ > /tmp/g/s27.pid  # stop.sh stops this process group (setsid makes this shell its leader)
echo "start $(date -u +%T)" > $O/driver.txt  # a fresh log: collect.sh waits for this run's "all done"
[ -n "${1:-}" ] && tar -xJf "$1" -C $W
[ -f $G/cache.tar.xz ] && tar -xJf $G/cache.tar.xz -C $W
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } \
  > $O/gpu.txt 2>&1
ab() {  # ab NAME SEEDS: one ab_runs call of the variants in /tmp/g/variant.txt
  python3 scripts/ab_runs.py run --workdir $W --base "$BASE" --seeds "$2" --variants /tmp/g/variant.txt \
    --data $G/ds --tokenizer $G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model >> $O/ab_console.txt 2>&1 < /dev/null
  echo "ab $1 seeds $2 rc $? $(date -u +%T)" >> $O/driver.txt
}
# one call a line, its seeds in turn (the bases' first, seed by seed with the quantize-only runs, whose base weights
# do not travel): a session cut short leaves the first lines with whole seeds, not every line with fewer
V=docs/runs/2026-12-06/next/variants_s27.txt
# a line may begin with "seeds=LIST " (this script's own field, not ab_runs'): its seeds instead of 1,2,3
grep '^[^#]' $V | while read -r first rest; do
  seeds=1,2,3 line="$first $rest"
  if [[ $first == seeds=* ]]; then
    seeds=${first#seeds=} line=$rest
    if ! [[ $seeds =~ ^[0-9]+(,[0-9]+)*$ && -n $rest ]]; then echo "skipped, not seeds=N,N VARIANT: $first $rest" >> $O/driver.txt; continue; fi
  fi
  echo "$line" > /tmp/g/variant.txt; ab "$line" "$seeds"
done
echo "all done $(date -u +%T)" >> $O/driver.txt
rm -f /tmp/g/s27.pid
