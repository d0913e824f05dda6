#!/usr/bin/env bash
# s21: issue 27's A/B, eval-only on s19's RECIPE=2135 bases (docs/runs/2026-12-05e: s20's pack): (1) RECIPE=golf
# over the three seeds, (2) its TTT time on the whole proxy2_caseops val, random weights (TTT time does not depend
# on them), projected to 8x H100, (3) candidates on top of golf. No train shards, no carried caches. Carry
# .gpu_data, built by `next/prepare.sh s21`.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
R=docs/runs/2026-12-05e; G=.gpu_data; O=/tmp/g/out; W=/tmp/g/ab
TOK=$G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model
mkdir -p $O $W/artifacts /tmp/g/val
echo "start $(date -u +%T)" >> $O/driver.txt
tar -xJf $R/ab_logs.tar.xz -C $W && cp $G/bases/base_s*.golf $W/artifacts/ && chmod u+w $W/artifacts/*
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1; } > $O/gpu.txt 2>&1
# the golf variant is RECIPE=golf's settings over RECIPE=2135, read from train_gpt.py (not restated here)
GOLF=$(python3 -c "import train_gpt as t; g, r = t.RECIPES['golf'], t.RECIPES['2135']
print(*(f'{k.upper()}={v}' for k, v in g.items() if r.get(k) != v))")
[ -n "$GOLF" ] || { echo "stopped: no RECIPE=golf settings from train_gpt.py" >> $O/driver.txt; exit 1; }
echo "eval golf $GOLF" > /tmp/g/variants_a.txt
sed "s/^eval \([^ ]*\) /eval \1 $GOLF /" $R/next/variants_s21.txt > /tmp/g/variants_b.txt
cp /tmp/g/variants_[ab].txt $O/
ab() {
  python3 scripts/ab_runs.py run --workdir $W --base RECIPE=2135 --seeds 1,2,3 --variants "$1" \
    --data $G/val_thin --tokenizer $TOK >> $O/ab_console.txt 2>&1
  echo "ab $1 rc $? $(date -u +%T)" >> $O/driver.txt
}
ab /tmp/g/variants_a.txt
for f in $G/val_full/*.xz; do xz -dc $f > /tmp/g/val/$(basename $f .xz); done
# the workdir's caches: golf's TTT graphs compiled by step (1)
TORCHINDUCTOR_CACHE_DIR=$W/cache/inductor TRITON_CACHE_DIR=$W/cache/triton TRITON_CACHE_AUTOTUNING=1 \
RECIPE=golf PHASED_TTT_PREFIX_DOCS=246 TORCH_LOGS=recompiles python3 scripts/bench_ttt_vs_reference.py \
  --val /tmp/g/val/fineweb_val_000000.bin --val-bytes /tmp/g/val/fineweb_val_bytes_000000.bin --tokenizer $TOK \
  --only ours --save $O/ttt_golf.json > $O/ttt_golf.txt 2>&1
echo "ttt golf rc $? $(date -u +%T)" >> $O/driver.txt
tail -25 $O/ttt_golf.txt | grep -v "^ *$" >> $O/driver.txt  # collect.sh shows driver.txt: the projection with it
ab /tmp/g/variants_b.txt
echo "all done $(date -u +%T)" >> $O/driver.txt
