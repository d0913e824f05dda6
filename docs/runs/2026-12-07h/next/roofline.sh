#!/usr/bin/env bash
# roofline.sh: issue 26's last lead, Inductor's kernels (28% of the step): how far each is from the memory
# roofline. One RECIPE=2135 step of ours (recurrence off, one micro-batch: an 8-GPU rank's share, as inductor.sh)
# is profiled as compiled, for each kernel's time inside the step (step/ours.json). Then the same step is
# compiled with Inductor's bandwidth profiler (profile_bandwidth), for each kernel's bytes as Inductor counts
# them (bandwidth.txt). That profiler times a kernel on its first call only, with the clones of its mutated
# arguments inside the timing, and skips the kernel on later calls, so the second run's step figures are not
# figures at all; it also walks the heap at every launch, which makes its steps slow. First, a copy_ of 1 GiB into
# a preallocated tensor (copy.json): the rate a memory-bound kernel can reach on this GPU. ~5-7 minutes: two
# cold compiles (~40-90 s each); the profiles stop after STEP_SECONDS (200) and ROOFLINE_SECONDS (240), so a
# 600 s call keeps ~90 s for what follows. Carry .gpu_data. Read the result on any machine:
#     python3 scripts/profile_vs_reference.py roofline R/bandwidth.txt R/copy.json --profile R/step/ours.json
#     bash docs/runs/2026-12-07h/next/roofline.sh      # R is $OUT/roofline
set -u
cd "$(dirname "$0")/../../../.."
G=.gpu_data; D=/tmp/pd/datasets/fineweb10B_sp8192; R="$OUT/roofline"
mkdir -p $D "$R/step" "$R/bandwidth_run"
for i in 0 1; do
  [ -f $D/fineweb_train_00000$i.bin ] || xz -dc $G/ds/fineweb_train_00000$i.bin.xz > $D/fineweb_train_00000$i.bin
done
export PYTHONUNBUFFERED=1
python3 - > "$R/copy.json" <<'PY'
import json, torch
src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")  # 1 GiB read + 1 GiB written a copy
dst = torch.empty_like(src)
times = []
for _ in range(25):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(); dst.copy_(src); end.record(); torch.cuda.synchronize()
    times.append(start.elapsed_time(end))
ms = sorted(times[5:])[len(times[5:]) // 2]
print(json.dumps({"device": torch.cuda.get_device_name(), "bytes": 2 * src.numel(), "median_ms": ms,
                  "gb_per_s": 2 * src.numel() / 1e9 / (ms / 1e3)}))
PY
cat "$R/copy.json"
step=(python3 scripts/profile_vs_reference.py --which ours --data-dir /tmp/pd --ours-env RECIPE=2135 --no-looping
      --micro-batches 1)
timeout -k 10 ${STEP_SECONDS:-200} "${step[@]}" --warmup 3 --steps 10 --out "$R/step" > "$R/step/console.txt" 2>&1
echo "step profile rc $?"; grep -m1 '^\[ours\]\|Error' "$R/step/console.txt"
timeout -k 10 ${ROOFLINE_SECONDS:-240} "${step[@]}" --warmup 1 --steps 1 --out "$R/bandwidth_run" \
  --inductor profile_bandwidth=True --inductor "profile_bandwidth_output='$R/bandwidth.txt'" \
  > "$R/bandwidth_run/console.txt" 2>&1
echo "bandwidth profile rc $? (a timeout is fine once the tables are written)"; grep -c SUMMARY "$R/bandwidth.txt"
python3 scripts/profile_vs_reference.py roofline "$R/bandwidth.txt" "$R/copy.json" --profile "$R/step/ours.json"
