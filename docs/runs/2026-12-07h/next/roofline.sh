#!/usr/bin/env bash
# roofline.sh: issue 26's last lead, Inductor's kernels (28% of the step): how far each is from the memory
# roofline. One RECIPE=2135 step of ours (recurrence off, one micro-batch: an 8-GPU rank's share, as inductor.sh)
# compiled with Inductor's bandwidth profiler (profile_bandwidth: each generated kernel timed alone on its first
# call, L2 flushed, with its bytes as Inductor counts them), then this GPU's copy bandwidth (a 2 GiB clone, the
# best a memory-bound kernel reaches). The step's timings are not figures (the profiler syncs and searches the
# heap at every launch); the kernel table is. Cold compile (~60-90 s) and a few slow steps: ~3-5 minutes.
# Carry .gpu_data. Writes $OUT/roofline/{bandwidth.txt,copy.json,console.txt}; read them with roofline.py.
#     bash docs/runs/2026-12-07h/next/roofline.sh
set -u
cd "$(dirname "$0")/../../../.."
G=.gpu_data; D=/tmp/pd/datasets/fineweb10B_sp8192; R="$OUT/roofline"
mkdir -p $D "$R"
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
timeout -k 10 ${ROOFLINE_SECONDS:-420} python3 scripts/profile_vs_reference.py --which ours --data-dir /tmp/pd \
  --ours-env RECIPE=2135 --no-looping --warmup 1 --steps 1 --micro-batches 1 --out "$R" \
  --inductor profile_bandwidth=True --inductor "profile_bandwidth_output='$R/bandwidth.txt'" \
  > "$R/console.txt" 2>&1
echo "profile rc $?"; tail -3 "$R/console.txt"; grep -c SUMMARY "$R/bandwidth.txt"
