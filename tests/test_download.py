"""scripts/download_data.py against a fake hub: a local folder behind the same two-method boundary."""

import shutil
import sys

import numpy as np
import pytest

from conftest import REPO
from test_data import write_shard

sys.path.insert(0, str(REPO / "scripts"))
import download_data  # noqa: E402


class FolderHub:
    """Stands in for Hugging Face only at the network boundary; counts fetches."""

    def __init__(self, root):
        self.root, self.fetched = root, []

    def list_files(self):
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def fetch(self, path, local_dir):
        self.fetched.append(path)
        (local_dir / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.root / path, local_dir / path)
        return local_dir / path


@pytest.fixture
def hub(tmp_path):
    root = tmp_path / "hub"
    folder = root / "datasets/fineweb10B_sp8192"
    folder.mkdir(parents=True)
    for i in range(3):
        write_shard(folder / f"fineweb_train_{i:06d}.bin", np.arange(100) + i)
    write_shard(folder / "fineweb_val_000000.bin", np.arange(50))
    (root / "tokenizers").mkdir()
    (root / "tokenizers/fineweb_8192_bpe.model").write_bytes(b"model")
    (root / "manifest.json").write_text("{}")
    return FolderHub(root)


def test_downloads_the_asked_shards_and_tokenizer(hub, tmp_path):
    out = tmp_path / "data"
    files = download_data.download(hub, "sp8192", 2, out)
    names = [str(p.relative_to(out)) for p in files]
    assert names == ["manifest.json", "tokenizers/fineweb_8192_bpe.model", "datasets/fineweb10B_sp8192/fineweb_val_000000.bin",
                     "datasets/fineweb10B_sp8192/fineweb_train_000000.bin",
                     "datasets/fineweb10B_sp8192/fineweb_train_000001.bin"]


def test_resume_skips_valid_files_and_refetches_truncated_ones(hub, tmp_path):
    out = tmp_path / "data"
    download_data.download(hub, "sp8192", 2, out)
    shard = out / "datasets/fineweb10B_sp8192/fineweb_train_000001.bin"
    shard.write_bytes(shard.read_bytes()[:-10])  # a broken-off download
    hub.fetched.clear()
    download_data.download(hub, "sp8192", 2, out)
    assert hub.fetched == ["datasets/fineweb10B_sp8192/fineweb_train_000001.bin"]


def test_corrupt_upstream_file_is_an_error(hub, tmp_path):
    bad = hub.root / "datasets/fineweb10B_sp8192/fineweb_val_000000.bin"
    bad.write_bytes(bad.read_bytes()[:-4])
    with pytest.raises(SystemExit, match="size/header check"):
        download_data.download(hub, "sp8192", 1, tmp_path / "data")


def test_too_many_shards_asked(hub, tmp_path):
    with pytest.raises(SystemExit, match="--train-shards 5 asked, the repository has 3"):
        download_data.download(hub, "sp8192", 5, tmp_path / "data")
