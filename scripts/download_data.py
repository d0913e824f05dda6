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
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_REPO = "willdepueoai/parameter-golf"
TOKENIZERS = {"sp8192": "tokenizers/fineweb_8192_bpe.model"}
MANIFEST = "manifest.json"  # which tokenizer made which dataset; train_gpt.py checks the pairing with it
CONNECT_TIMEOUT_SECONDS = 5  # offline should fail in seconds, not after the HTTP client's retries
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def check_reachable(endpoint: str) -> None:
    """One TCP connection to the hub, so that an offline machine gets one line at once instead of a long
    traceback after the HTTP client's retries. Skipped behind a proxy (the proxy, not the hub, is dialled)."""
    if any(os.environ.get(v) for v in PROXY_VARS):
        return
    url = urlparse(endpoint)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as err:
        raise SystemExit(f"cannot reach {host}:{port} ({err.strerror or err}): this machine looks offline. "
                         "download_data.py needs the network; copy the data folder from a machine that has it, "
                         "or set HF_ENDPOINT to a reachable mirror") from None


class HuggingFaceHub:
    """The network boundary: list a dataset repository's files, fetch one into local_dir (resumable)."""

    def __init__(self, repo_id: str):
        self.repo_id = repo_id

    def list_files(self) -> list[str]:
        from huggingface_hub import HfApi
        return self._call(lambda: HfApi().list_repo_files(self.repo_id, repo_type="dataset"), "listing files")

    def fetch(self, path: str, local_dir: Path) -> Path:
        from huggingface_hub import hf_hub_download
        return Path(self._call(lambda: hf_hub_download(self.repo_id, path, repo_type="dataset",
                                                        local_dir=local_dir), f"fetching {path}"))

    def _call(self, fn, what: str):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - the HTTP client's errors differ by version: say which, in one line
            raise SystemExit(f"{self.repo_id}: {what} failed: {type(err).__name__}: {err}. Run again to "
                             "resume (files already complete are kept)") from None


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
    manifest = [MANIFEST] if MANIFEST in all_files else []
    return manifest + [tokenizer] + sorted(found["val"]) + sorted(found["train"])[:train_shards]


def is_complete(path: Path) -> bool:
    from train_gpt import read_shard  # the training run's header/size check (imported late: torch is slow to load)

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
    check_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    files = download(HuggingFaceHub(args.repo_id), args.variant, args.train_shards, args.local_dir)
    print(f"done: {len(files)} files under {args.local_dir}. Train with DATA_PATH="
          f"{args.local_dir}/datasets/fineweb10B_{args.variant} (the default when --local-dir is data)")


if __name__ == "__main__":
    main()
