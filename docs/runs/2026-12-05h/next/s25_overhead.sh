#!/usr/bin/env bash
# s25: whether Inductor settings that cut host overhead shorten golf's TTT: batch 10 of the whole val was
# device-bound (docs/BENCHMARKS.md, twentieth session), but the fitted per-chunk-step term that dominates the
# short-document batches may be launch overhead. Three runs of RECIPE=golf's TTT on the first 1,000 documents of
# the whole proxy2_caseops val (random weights; each with its own cold compile caches): as shipped,
# TORCHINDUCTOR_CPP_WRAPPER=1 (C++ kernel launches instead of Python), TORCHINDUCTOR_CUDAGRAPHS=1 (CUDA graphs; one
# recording a distinct shape). Each prints its bpb (equal within fp32 noise, or the setting changed the maths)
# and its scoring seconds; batches 3 and 10 (of ~16) are profiled. Carry .gpu_data
# (docs/runs/2026-12-05e/next/prepare.sh s21); ~4 minutes a run: all three need a 600 s call and a second wait.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1
G=.gpu_data; O=/tmp/g/out
TOK=$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
mkdir -p $O /tmp/g/val
echo "start $(date -u +%T)" >> $O/driver.txt
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
for f in $G/val_full/*.xz; do xz -dc $f > /tmp/g/val/$(basename $f .xz); done
for run in "shipped" "cpp_wrapper TORCHINDUCTOR_CPP_WRAPPER=1" "cudagraphs TORCHINDUCTOR_CUDAGRAPHS=1"; do
  name=${run%% *}; settings=${run#$name}
  env $settings TORCHINDUCTOR_CACHE_DIR=/tmp/g/cache_$name/inductor TRITON_CACHE_DIR=/tmp/g/cache_$name/triton \
    RECIPE=golf PHASED_TTT_PREFIX_DOCS=50 python3 scripts/bench_ttt_vs_reference.py --only ours --max-docs 1000 \
    --val /tmp/g/val/fineweb_val_000000.bin --val-bytes /tmp/g/val/fineweb_val_bytes_000000.bin --tokenizer $TOK \
    --profile 3 10 > $O/ttt_$name.txt 2>&1
  rc=$?; echo "$name rc $rc $(date -u +%T) $(grep -h 'ours val_bpb\|^profile' $O/ttt_$name.txt | tr '\n' ' ')" \
    >> $O/driver.txt
done
echo "all done $(date -u +%T)" >> $O/driver.txt
