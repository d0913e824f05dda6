#!/usr/bin/env bash
# s32 (twenty-sixth session's plan for the next): on an H100, (1) RECIPE=golf with the second Adam step to 3,072
# tokens on the whole val (533.3 s projected by the refit on the old code; the flat adapters and cast-once weights
# made TTT scoring 0.81x on a host-bound probe) -> "t3072 done"; (2) s30's full-window probe on this tree and
# (3) on 5f1fd47's (before q, v and o shared their first product), one after the other on the same machine:
# that change's ratio -> "s32 done". On another GPU only (2) and (3): the H100 projection needs an H100.
# Carry .gpu_data (`docs/runs/2026-12-05e/next/prepare.sh s21`, then
# `mkdir .gpu_data/base; git archive 5f1fd47 train_gpt.py kernels.py scripts | tar -x -C .gpu_data/base`).
# Collect: collect.sh 520 "t3072 done", then collect.sh SECONDS_LEFT_LESS_120 "s32 done".
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
G=.gpu_data; O=/tmp/g/out; BASE=/tmp/g/base; V=/tmp/g/val
TOK=$PWD/$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
mkdir -p $O $V $BASE
echo "start $(date -u +%T)" > $O/driver.txt  # a fresh log: collect.sh waits for this run's marker
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } \
  > $O/gpu.txt 2>&1
for f in $G/val_full/*.xz; do xz -dc $f > $V/$(basename $f .xz); done
cp -r $G/base/. $BASE/ || echo "no $G/base: the last probe will fail" >> $O/driver.txt
VAL=(--val $V/fineweb_val_000000.bin --val-bytes $V/fineweb_val_bytes_000000.bin --tokenizer $TOK)
probe() {  # probe NAME TREE [SETTING=VALUE ...]: s30's probe documents, batch 0 profiled, TREE's code
  name=$1; tree=$2; shift 2
  (cd $tree && env "$@" TORCH_LOGS=recompiles,graph_breaks RECIPE=golf PHASED_TTT_PREFIX_DOCS=5 \
    TTT_GRAD_STEPS_TOKENS=0 python3 scripts/bench_ttt_vs_reference.py --only ours "${VAL[@]}" \
    --skip-docs 3000 --max-docs 100 --profile 0 > $O/probe_$name.txt 2>&1)
  echo "probe $name rc $? $(date -u +%T)" >> $O/driver.txt
  grep "ours val_bpb\|^profile batch\|Recompiling\|Graph break" $O/probe_$name.txt | cut -c1-300 >> $O/driver.txt
}
if head -1 $O/gpu.txt | grep -q H100; then  # the GPU line (the commit line may name one too)
  RECIPE=golf PHASED_TTT_PREFIX_DOCS=246 TTT_GRAD_STEPS_TOKENS=3072 python3 scripts/bench_ttt_vs_reference.py \
    --only ours "${VAL[@]}" --save $O/ttt_golf_t3072.json > $O/ttt_golf_t3072.txt 2>&1
  echo "ttt golf_t3072 rc $? $(date -u +%T)" >> $O/driver.txt
  grep "projected\|ours val_bpb" $O/ttt_golf_t3072.txt >> $O/driver.txt
fi
echo "t3072 done $(date -u +%T)" >> $O/driver.txt
probe this $PWD
probe base_5f1fd47 $BASE TORCHINDUCTOR_CACHE_DIR=/tmp/g/cache_base  # its own cache: not this tree's graphs
echo "s32 done $(date -u +%T)" >> $O/driver.txt
