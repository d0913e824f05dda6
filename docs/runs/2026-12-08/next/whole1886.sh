#!/usr/bin/env bash
# whole1886.sh: issue 26's last whole run, RECIPE=1886 against #1886's script on one GPU (detached: start it with
# setsid, collect with collect_whole.sh). The record first, then ours through the shipped file, one after the
# other, each stopped after its Hessians (--train-only), SEED=42, a 300 s cap: the tenth session's RECIPE=2135 run
# (docs/runs/2026-12-04d) for the other recipe. Carry .gpu_data from prepare.sh. That run took 1,386 s from its
# start (the record 868 s to its Hessians, first step at 500.6 s; ours 492 s): ~1,450-1,500 device s with the
# calls and the machine's start, most of a session.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
W=/tmp/g; O=$W/out; D=$W/d1886
mkdir -p $O $W/ship
echo "start $(date -u +%T)" > $O/driver.txt
rm -rf $D; cp -r .gpu_data/d1886 $D
for f in $D/datasets/fineweb10B_sp8192/*.xz; do xz -d $f; done
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_data/whl/*.whl
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH  # pyminify, which the record runs before its Hessians
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; git log --oneline -1;
  which pyminify; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } > $O/gpu.txt 2>&1
python3 -c "import train_gpt as t; open('$W/ship/train_gpt.py', 'wb').write(t.shipped_file())"
ls -la $W/ship >> $O/gpu.txt
python3 scripts/bench_vs_reference.py launch --whole --train-only --record-first --recipe 1886 \
  --reference .gpu_data/ref/record_1886_train_gpt.py --data-dir $D --workdir $W/whole --seconds 300 \
  --mode serial --gpus 0 --env SEED=42 --ours-script $W/ship/train_gpt.py > $O/launch.txt 2>&1
echo "launched rc $? $(date -u +%T)" >> $O/driver.txt
python3 scripts/bench_vs_reference.py wait --workdir $W/whole --runs record --timeout 1700 >> $O/driver.txt 2>&1
echo "record done $(date -u +%T)" >> $O/driver.txt
python3 scripts/bench_vs_reference.py wait --workdir $W/whole --runs ours --timeout 1700 >> $O/driver.txt 2>&1
echo "all done $(date -u +%T)" >> $O/driver.txt
