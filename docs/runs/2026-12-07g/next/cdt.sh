#!/usr/bin/env bash
# cdt.sh [SECONDS] [launch|report WAIT|dry]: issue 26's coordinate descent tuning over a whole capped run of
# RECIPE=2135 on one GPU: ours, then ours with TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1, one after the other
# (bench_vs_reference.py --whole --no-record --train-only: each stopped after its Hessians; no record, so none of
# its 6-9 minutes of compile). Carry .gpu_data (`docs/runs/2026-12-05e/next/prepare.sh s22`). `launch` (the
# default) starts the runs detached and returns; `report WAIT` waits up to WAIT seconds for both, then prints the
# table and packs the logs into $OUT/cdt.tar.xz. Cost: ours ~300 s with a 150 s cap (first step ~120-160 s, the
# cap, its Hessians and GPTQ), the tuned run the same plus its cold compiles (370 s for one graph on 2026-12-07;
# a run compiles two before step 1, recurrence off and on, which share most kernels): ~15-20 minutes of device
# time. Chain the calls (the machine goes back 30 s after a call ends):
#     bash docs/runs/2026-12-07g/next/cdt.sh 150 launch; bash docs/runs/2026-12-07g/next/cdt.sh 150 report 540
#     bash docs/runs/2026-12-07g/next/cdt.sh 150 report 540
set -eu
cd "$(dirname "$0")/../../../.."
SECONDS_CAP=${1:-150}; ACTION=${2:-launch}
G=.gpu_data; D=/tmp/cdt_data; W=/tmp/cdt
S=$D/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved  # #2135's DATA_DIR layout
mkdir -p $S $D/tokenizers
for f in $G/ds/fineweb_*.bin.xz; do ln -sf "$(realpath "$f")" $S/; done  # the bench unpacks each beside its link
ln -sf "$(realpath $G/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model)" $D/tokenizers/
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
# brotli (the image has none): ours packs with it where lrzip is missing, before its Hessian line ends the run
python3 -m pip install -q --no-index --no-deps --target /tmp/site $G/whl/*.whl && export PYTHONPATH=/tmp/site
plan=(--whole --no-record --recipe 2135 --data-dir $D --workdir $W --seconds "$SECONDS_CAP" --train-only
      --mode serial --gpus 0 --ab cdt:TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1)
case $ACTION in
  dry) python3 scripts/bench_vs_reference.py launch "${plan[@]}" --dry-run;;
  launch) python3 scripts/bench_vs_reference.py launch "${plan[@]}";;
  report)
    python3 scripts/bench_vs_reference.py report --workdir $W --wait "${3:-0}" || true
    [ -n "${OUT:-}" ] && tar -cJf "$OUT/cdt.tar.xz" --exclude='*.pt' --exclude='*.golf' -C /tmp cdt;;
  *) echo "usage: $0 [SECONDS] [launch|report WAIT|dry]" >&2; exit 2;;
esac
