#!/usr/bin/env bash
# qk.sh: issue 26's query/key norm + RoPE lead on one GPU: FUSED_QK_ENABLED's Triton kernel (kernels.qk_norm_rope,
# written on a CPU on 2026-12-08, never run on a GPU) against Inductor's kernels for the same maths. In order, each
# into $OUT/qk/ (packed as $OUT/qk.tar.xz):
#   1. test_gpu.txt: tests/test_gpu.py -k fused_qk (the kernel against Inductor's compiled qkv, packed tokens and
#      TTT-shaped dynamic rows): its first run by a GPU's Triton;
#   2. one RECIPE=2135 step of ours profiled (recurrence off, one micro-batch: an 8-GPU rank's share, as
#      roofline.sh) as shipped, with FUSED_QK_ENABLED=1, then both again (the noise between profiles):
#      prof_*.console.txt, whose "[ours] train_gpt.py, ..." line says fused_qk=1 where the kernel ran and whose
#      "[ours] recurrence off:" line has the ms/step back to back;
#   3. bench.txt: scripts/bench_kernels.py --cases qk: the attention's input side compiled with and without it
#      (and the gradients' relative error), then the part alone over five tiles against torch.compile, in GB/s,
#      with each tile's registers and spills as this GPU's Triton compiled them.
# Stops starting parts QK_SECONDS (540) after it starts: up to ~9 minutes with cold compiles, one call. Carry
# .gpu_data from either prepare: ../../2026-12-05e/next/prepare.sh s22 (ds/) or ../../2026-12-08/next/prepare.sh
# (d1886/).
#     bash docs/runs/2026-12-08b/next/qk.sh
set -u
cd "$(dirname "$0")/../../../.."
END=$((SECONDS + ${QK_SECONDS:-540}))
Q="$OUT/qk"; D=/tmp/pd/datasets/fineweb10B_sp8192  # profile_vs_reference reads the record's DATA_DIR layout
mkdir -p "$Q" $D
for src in .gpu_data/ds .gpu_data/d1886/datasets/fineweb10B_sp8192; do
  [ -f $src/fineweb_train_000001.bin.xz ] || continue
  for i in 0 1; do
    [ -f $D/fineweb_train_00000$i.bin ] || xz -dc $src/fineweb_train_00000$i.bin.xz > $D/fineweb_train_00000$i.bin
  done
  echo "train shards 0-1 from $src" > "$Q/data.txt"  # s22's CaseOps ones are the fortieth session's profile's
  break
done
[ -f $D/fineweb_train_000001.bin ] || { echo "no train shards in .gpu_data: run a prepare.sh named above" >&2; exit 2; }
export PYTHONUNBUFFERED=1
left() { local s=$((END - SECONDS)); [ $s -gt $1 ] && s=$1; echo $s; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$Q/gpu.txt"
timeout -k 10 "$(left 150)" python3 -m pytest -q tests/test_gpu.py -k fused_qk > "$Q/test_gpu.txt" 2>&1
echo "test_gpu rc $?"; tail -3 "$Q/test_gpu.txt"
profile() {  # profile NAME [--ours-env K=V]
  local name=$1 limit; limit=$(left 200); shift
  if [ "$limit" -lt 45 ]; then echo "profile $name skipped: QK_SECONDS spent"; return; fi
  timeout -k 10 "$limit" python3 scripts/profile_vs_reference.py --which ours --data-dir /tmp/pd \
    --ours-env RECIPE=2135 "$@" --no-looping --warmup 3 --steps 30 --micro-batches 1 --out "$Q/prof_$name" \
    > "$Q/prof_$name.console.txt" 2>&1
  echo "profile $name rc $?"; grep -o -m1 'fused_qk=[01]' "$Q/prof_$name.console.txt"
  grep -m1 '^\[ours\] recurrence off\|Error' "$Q/prof_$name.console.txt"
}
profile shipped
profile fused --ours-env FUSED_QK_ENABLED=1
profile shipped_again
profile fused_again --ours-env FUSED_QK_ENABLED=1
if [ "$(left 150)" -ge 60 ]; then
  timeout -k 10 "$(left 150)" python3 scripts/bench_kernels.py --cases qk > "$Q/bench.txt" 2>&1
  echo "bench rc $?"; tail -12 "$Q/bench.txt"
else
  echo "bench skipped: QK_SECONDS spent"
fi
tar -cJf "$OUT/qk.tar.xz" -C "$OUT" qk && rm -r "$Q"
