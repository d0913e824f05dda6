#!/usr/bin/env bash
# s14: s13 with the record's evaluator before ours (s13 ran out of device time during the record's compile)
# GPU driver for issue 24 on ONE GPU (detached): ours RECIPE=2135 whole 300 s run through the shipped file (its
# artifact, the artifact load with rank-0 decompression), then both TTT evaluators on that artifact, documents
# 1-300 (ours first: the record's evaluator compiles for minutes), then the comparison.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
W=/tmp/g; O=$W/out; D=$W/d2135; S=$D/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved
mkdir -p $S $D/tokenizers $O $W/ship $W/run
echo "start $(date -u +%T)" >> $O/driver.txt
for f in .gpu_data/caseops/fineweb_val*.xz .gpu_data/caseops/fineweb_train_00000[01].bin.xz; do xz -dc $f > $S/$(basename ${f%.xz}); done
cp .gpu_data/caseops/*.model $D/tokenizers/
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu_data/whl/*.whl
for d in .gpu_data/deb/*.deb; do dpkg -x $d /tmp/lrz; done
export PATH=/tmp/site/bin:/tmp/lrz/usr/bin:$PATH LD_LIBRARY_PATH=/tmp/lrz/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; git log --oneline -1;
  lrzip -V 2>&1 | head -1; python3 -c "import inspect, torch.distributed.run as r; print('signals-to-handle', 'signals-to-handle' in inspect.getsource(r))"; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"; } > $O/gpu.txt 2>&1
python3 -c "import train_gpt as t; open('$W/ship/train_gpt.py','wb').write(t.shipped_file())"
TOK=$(ls $D/tokenizers/*.model)
(cd $W/run && RECIPE=2135 SEED=42 MAX_WALLCLOCK_SECONDS=60 EMA_DECAY=0.9 COMPRESSOR=brotli TTT_ENABLED=0 DATA_PATH=$S TOKENIZER_PATH=$TOK \
  RUN_ID=whole python3 $W/ship/train_gpt.py > $O/whole_console.txt 2>&1)
echo "whole done $(date -u +%T)" >> $O/driver.txt
ART=$W/run/logs/whole.golf; REF=.gpu_data/ref/record_2135/train_gpt.py
T="--artifact $ART --val $S/fineweb_val_000000.bin --val-bytes $S/fineweb_val_bytes_000000.bin --tokenizer $TOK --reference $REF --skip-docs 1 --max-docs 100"
RECIPE=2135 PHASED_TTT_PREFIX_DOCS=5 TORCH_LOGS=recompiles python3 scripts/bench_ttt_vs_reference.py $T --only record \
  --save $O/ttt_record.json > $O/ttt_record.txt 2>&1
echo "ttt record done $(date -u +%T)" >> $O/driver.txt
RECIPE=2135 PHASED_TTT_PREFIX_DOCS=5 TORCH_LOGS=recompiles python3 scripts/bench_ttt_vs_reference.py $T --only ours \
  --save $O/ttt_ours.json > $O/ttt_ours.txt 2>&1
echo "ttt ours done $(date -u +%T)" >> $O/driver.txt
python3 scripts/bench_ttt_vs_reference.py --compare $O/ttt_record.json $O/ttt_ours.json > $O/ttt_compare.txt 2>&1
echo "all done $(date -u +%T)" >> $O/driver.txt
