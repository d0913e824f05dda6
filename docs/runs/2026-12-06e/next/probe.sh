#!/usr/bin/env bash
# probe.sh [SETTING=VALUE ...]: s30's full-window probe on this tree alone, for a call with little device time
# (~7 minutes cold): RECIPE=golf, two Adam steps everywhere, 100 documents from the 3,000th, batch 0 profiled,
# random weights. Its val_bpb must equal s30's (3.762492, e9598e0, H200) up to the GPU's rounding, and its
# batch-0 figures (unprofiled ms a step, device busy, kernels a step) compare with s30's on the same GPU kind.
# Carry .gpu_data (`docs/runs/2026-12-05e/next/prepare.sh s21`). Writes $OUT/probe.txt and $OUT/gpu.txt.
set -u
cd "$(dirname "$0")/../../../.."
G=.gpu_data; V=/tmp/g/val
mkdir -p $V
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } > $OUT/gpu.txt 2>&1
for f in $G/val_full/*.xz; do xz -dc $f > $V/$(basename $f .xz); done
env "$@" TORCH_LOGS=recompiles,graph_breaks RECIPE=golf PHASED_TTT_PREFIX_DOCS=5 TTT_GRAD_STEPS_TOKENS=0 \
  timeout 470 python3 scripts/bench_ttt_vs_reference.py --only ours --val $V/fineweb_val_000000.bin \
  --val-bytes $V/fineweb_val_bytes_000000.bin --tokenizer $PWD/$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model \
  --skip-docs 3000 --max-docs 100 --profile 0 > $OUT/probe.txt 2>&1
echo "probe rc $?"
grep "ours val_bpb\|^profile batch\|Recompiling\|Graph break" $OUT/probe.txt | cut -c1-300
