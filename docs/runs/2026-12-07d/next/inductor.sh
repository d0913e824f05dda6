#!/usr/bin/env bash
# inductor.sh [SETTING ...]: issue 26's Inductor lead. One RECIPE=2135 step of ours (recurrence off, one
# micro-batch: an 8-GPU rank's share) profiled on one GPU as train_gpt compiles it, then once per SETTING (an
# Inductor setting, profile_vs_reference.py --inductor KEY=VALUE, or a flag below), then as compiled first again
# (the noise between two profiles). An Inductor setting compiles cold (Inductor's cache keys include its
# settings; the padding alone does not change the graph and compiles warm); a profile may take
# INDUCTOR_PROFILE_SECONDS (240). Inductor's kernels are ~28% of the step (docs/BENCHMARKS.md, thirty-third
# session). Carry .gpu_data (the train shards). Stops starting profiles INDUCTOR_SECONDS (480) after it starts, so
# that its files are packed inside the call: $OUT/inductor.tar.xz (each profile's console.txt and ours.json, whose
# "inductor" field is the settings read back from Inductor's config).
#     bash docs/runs/2026-12-07d/next/inductor.sh combo_kernels=True
# A SETTING may join several with "+"; "static" among them pads each batch to one cu_seqlens length
# (profile_vs_reference.py --static-cu-seqlens), "cudagraphs" also compiles the model's graph as CUDA graphs
# (--cudagraphs; Inductor's global triton.cudagraphs=True would graph the optimizer's Newton-Schulz too, whose
# outputs Muon reads after the next call: it failed so on 2026-12-07):
#     bash docs/runs/2026-12-07d/next/inductor.sh cudagraphs static
set -u
cd "$(dirname "$0")/../../../.."
END=$((SECONDS + ${INDUCTOR_SECONDS:-480}))
G=.gpu_data; D=/tmp/pd/datasets/fineweb10B_sp8192  # profile_vs_reference reads the record's DATA_DIR layout
mkdir -p $D "$OUT/inductor"
for i in 0 1; do
  [ -f $D/fineweb_train_00000$i.bin ] || xz -dc $G/ds/fineweb_train_00000$i.bin.xz > $D/fineweb_train_00000$i.bin
done
export PYTHONUNBUFFERED=1
profile() {  # profile NAME [FLAG ...]: cold ~60-90 s, coordinate descent tuning longer
  local name=$1 limit=$((END - SECONDS)) cap=${INDUCTOR_PROFILE_SECONDS:-240} dir rc; shift
  if [ $limit -lt 45 ]; then echo "profile $name skipped: INDUCTOR_SECONDS spent"; return; fi
  [ $limit -gt $cap ] && limit=$cap
  dir="$OUT/inductor/${name//[^A-Za-z0-9_.=-]/_}"; mkdir -p "$dir"
  timeout -k 10 $limit python3 scripts/profile_vs_reference.py --which ours --data-dir /tmp/pd \
    --ours-env RECIPE=2135 --no-looping --warmup 3 --steps 30 --micro-batches 1 --out "$dir" "$@" \
    > "$dir/console.txt" 2>&1
  rc=$?; echo "profile $name rc $rc"; grep -m1 '^\[ours\]\|Error' "$dir/console.txt"
}
profile default
for setting in "$@"; do
  flags=(); IFS=+ read -ra parts <<< "$setting"
  for part in "${parts[@]}"; do
    case $part in
      static) flags+=(--static-cu-seqlens);;
      cudagraphs) flags+=(--cudagraphs);;
      *) flags+=(--inductor "$part");;
    esac
  done
  profile "$setting" "${flags[@]}"
done
profile default_again
tar -cJf "$OUT/inductor.tar.xz" -C "$OUT" inductor && rm -r "$OUT/inductor"
