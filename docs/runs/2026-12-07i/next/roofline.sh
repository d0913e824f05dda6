#!/usr/bin/env bash
# roofline.sh: issue 26's last lead, Inductor's kernels (28% of the step): how far each is from the memory
# roofline. One RECIPE=2135 step of ours (recurrence off, one micro-batch: an 8-GPU rank's share, as inductor.sh)
# is profiled as compiled, for each kernel's time inside the step (step/ours.json), with Inductor's
# benchmark_kernel on and its cache in a fresh folder: each generated graph module then carries each kernel's
# bytes as Inductor counts them (kernel_num_gb), and the modules come back as modules.tar.xz. benchmark_kernel
# only adds that count and a benchmark harness to each kernel's source; the kernels, and so the step, are the same.
# (The first version ran a second compile under Inductor's profile_bandwidth: under torch 2.11 its output file
# fails at compile, benchmark_compiled_module() called without its arguments, 2026-12-07.) First, a copy_ of
# 1 GiB into a preallocated tensor (copy.json): the rate a memory-bound kernel can reach on this GPU. ~2-3
# minutes with a cold compile (~90 s). Carry .gpu_data. Read the result on any machine (R is $OUT/roofline):
#     mkdir -p M && tar -xJf R/modules.tar.xz -C M
#     python3 scripts/profile_vs_reference.py roofline M R/copy.json R/step/ours.json
set -u
cd "$(dirname "$0")/../../../.."
G=.gpu_data; D=/tmp/pd/datasets/fineweb10B_sp8192; R="$OUT/roofline"
mkdir -p $D "$R/step"
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
export TORCHINDUCTOR_CACHE_DIR=/tmp/roofline_inductor
rm -rf $TORCHINDUCTOR_CACHE_DIR
timeout -k 10 ${STEP_SECONDS:-200} python3 scripts/profile_vs_reference.py --which ours --data-dir /tmp/pd \
  --ours-env RECIPE=2135 --no-looping --micro-batches 1 --warmup 3 --steps 10 --out "$R/step" \
  --inductor benchmark_kernel=True > "$R/step/console.txt" 2>&1
echo "step profile rc $?"; grep -m1 '^\[ours\] recurrence\|Error' "$R/step/console.txt"
grep -rl --include='*.py' 'async_compile.triton(' $TORCHINDUCTOR_CACHE_DIR > /tmp/roofline_modules.txt
tar -cJf "$R/modules.tar.xz" -C / $(sed 's|^/||' /tmp/roofline_modules.txt)
echo "$(wc -l < /tmp/roofline_modules.txt) graph modules"
python3 scripts/profile_vs_reference.py roofline $TORCHINDUCTOR_CACHE_DIR "$R/copy.json" "$R/step/ours.json"
