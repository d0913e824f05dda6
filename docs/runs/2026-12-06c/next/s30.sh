#!/usr/bin/env bash
# s30: TTT_GRAD_CHUNK_ONLY after its compile fix. On one H100, s29 measured its two steps a chunk slower than one
# full-window step: 106.5 and 114.2 s of TTT on the thin val, against chunk36's 64.9 and 61.5 s on the same seeds
# (an H100 too, earlier code), where they need half that step's FLOPs at a 2,560-token window (and ran 4.7x faster
# than two full-window steps eager on a CPU). Its graphs then compiled without Inductor's coalescing tiling
# analysis (the workaround for torch 2.11's assertion) and with a dynamic chunk column count; now the chunk step's
# columns are static and every graph compiles with Inductor's defaults (scripts/check_ttt_codegen.py under torch
# 2.11 on a CPU: 5 of 5 graphs). (1) s29's probe again (the 100 documents from the 3,000th, the second step
# everywhere; s29: 50.7 s of scoring, 43.7 s for batch 0) with batch 0 profiled and Dynamo's recompiles and graph
# breaks logged; (2) the same with full-window steps, for the same-machine ratio; (3) s29's A/B resumed from its
# pack (docs/runs/2026-12-06c/ab_logs.tar.xz): co_c36_steps2's third seed, then co_c36_s2t2048 and
# co_c36_steps3 (seed 3 runs the fixed compile, seeds 1-2 ran the old one: same maths, its eval s not comparable),
# only if (1) ran. Carry .gpu_data (`docs/runs/2026-12-05e/next/prepare.sh s21`); collect with marker "s30 done":
# (1) ~10 minutes (three graphs compile cold), (2) ~4, (3) ~3.5 a run (s29: 199 s with warm caches), so one
# session likely ends in co_c36_steps2's third seed.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
G=.gpu_data; O=/tmp/g/out; W=/tmp/g/ab
TOK=$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
mkdir -p $O /tmp/g/val $W/artifacts
echo "start $(date -u +%T)" > $O/driver.txt  # a fresh log: collect.sh waits for this run's marker
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } \
  > $O/gpu.txt 2>&1
for f in $G/val_full/*.xz; do xz -dc $f > /tmp/g/val/$(basename $f .xz); done
sub() {  # sub NAME [SETTING=VALUE ...]: the probe's 100 documents, batch 0 profiled; the A/B's compile caches
  name=$1; shift
  env "$@" TORCHINDUCTOR_CACHE_DIR=$W/cache/inductor TRITON_CACHE_DIR=$W/cache/triton \
    TORCH_LOGS=recompiles,graph_breaks RECIPE=golf PHASED_TTT_PREFIX_DOCS=5 TTT_GRAD_STEPS_TOKENS=0 \
    python3 scripts/bench_ttt_vs_reference.py --only ours --val /tmp/g/val/fineweb_val_000000.bin \
    --val-bytes /tmp/g/val/fineweb_val_bytes_000000.bin --tokenizer $TOK --skip-docs 3000 --max-docs 100 \
    --profile 0 > $O/sub_$name.txt 2>&1
  echo "sub $name rc $? $(date -u +%T)" >> $O/driver.txt
  grep "ours val_bpb\|^profile batch\|Recompiling\|Graph break" $O/sub_$name.txt | cut -c1-300 >> $O/driver.txt
}
sub co TTT_GRAD_CHUNK_ONLY=1
co_rc=$(grep -c "^sub co rc 0 " $O/driver.txt)
sub steps2
[ "$co_rc" = 1 ] || { echo "s30 done: chunk-only's probe failed, no A/B $(date -u +%T)" >> $O/driver.txt; exit 1; }
tar -xJf docs/runs/2026-12-06c/ab_logs.tar.xz -C $W && cp $G/bases/base_s*.golf $W/artifacts/ && chmod u+w $W/artifacts/*
while read -r line; do
  echo "$line" > /tmp/g/variant.txt
  python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 --variants /tmp/g/variant.txt \
    --data $G/val_thin --tokenizer $TOK >> $O/ab_console.txt 2>&1
  echo "ab ${line#eval } rc $? $(date -u +%T)" >> $O/driver.txt
done < docs/runs/2026-12-06b/next/variants_s29.txt
echo "s30 done $(date -u +%T)" >> $O/driver.txt
