#!/usr/bin/env bash
# s31: TTT's adapters as one flat tensor a side (twenty-fourth session) against e9598e0's adapter-by-adapter
# tensors, on one machine. s30 found TTT's chunk steps host-bound where few rows run (GPU idle 80% in the probe's
# batch 0, 3,514 kernels a step); the flat adapters cut the launches of a forward and backward of the chunk step
# from 1,604 to 1,470 (generated wrappers, RECIPE=golf, CPU), the gradient copies and additions from ~288 to ~4 a
# step, and the aten calls outside it from 1,561 to 118 a step (two Adam steps). (1) s30's full-window probe
# (RECIPE=golf, two Adam steps everywhere, 100 documents from the 3,000th, batch 0 profiled) on e9598e0's tree, then
# (2) on this code: the same-machine ratio, and the same val_bpb up to the GPU kernels' rounding (bitwise equal on a
# CPU: same_scores.txt); (3) RECIPE=golf with the step cut at 3,072 tokens on the whole val (golf's next TTT change,
# 533.3 s projected by the refit); then "s31 done"; (4) the chunk-only probe on this code, if time is left ("co
# done"). Carry .gpu_data (`docs/runs/2026-12-05e/next/prepare.sh s21`, then `mkdir .gpu_data/e9598e0; git archive
# e9598e0 train_gpt.py kernels.py scripts | tar -x -C .gpu_data/e9598e0`). s30's probes took 6.7 minutes each (cold
# compile, H200), so (1) and (2) ~14 minutes, (3) ~8 (its graphs warm from (2)'s cache), (4) ~11: three collections.
# Twenty-fifth session: the tree now also casts TTT's fixed weights once a phase (weights_cast_for_scoring: forward
# launches 783 -> 516 in the generated wrappers), so steps2_flat measures both changes; it runs first.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
G=.gpu_data; O=/tmp/g/out; OLD=/tmp/g/e9598e0
TOK=$PWD/$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
mkdir -p $O /tmp/g/val $OLD
echo "start $(date -u +%T)" > $O/driver.txt  # a fresh log: collect.sh waits for this run's marker
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } \
  > $O/gpu.txt 2>&1
for f in $G/val_full/*.xz; do xz -dc $f > /tmp/g/val/$(basename $f .xz); done
cp -r $G/e9598e0/. $OLD/ || echo "no $G/e9598e0: the first probe will fail" >> $O/driver.txt
probe() {  # probe NAME TREE [SETTING=VALUE ...]: s30's probe documents, batch 0 profiled, TREE's code
  name=$1; tree=$2; shift 2
  (cd $tree && env "$@" TORCH_LOGS=recompiles,graph_breaks RECIPE=golf PHASED_TTT_PREFIX_DOCS=5 \
    TTT_GRAD_STEPS_TOKENS=0 python3 scripts/bench_ttt_vs_reference.py --only ours \
    --val /tmp/g/val/fineweb_val_000000.bin --val-bytes /tmp/g/val/fineweb_val_bytes_000000.bin --tokenizer $TOK \
    --skip-docs 3000 --max-docs 100 --profile 0 > $O/probe_$name.txt 2>&1)
  echo "probe $name rc $? $(date -u +%T)" >> $O/driver.txt
  grep "ours val_bpb\|^profile batch\|Recompiling\|Graph break" $O/probe_$name.txt | cut -c1-300 >> $O/driver.txt
}
probe steps2_flat $PWD  # first: a session short of device time still gets this code's bpb and speed on a GPU
probe steps2_e9598e0 $OLD TORCHINDUCTOR_CACHE_DIR=/tmp/g/cache_e9598e0  # its own: its graphs are not this code's
RECIPE=golf PHASED_TTT_PREFIX_DOCS=246 TTT_GRAD_STEPS_TOKENS=3072 python3 scripts/bench_ttt_vs_reference.py \
  --only ours --val /tmp/g/val/fineweb_val_000000.bin --val-bytes /tmp/g/val/fineweb_val_bytes_000000.bin \
  --tokenizer $TOK --save $O/ttt_golf_t3072.json > $O/ttt_golf_t3072.txt 2>&1
echo "ttt golf_t3072 rc $? $(date -u +%T)" >> $O/driver.txt
grep "projected\|ours val_bpb" $O/ttt_golf_t3072.txt >> $O/driver.txt
echo "s31 done $(date -u +%T)" >> $O/driver.txt
probe co_flat $PWD TTT_GRAD_CHUNK_ONLY=1
echo "co done $(date -u +%T)" >> $O/driver.txt
