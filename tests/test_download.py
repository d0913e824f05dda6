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


def make_hub(tmp_path, variant="sp8192", remote_root=""):
    """A repository holding the variant's files, under remote_root (the challenge's exports: "datasets/")."""
    spec = download_data.VARIANTS[variant]
    hub_dir = tmp_path / "hub"
    root = hub_dir / remote_root
    folder = root / "datasets" / spec.dataset
    folder.mkdir(parents=True)
    for i in range(3):
        write_shard(folder / f"fineweb_train_{i:06d}.bin", np.arange(100) + i)
    write_shard(folder / "fineweb_val_000000.bin", np.arange(50))
    if spec.sidecar:
        write_shard(folder / "fineweb_val_bytes_000000.bin", np.full(50, 3))
    (root / "tokenizers").mkdir()
    (root / "tokenizers" / spec.tokenizer).write_bytes(b"model")
    (root / "manifest.json").write_text("{}")
    return FolderHub(hub_dir)


@pytest.fixture
def hub(tmp_path):
    return make_hub(tmp_path)


CASEOPS = "datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"


@pytest.fixture
def caseops_hub(tmp_path):
    return make_hub(tmp_path, "caseops", remote_root="datasets/")


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


def test_the_exports_datasets_root_is_dropped_locally(tmp_path):
    hub = make_hub(tmp_path, remote_root="datasets/")
    out = tmp_path / "data"
    files = download_data.download(hub, "sp8192", 1, out)
    assert hub.fetched[:2] == ["datasets/manifest.json", "datasets/tokenizers/fineweb_8192_bpe.model"]
    assert [str(p.relative_to(out)) for p in files] == [
        "manifest.json", "tokenizers/fineweb_8192_bpe.model", "datasets/fineweb10B_sp8192/fineweb_val_000000.bin",
        "datasets/fineweb10B_sp8192/fineweb_train_000000.bin"]
    assert all(p.is_file() for p in files)


def test_caseops_downloads_shards_sidecar_and_its_tokenizer(caseops_hub, tmp_path):
    out = tmp_path / "data"
    files = download_data.download(caseops_hub, "caseops", 2, out)
    assert [str(p.relative_to(out)) for p in files] == [
        "manifest.json", "tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
        f"{CASEOPS}/fineweb_val_000000.bin", f"{CASEOPS}/fineweb_val_bytes_000000.bin",
        f"{CASEOPS}/fineweb_train_000000.bin", f"{CASEOPS}/fineweb_train_000001.bin"]
    assert caseops_hub.fetched[2] == f"datasets/{CASEOPS}/fineweb_val_000000.bin"
    assert all(p.is_file() for p in files)
    caseops_hub.fetched.clear()
    download_data.download(caseops_hub, "caseops", 2, out)  # all present: nothing fetched again
    assert caseops_hub.fetched == []


def test_caseops_without_its_sidecar_is_refused(caseops_hub, tmp_path):
    (caseops_hub.root / "datasets" / CASEOPS / "fineweb_val_bytes_000000.bin").unlink()
    with pytest.raises(SystemExit, match="no val byte sidecar .*fineweb_val_bytes_000000.bin"):
        download_data.download(caseops_hub, "caseops", 1, tmp_path / "data")


def test_caseops_sidecar_of_another_length_is_refused(caseops_hub, tmp_path):
    write_shard(caseops_hub.root / "datasets" / CASEOPS / "fineweb_val_bytes_000000.bin", np.full(49, 3))
    with pytest.raises(SystemExit, match="has 49 entries but fineweb_val_000000.bin has 50 tokens"):
        download_data.download(caseops_hub, "caseops", 1, tmp_path / "data")


def test_caseops_is_not_found_in_the_sp8192_repository(hub, tmp_path):
    with pytest.raises(SystemExit, match=f"no {CASEOPS}/fineweb_val_"):
        download_data.download(hub, "caseops", 1, tmp_path / "data")
