#!/usr/bin/env bash
# roofline.sh: issue 26's last lead, Inductor's kernels (28-30% of the step): how far each is from the memory
# roofline. One RECIPE=2135 step of ours (recurrence off, one micro-batch: an 8-GPU rank's share, as inductor.sh)
# is profiled as compiled, with Inductor's benchmark_kernel on and the profiled step's trace written with each
# op's arguments (--trace-args): the op Inductor wraps around each launch then carries the kernel's bytes as
# Inductor counts them (kernel_num_gb), beside the launch's GPU time (step/ours_off_trace.json.gz).
# benchmark_kernel only adds that count and a benchmark harness to each kernel's source: the kernels, and so the
# step, are the same. First, copies into preallocated tensors (copy.json): 1 GiB's rate, the floor's, the rate a
# memory-bound kernel can reach on this GPU, and the rates at 64 and 256 MiB. ~2-3 minutes with a cold compile
# (~90 s).
# (The first version compiled a second time under Inductor's profile_bandwidth, whose output file fails at
# compile under torch 2.11: benchmark_compiled_module() called without its arguments, 2026-12-07.) Carry
# .gpu_data. On any machine:
#     python3 scripts/profile_vs_reference.py roofline R/step/ours_off_trace.json.gz R/copy.json   # R: $OUT/roofline
set -uo pipefail
cd "$(dirname "$0")/../../../.."
G=.gpu_data; D=/tmp/pd/datasets/fineweb10B_sp8192; R="$OUT/roofline"
mkdir -p $D "$R/step"
for i in 0 1; do
  [ -f $D/fineweb_train_00000$i.bin ] || xz -dc $G/ds/fineweb_train_00000$i.bin.xz > $D/fineweb_train_00000$i.bin
done
export PYTHONUNBUFFERED=1
python3 - > "$R/copy.json" <<'PY'
import json, torch
def copy_rate(n):  # bytes read + written a second by copy_ of n bytes into a preallocated tensor, median of 20
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    times = []
    for _ in range(25):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(); dst.copy_(src); end.record(); torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return 2 * n / 1e9 / (sorted(times[5:])[10] / 1e3)
# the floors use 1 GiB's rate; 64 and 256 MiB show how far a kernel of that size gets (source and destination
# together over the 50 MB L2: smaller copies would time L2, or the launch)
print(json.dumps({"device": torch.cuda.get_device_name(), "gb_per_s": copy_rate(1 << 30),
                  "gb_per_s_by_mib": {mib: copy_rate(mib << 20) for mib in (64, 256)}}))
PY
cat "$R/copy.json"
timeout -k 10 ${STEP_SECONDS:-200} python3 scripts/profile_vs_reference.py --which ours --data-dir /tmp/pd \
  --ours-env RECIPE=2135 --no-looping --micro-batches 1 --warmup 3 --steps 10 --out "$R/step" --trace-args \
  --inductor benchmark_kernel=True > "$R/step/console.txt" 2>&1
echo "step profile rc $?"; grep -m1 '^\[ours\] recurrence\|Error' "$R/step/console.txt"
python3 scripts/profile_vs_reference.py roofline "$R/step/ours_off_trace.json.gz" "$R/copy.json" --top 25 \
  | tee "$R/roofline.txt"
