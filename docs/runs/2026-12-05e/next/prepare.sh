#!/usr/bin/env bash
# prepare.sh: build .gpu_data (git-ignored; carried to the GPU) for s21 on this machine: s19's three RECIPE=2135
# base artifacts and the thin val, from the commit that tracked them (d104240; the tree no longer does: every GPU
# call carries the tree), the whole proxy2_caseops val (golf's TTT time), the CaseOps tokenizer, the brotli wheel.
set -eu
cd "$(dirname "$0")/../../../.."
C=d104240:docs/runs/2026-12-05d/carry; S=../shared/data; G=.gpu_data
VAL=(fineweb_val_000000.bin.xz fineweb_val_bytes_000000.bin.xz)
mkdir -p $G/bases $G/val_thin $G/val_full $G/whl
for s in 1 2 3; do git show $C/base_s$s.golf > $G/bases/base_s$s.golf; done
for f in "${VAL[@]}"; do
  git show $C/val/$f > $G/val_thin/$f
  cp $S/proxy2_caseops/datasets/proxy2_caseops/$f $G/val_full/
done
cp $S/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model $G/
pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --no-deps -d $G/whl brotli
(cd $G/bases && sha256sum -c --quiet) <<'SUMS'
25d78513a92359998ea83d7576d38b3e0cd45223311c80b4b6f98a8872d794d7  base_s1.golf
aae7f0001b7cc89a8705060d9bc5ba9fdf1b2a55c38b8064058d001eceacb909  base_s2.golf
5835a102b9e71a26b478674d06ddcc4664b2bb411decc5e18973594578da16da  base_s3.golf
SUMS
du -sh $G; git ls-files -z | du -bc --files0-from=- | tail -1  # the two together: under 64 MiB
