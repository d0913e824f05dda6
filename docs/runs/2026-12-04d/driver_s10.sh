#!/usr/bin/env bash
# Session 10 GPU driver (detached, ONE GPU): #2135 whole runs, train only (stopped after their Hessians), the
# record first, then ours through the shipped file; then the report.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
W=/tmp/g; O=$W/out; D=$W/d2135; S=$D/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved
mkdir -p $S $D/tokenizers $O $W/ship
echo "start $(date -u +%T)" >> $O/driver.txt
for f in .gpu_data/caseops/*.xz; do xz -dc $f > $S/$(basename ${f%.xz}); done
cp .gpu_data/caseops/*.model $D/tokenizers/
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_data/whl/*.whl
for d in .gpu_data/deb/*.deb; do dpkg -x $d /tmp/lrz; done
export PATH=/tmp/site/bin:/tmp/lrz/usr/bin:$PATH LD_LIBRARY_PATH=/tmp/lrz/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; git log --oneline -1;
  lrzip -V 2>&1 | head -1; which pyminify; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } > $O/gpu.txt 2>&1
python3 -c "import train_gpt as t; open('$W/ship/train_gpt.py','wb').write(t.shipped_file())"
ls -la $W/ship >> $O/gpu.txt
REF=.gpu_data/ref/record_2135/train_gpt.py
python3 scripts/bench_vs_reference.py launch --whole --train-only --record-first --recipe 2135 --reference $REF \
  --data-dir $D --workdir $W/whole --seconds 300 --mode serial --gpus 0 --env SEED=42 \
  --ours-script $W/ship/train_gpt.py > $O/launch.txt 2>&1
echo "launched $(date -u +%T)" >> $O/driver.txt
python3 scripts/bench_vs_reference.py wait --workdir $W/whole --runs record --timeout 1700 >> $O/driver.txt 2>&1
echo "record done $(date -u +%T)" >> $O/driver.txt
python3 scripts/bench_vs_reference.py report --workdir $W/whole > $O/whole_report_record.txt 2>&1
python3 scripts/bench_vs_reference.py wait --workdir $W/whole --runs ours --timeout 1700 >> $O/driver.txt 2>&1
python3 scripts/bench_vs_reference.py report --workdir $W/whole > $O/whole_report.txt 2>&1
echo "all done $(date -u +%T)" >> $O/driver.txt
