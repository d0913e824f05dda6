#!/usr/bin/env bash
# s29: TTT_GRAD_CHUNK_ONLY (ours, new this session: each TTT Adam step backpropagates through the scored chunk only,
# over the context's keys and values from the scoring pass). (1) its bpb, eval-only on s19's three RECIPE=2135
# bases (thin val, paired with the session-21 pack's untruncated c36_steps2 and c36_s2t2048): two steps everywhere,
# golf's (two to 2,048 tokens), three everywhere; (2) its whole-val TTT time on one GPU with two steps everywhere
# (`s26.sh golf_co2`: against golf's 453.9 s of projected TTT on an H100; on another GPU, rerun `s26.sh golf`
# too). Carry .gpu_data (`docs/runs/2026-12-05e/next/prepare.sh s21`). Collect with marker "s29 done": (1) ~15
# minutes, (2) ~8 more.
set -u
cd "$(dirname "$0")/../../../.."
# (0) a probe first (session 22's one GPU try of chunk-only failed to compile under torch 2.11's Inductor): 100
# short documents through the compiled chunk-only steps, into the caches the A/B runs use; stop if it fails
G=.gpu_data; mkdir -p /tmp/g/out /tmp/g/val_probe
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
for f in $G/val_full/*.xz; do xz -dc $f > /tmp/g/val_probe/$(basename $f .xz); done
PYTHONPATH=/tmp/site TORCHINDUCTOR_CACHE_DIR=/tmp/g/ab/cache/inductor TRITON_CACHE_DIR=/tmp/g/ab/cache/triton \
  RECIPE=golf PHASED_TTT_PREFIX_DOCS=5 TTT_GRAD_CHUNK_ONLY=1 TTT_GRAD_STEPS_TOKENS=0 \
  python3 scripts/bench_ttt_vs_reference.py --only ours --val /tmp/g/val_probe/fineweb_val_000000.bin \
  --val-bytes /tmp/g/val_probe/fineweb_val_bytes_000000.bin --skip-docs 3000 --max-docs 100 \
  --tokenizer $G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model > /tmp/g/out/probe.txt 2>&1 \
  || { tail -5 /tmp/g/out/probe.txt > /tmp/g/out/driver.txt; echo "s29 done: the probe failed" >> /tmp/g/out/driver.txt; exit 1; }
bash docs/runs/2026-12-06/next/s28.sh docs/runs/2026-12-06b/next/variants_s29.txt
mv /tmp/g/out/driver.txt /tmp/g/out/driver_ab.txt
bash docs/runs/2026-12-06/next/s26.sh golf_co2
cat /tmp/g/out/driver_ab.txt >> /tmp/g/out/driver.txt
echo "s29 done $(date -u +%T)" >> /tmp/g/out/driver.txt
