#!/usr/bin/env bash
# prepare.sh: build .gpu_data (git-ignored; carried to the GPU) for whole1886.sh: #1886's script with the FA3 shim,
# and its three seed logs (the report's 8xH100 projection reads them beside the script), proxy2's SP8192 train
# shards 0-1 and val (xz) in the record's DATA_DIR layout, its tokenizer, the brotli wheel (ours packs with
# brotli before it logs its Hessians) and python-minifier (the record's artifact step, before its Hessians, runs
# `pyminify`). ~27 MB; s27's data (../../2026-12-05e/next/prepare.sh s22) does not fit beside it.
set -eu
cd "$(dirname "$0")/../../../.."
S=../shared; G=.gpu_data; DS=$S/data/proxy2/datasets/proxy2_sp8192; D=$G/d1886/datasets/fineweb10B_sp8192
rm -rf $G; mkdir -p $D $G/d1886/tokenizers $G/ref $G/whl
cp $DS/fineweb_train_00000[01].bin.xz $D/
xz -T0 -6 -c $DS/fineweb_val_000000.bin > $D/fineweb_val_000000.bin.xz
cp $S/data/tokenizers/fineweb_8192_bpe.model $G/d1886/tokenizers/
cp $S/reference/record_1886_train_gpt.py $S/reference/flash_attn_interface.py $S/reference/record_1886_seed*.log $G/ref/
pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --no-deps -d $G/whl brotli python-minifier
data=$(du -sb $G | cut -f1); tree=$(git ls-files -z | du -bc --files0-from=- | tail -1 | cut -f1)
echo "$data bytes in $G, $tree in the tree; together under $((64 << 20))?"
[ $((data + tree)) -le $((64 << 20)) ] || { echo "over the 64 MiB a call carries" >&2; exit 1; }
