#!/usr/bin/env bash
# s26: issue 27, RECIPE=golf's evaluation time measured, not projected. Session 21 made golf chunk 36 + the second
# Adam step to each document's first 2,048 tokens (ttt_cost.py: 497.4 s of 8x H100 evaluation, from s23's run of
# the second step everywhere, before TTT's Adam became the fused kernel); the cut at 3,072 tokens did better by
# 0.0014 bpb over 3 seeds but projects to 539.6 s, on the 540 s line (575.7-585.2 s corrected by the model's
# under-prediction of chunk 36). (1) golf's TTT on the whole proxy2_caseops val (random weights: TTT time does
# not depend on them), batches 10 and 40 profiled; (2) the same with TTT_BATCH_SIZE=96 (ttt_cost: 470.8 s against
# golf's 497.4, fewer chunk steps; its peak memory, and whether the bpb moves with the batches' phase ends);
# (3) the cut at 3,072 tokens. Carry .gpu_data (`docs/runs/2026-12-05e/next/prepare.sh s21`); ~8 minutes for
# the first run (cold compile), ~6 for each later one: two collections, the last run may be cut short.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1
G=.gpu_data; O=/tmp/g/out; C=/tmp/g/cache
TOK=$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
mkdir -p $O /tmp/g/val
echo "start $(date -u +%T)" > $O/driver.txt  # a fresh log: collect.sh waits for this run's "all done"
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } \
  > $O/gpu.txt 2>&1
for f in $G/val_full/*.xz; do xz -dc $f > /tmp/g/val/$(basename $f .xz); done
ttt() {  # ttt NAME [SETTING=VALUE ...] -- [bench options]: RECIPE=golf's TTT on the whole val, saved for ttt_cost.py
  name=$1; shift; settings=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do settings+=("$1"); shift; done; shift
  env "${settings[@]}" TORCHINDUCTOR_CACHE_DIR=$C/inductor TRITON_CACHE_DIR=$C/triton TRITON_CACHE_AUTOTUNING=1 \
    RECIPE=golf PHASED_TTT_PREFIX_DOCS=246 python3 scripts/bench_ttt_vs_reference.py --only ours \
    --val /tmp/g/val/fineweb_val_000000.bin --val-bytes /tmp/g/val/fineweb_val_bytes_000000.bin --tokenizer $TOK \
    --save $O/ttt_$name.json "$@" > $O/ttt_$name.txt 2>&1
  echo "ttt $name rc $? $(date -u +%T)" >> $O/driver.txt
  grep "projected\|ours val_bpb" $O/ttt_$name.txt >> $O/driver.txt  # collect.sh shows driver.txt
}
want() { [ -z "$ONLY" ] || case " $ONLY " in *" $1 "*) true;; *) false;; esac; }  # s26.sh [NAME ...]: those only
ONLY="$*"
want golf && ttt golf -- --profile 10 40
want golf_b96 && ttt golf_b96 TTT_BATCH_SIZE=96 --
want golf_t3072 && ttt golf_t3072 TTT_GRAD_STEPS_TOKENS=3072 --
want golf_co2 && ttt golf_co2 TTT_GRAD_CHUNK_ONLY=1 TTT_GRAD_STEPS_TOKENS=0 --  # s29: two chunk-only steps everywhere
echo "all done $(date -u +%T)" >> $O/driver.txt
