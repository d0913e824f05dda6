"""Download the challenge's pre-tokenized FineWeb shards and tokenizer from its Hugging Face dataset.

    python scripts/download_data.py --variant sp8192 --train-shards 80      # into ./data (train_gpt.py's default)
    python scripts/download_data.py --train-shards 1 --local-dir /scratch/data

Layout, as the challenge's own downloader: datasets/fineweb10B_<variant>/fineweb_{train,val}_NNNNNN.bin and
tokenizers/fineweb_8192_bpe.model. The repository is MATCHED_FINEWEB_REPO_ID (default
willdepueoai/parameter-golf; the SP8192 variant was first published at kevclark/parameter-golf). Files already
present and valid are skipped; partial downloads resume; every shard's header and size are checked.
"""

import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train_gpt import read_shard  # noqa: E402  (the same header/size check the training run does)

DEFAULT_REPO = "willdepueoai/parameter-golf"
TOKENIZERS = {"sp8192": "tokenizers/fineweb_8192_bpe.model"}


class HuggingFaceHub:
    """The network boundary: list a dataset repository's files, fetch one into local_dir (resumable)."""

    def __init__(self, repo_id: str):
        self.repo_id = repo_id

    def list_files(self) -> list[str]:
        from huggingface_hub import HfApi
        return HfApi().list_repo_files(self.repo_id, repo_type="dataset")

    def fetch(self, path: str, local_dir: Path) -> Path:
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download(self.repo_id, path, repo_type="dataset", local_dir=local_dir))


def select_files(all_files: list[str], variant: str, train_shards: int) -> list[str]:
    folder = f"datasets/fineweb10B_{variant}/"
    shard = re.compile(re.escape(folder) + r"fineweb_(train|val)_(\d{6})\.bin$")
    found = {"train": [], "val": []}
    for name in all_files:
        match = shard.match(name)
        if match:
            found[match.group(1)].append(name)
    if not found["val"]:
        raise SystemExit(f"no {folder}fineweb_val_*.bin in the repository: check --variant and MATCHED_FINEWEB_REPO_ID")
    if len(found["train"]) < train_shards:
        raise SystemExit(f"--train-shards {train_shards} asked, the repository has {len(found['train'])}")
    tokenizer = TOKENIZERS.get(variant)
    if tokenizer not in all_files:
        raise SystemExit(f"tokenizer {tokenizer} is not in the repository")
    return [tokenizer] + sorted(found["val"]) + sorted(found["train"])[:train_shards]


def is_complete(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.suffix != ".bin":
        return path.stat().st_size > 0
    try:
        read_shard(path)
        return True
    except ValueError:
        return False


def download(hub, variant: str, train_shards: int, local_dir: Path) -> list[Path]:
    files = select_files(hub.list_files(), variant, train_shards)
    done = []
    for i, name in enumerate(files, 1):
        target = local_dir / name
        if is_complete(target):
            print(f"[{i}/{len(files)}] {name}: present, skipped")
        else:
            if target.exists():  # a bad or truncated copy: fetch it whole again
                target.unlink()
            print(f"[{i}/{len(files)}] {name}: downloading", flush=True)
            hub.fetch(name, local_dir)
            if not is_complete(target):
                raise SystemExit(f"{target} failed its size/header check after download: run again to retry")
        done.append(target)
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="sp8192", choices=sorted(TOKENIZERS))
    parser.add_argument("--train-shards", type=int, default=80, help="how many training shards (of 80)")
    parser.add_argument("--local-dir", type=Path, default=Path("data"))
    parser.add_argument("--repo-id", default=os.environ.get("MATCHED_FINEWEB_REPO_ID", DEFAULT_REPO))
    args = parser.parse_args(argv)
    files = download(HuggingFaceHub(args.repo_id), args.variant, args.train_shards, args.local_dir)
    print(f"done: {len(files)} files under {args.local_dir}. Train with DATA_PATH="
          f"{args.local_dir}/datasets/fineweb10B_{args.variant} (the default when --local-dir is data)")


if __name__ == "__main__":
    main()
