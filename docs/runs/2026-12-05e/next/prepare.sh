#!/usr/bin/env bash
# prepare.sh s21|s22 [CACHE]: build .gpu_data (git-ignored; carried to the GPU) on this machine for that session.
# s21: s19's three RECIPE=2135 base artifacts and the thin val, from the commit that tracked them (d104240; the
# tree no longer does: every GPU call carries the tree), and the whole proxy2_caseops val (golf's TTT time).
# s22: train shards 0-4 and the whole val (fresh bases), and CACHE when given (a cache.tar.xz that collect.sh
# brought back). Since 2026-12-07 none fits beside the shards (see s27.sh): give no CACHE.
# Both: the CaseOps tokenizer and the brotli wheel. The tree and .gpu_data together must stay under 64 MiB.
set -eu
cd "$(dirname "$0")/../../../.."
C=d104240:docs/runs/2026-12-05d/carry; S=../shared/data; G=.gpu_data
DS=$S/proxy2_caseops/datasets/proxy2_caseops; VAL=(fineweb_val_000000.bin.xz fineweb_val_bytes_000000.bin.xz)
rm -rf $G; mkdir -p $G/whl
case "${1:-}" in
  s21)
    mkdir -p $G/bases $G/val_thin $G/val_full
    for s in 1 2 3; do git show $C/base_s$s.golf > $G/bases/base_s$s.golf; done
    for f in "${VAL[@]}"; do git show $C/val/$f > $G/val_thin/$f; cp $DS/$f $G/val_full/; done
    (cd $G/bases && sha256sum -c --quiet) <<'SUMS'
25d78513a92359998ea83d7576d38b3e0cd45223311c80b4b6f98a8872d794d7  base_s1.golf
aae7f0001b7cc89a8705060d9bc5ba9fdf1b2a55c38b8064058d001eceacb909  base_s2.golf
5835a102b9e71a26b478674d06ddcc4664b2bb411decc5e18973594578da16da  base_s3.golf
SUMS
    ;;
  s22)
    mkdir -p $G/ds
    cp $DS/fineweb_train_00000[0-4].bin.xz "${VAL[@]/#/$DS/}" $G/ds/
    if [ -n "${2:-}" ]; then cp "$2" $G/cache.tar.xz; fi
    ;;
  *) echo "usage: $0 s21|s22 [CACHE]" >&2; exit 2;;
esac
cp $S/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model $G/
pip download -q --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --no-deps -d $G/whl brotli
data=$(du -sb $G | cut -f1); tree=$(git ls-files -z | du -bc --files0-from=- | tail -1 | cut -f1)
echo "$data bytes in $G, $tree in the tree; together under $((64 << 20))?"
[ $((data + tree)) -le $((64 << 20)) ] || { echo "over the 64 MiB a call carries: leave CACHE out" >&2; exit 1; }
