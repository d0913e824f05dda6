#!/usr/bin/env bash
# mixorder.sh [SECONDS] [launch|report WAIT|dry]: Inductor's mix-order reduction over a whole capped run of
# RECIPE=2135 on one GPU, once its profile (README, call 1) has compiled and come out faster: ours as shipped,
# then a copy of it with the fusion on (configure_inductor's one line flipped), one after the other, each
# stopped after its Hessians (bench_vs_reference.py --whole --no-record --train-only). The whole run is what
# checks the recurrence-on graph, which the profile leaves out. Carry .gpu_data. ~10-12 minutes: ~300 s a run
# with a 150 s cap, each compiling cold. Chain the calls (the machine goes back 30 s after a call ends):
#     bash docs/runs/2026-12-07h/next/mixorder.sh 150 launch; bash docs/runs/2026-12-07h/next/mixorder.sh 150 report 500
set -eu
cd "$(dirname "$0")/../../../.."
SECONDS_CAP=${1:-150}; ACTION=${2:-launch}
G=.gpu_data; D=/tmp/mo_data; W=/tmp/mo; C=/tmp/mo_script
S=$D/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved  # #2135's DATA_DIR layout
mkdir -p $S $D/tokenizers $C
for f in $G/ds/fineweb_*.bin.xz; do ln -sf "$(realpath "$f")" $S/; done  # the bench unpacks each beside its link
ln -sf "$(realpath $G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model)" $D/tokenizers/
cp kernels.py ship.py $C/  # the copy builds its shipped file (its size in the artifact) with ship.py
OFF="inductor_triton.mix_order_reduction = False"
grep -q "$OFF" train_gpt.py || { echo "mixorder.sh: train_gpt.py no longer has '$OFF'" >&2; exit 2; }
sed "s/$OFF/inductor_triton.mix_order_reduction = True/" train_gpt.py > $C/train_gpt.py
python3 -c "import sys; sys.path.insert(0, '$C'); import train_gpt; train_gpt.shipped_file()" || {
  echo "mixorder.sh: the copy in $C cannot build its shipped file" >&2; exit 2; }
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl && export PYTHONPATH=/tmp/site
plan=(--whole --no-record --recipe 2135 --data-dir $D --workdir $W --seconds "$SECONDS_CAP" --train-only
      --mode serial --gpus 0 --ab-script mixorder=$C/train_gpt.py)
case $ACTION in
  dry) python3 scripts/bench_vs_reference.py launch "${plan[@]}" --dry-run;;
  launch) python3 scripts/bench_vs_reference.py launch "${plan[@]}";;
  report)
    python3 scripts/bench_vs_reference.py report --workdir $W --wait "${3:-0}" || true
    [ -n "${OUT:-}" ] && tar -cJf "$OUT/mixorder.tar.xz" --exclude='*.pt' --exclude='*.golf' -C /tmp mo;;
  *) echo "usage: $0 [SECONDS] [launch|report WAIT|dry]" >&2; exit 2;;
esac
