"""Download the challenge's pre-tokenized FineWeb shards and tokenizer from its Hugging Face dataset.

    python scripts/download_data.py --variant sp8192 --train-shards 80      # into ./data (train_gpt.py's default)
    python scripts/download_data.py --train-shards 1 --local-dir /scratch/data
    python scripts/download_data.py --variant caseops --train-shards 80     # record #2135's CaseOps data

Local layout, as the challenge's own downloader writes it: manifest.json,
datasets/fineweb10B_sp8192/fineweb_{train,val}_NNNNNN.bin and tokenizers/fineweb_8192_bpe.model.
--variant sp8192: repository MATCHED_FINEWEB_REPO_ID (default willdepueoai/parameter-golf; the SP8192 variant was
first published at kevclark/parameter-golf).
--variant caseops: the canonical CaseOps export record #2135 trained and scored on (romeerp/parameter-golf-caseops-v1,
challenge PR #1729): datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved/ with the val byte sidecar
fineweb_val_bytes_NNNNNN.bin (each val token's original UTF-8 bytes, which val_bpb counts), and
tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model. Each sidecar must be as long as its val
shard, or the download is refused.
In the repositories the files sit under a datasets/ folder (the challenge downloader's remote root), which is
dropped locally. Files already present and valid are skipped; partial downloads resume (HF's state in
LOCAL_DIR/.hf_download); every shard's header and size are checked.
"""

import argparse
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



@dataclass(frozen=True)
class Variant:
    repo: str
    dataset: str  # the folder under datasets/
    tokenizer: str  # the file under tokenizers/
    sidecar: bool  # val byte sidecar shards beside the val shards


DEFAULT_REPO = "willdepueoai/parameter-golf"
VARIANTS = {
    "sp8192": Variant(DEFAULT_REPO, "fineweb10B_sp8192", "fineweb_8192_bpe.model", sidecar=False),
    "caseops": Variant("romeerp/parameter-golf-caseops-v1", "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
                       "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model", sidecar=True),
}
# The challenge's exports sit under datasets/ in their repositories (its downloader's
# MATCHED_FINEWEB_REMOTE_ROOT_PREFIX); a plain copy of a local data folder would not: whichever holds the shards.
REMOTE_ROOTS = ("datasets/", "")
MANIFEST = "manifest.json"  # which tokenizer made which dataset; train_gpt.py checks the pairing with it
STAGING = ".hf_download"  # the hub client writes here (and keeps its resume state); files are then moved in place
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


def select_files(all_files: list[str], variant: str, train_shards: int) -> list[tuple[str, str]]:
    """(path in the repository, path under local_dir) of the files to get: manifest, tokenizer, val shards
    (and their sidecars), the first train_shards train shards."""
    spec = VARIANTS[variant]
    folder = f"datasets/{spec.dataset}/"
    shard = re.compile(r"fineweb_(train|val|val_bytes)_(\d{6})\.bin$")
    root = next((r for r in REMOTE_ROOTS if any(n.startswith(r + folder + "fineweb_val_") for n in all_files)), None)
    if root is None:
        raise SystemExit(f"no {folder}fineweb_val_*.bin in the repository: check --variant and --repo-id")
    found = {"train": [], "val": [], "val_bytes": []}
    for name in all_files:
        match = shard.match(name[len(root + folder):]) if name.startswith(root + folder) else None
        if match:
            found[match.group(1)].append(name[len(root):])
    if len(found["train"]) < train_shards:
        raise SystemExit(f"--train-shards {train_shards} asked, the repository has {len(found['train'])}")
    if spec.sidecar:
        missing = sorted({n.replace("_val_", "_val_bytes_") for n in found["val"]} - set(found["val_bytes"]))
        if missing:
            raise SystemExit(f"the repository has no val byte sidecar {missing[0]}: val_bpb cannot be counted "
                             "without it; check --repo-id")
    tokenizer = f"tokenizers/{spec.tokenizer}"
    if root + tokenizer not in all_files:
        raise SystemExit(f"tokenizer {root + tokenizer} is not in the repository")
    local = ([MANIFEST] if root + MANIFEST in all_files else []) + [tokenizer] + sorted(found["val"])
    local += sorted(found["val_bytes"]) if spec.sidecar else []
    local += sorted(found["train"])[:train_shards]
    return [(root + name, name) for name in local]


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
    for i, (remote, name) in enumerate(files, 1):
        target = local_dir / name
        if is_complete(target):
            print(f"[{i}/{len(files)}] {name}: present, skipped")
        else:
            if target.exists():  # a bad or truncated copy: fetch it whole again
                target.unlink()
            print(f"[{i}/{len(files)}] {name}: downloading", flush=True)
            fetched = hub.fetch(remote, local_dir / STAGING)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(fetched, target)
            if not is_complete(target):
                raise SystemExit(f"{target} failed its size/header check after download: run again to retry")
        done.append(target)
    check_sidecars(done)
    return done


def check_sidecars(files: list[Path]) -> None:
    """Each val byte sidecar has one entry per token of its val shard (what val_bpb needs)."""
    from train_gpt import read_shard

    for sidecar in (f for f in files if f.name.startswith("fineweb_val_bytes_")):
        val = sidecar.with_name(sidecar.name.replace("_val_bytes_", "_val_"))
        n_bytes, n_tokens = len(read_shard(sidecar)), len(read_shard(val))
        if n_bytes != n_tokens:
            raise SystemExit(f"{sidecar} has {n_bytes} entries but {val.name} has {n_tokens} tokens: they are not "
                             "one export's pair; delete both and run again")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="sp8192", choices=sorted(VARIANTS))
    parser.add_argument("--train-shards", type=int, default=80, help="how many training shards (of 80)")
    parser.add_argument("--local-dir", type=Path, default=Path("data"))
    parser.add_argument("--repo-id", help="default: the variant's (sp8192: MATCHED_FINEWEB_REPO_ID if set)")
    args = parser.parse_args(argv)
    spec = VARIANTS[args.variant]
    env_repo = os.environ.get("MATCHED_FINEWEB_REPO_ID") if args.variant == "sp8192" else None
    check_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    files = download(HuggingFaceHub(args.repo_id or env_repo or spec.repo), args.variant, args.train_shards,
                     args.local_dir)
    print(f"done: {len(files)} files under {args.local_dir}. Train with DATA_PATH={args.local_dir}/datasets/"
          f"{spec.dataset} TOKENIZER_PATH={args.local_dir}/tokenizers/{spec.tokenizer}")


if __name__ == "__main__":
    main()
