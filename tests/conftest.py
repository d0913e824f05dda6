"""Shared fixtures. Without a GPU the kernels run under the Triton interpreter (tests/test_kernels.py): the
variable must be set before triton is first imported, so it is set here, at collection time. With a GPU they
compile (tests/test_gpu.py) and the interpreter tests are skipped."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# pytest-xdist's workers (README's `-n auto`) share the cores: each takes its share of threads, and so does every
# process it starts (train_gpt.py runs, the harnesses' children, through this variable): more threads than cores crawls
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
THREADS = max(1, CORES // WORKERS)
torch.set_num_threads(THREADS)
os.environ["OMP_NUM_THREADS"] = str(THREADS)
if not torch.cuda.is_available():  # the CPU runs Triton kernels in the interpreter; a GPU compiles them
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import ab_runs  # noqa: E402  (after TRITON_INTERPRET: it imports train_gpt)
# The tests train on the sample that ships with golfrun (sample_data/README.md), so a clone runs them with
# nothing beside it: public-domain text tokenized with the challenge tokenizer, a stand-in for FineWeb.
PROXY_DATA = REPO / "sample_data" / "datasets" / "sample_sp8192"
TOKENIZER = REPO / "sample_data" / "tokenizers" / "fineweb_8192_bpe.model"
CASEOPS_DATA = REPO / "sample_data" / "datasets" / "sample_caseops"  # RECIPE=2135's data, a CPU-sized sample
CASEOPS_TOKENIZER = REPO / "sample_data" / "tokenizers" / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
sys.path.insert(0, str(REPO))
# Over SMOKE=1's or a toy's model: the fewest layers that keep each kind (one looped, parallel lanes, XSA; 4
# virtual layers instead of 6). Tests that compile the model trace every virtual layer: this saves ~30% of it.
FEW_LAYERS = dict(NUM_LAYERS="3", LOOP_START="1", LOOP_END="1", NUM_LOOPS="1", PARALLEL_START_LAYER="2", XSA_LAST_N="3")
# ab_runs' toy A/B: real RECIPE=2135 runs on the CaseOps sample, bounded by steps (no wallclock cap), smaller than
# SMOKE's (~25 s of CPU each), a base and lr (MATRIX_LR=0.05) over three seeds
AB_BASE = ("SMOKE=1,RECIPE=2135,ITERATIONS=2,MAX_WALLCLOCK_SECONDS=0,VAL_LOSS_EVERY=0,TRAIN_BATCH_TOKENS=2048,"
           "GPTQ_CALIBRATION_BATCHES=1,TTT_CHUNK_SIZE=256")
AB_SEEDS = (1, 2, 3)
AB_VAL_EVERY, AB_VAL_MAX_DOC_TOKENS = 13, 4000  # the sample's 13 documents (2,530-3,547 tokens): its 13th (3,130)


def ab_data_args(data: Path = CASEOPS_DATA) -> list[str]:
    """ab_runs' data, tokenizer and val subset of the toy A/B."""
    return ["--data", str(data), "--tokenizer", str(CASEOPS_TOKENIZER), "--val-every", str(AB_VAL_EVERY),
            "--val-max-doc-tokens", str(AB_VAL_MAX_DOC_TOKENS)]


def ab_args(workdir: Path, *extra: str, variant: str = "lr=MATRIX_LR=0.05", data: Path = CASEOPS_DATA) -> list[str]:
    """ab_runs' command line of the toy A/B in workdir."""
    return ["run", "--workdir", str(workdir), "--base", AB_BASE, "--variant", variant, "--seeds",
            ",".join(map(str, AB_SEEDS)), *ab_data_args(data), *extra]


@pytest.fixture(scope="session")
def ab_workdir(tmp_path_factory) -> Path:
    """The toy A/B, run once: tests/test_ab_runs.py reads and copies its workdir, tests/test_seed_stats.py reads
    its logs (seeds of two configurations); none changes it."""
    work = tmp_path_factory.mktemp("ab") / "w"
    assert ab_runs.main(ab_args(work)) == 0
    return work


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Tests that share a costly fixture of ours (module or session scope: smoke_log, a module's runs) go to one
    xdist worker (`--dist loadgroup`), which builds it once: each group is a connected set of tests and fixtures."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    here, parent = Path(__file__).parent, {}

    def root(key):
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key
    shared = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        shared[item] = [f"{Path(d.func.__code__.co_filename).name}::{d.argname}"
                        for defs in (info.name2fixturedefs.values() if info else ()) for d in defs
                        if d.scope in ("module", "session")
                        and Path(d.func.__code__.co_filename).resolve().is_relative_to(here)]
        for name in shared[item][1:]:
            parent[root(name)] = root(shared[item][0])
    for item, names in shared.items():
        if names:
            item.add_marker(pytest.mark.xdist_group(root(names[0])))


def clean_env(**extra) -> dict:
    """The environment for a train_gpt.py subprocess: ours only, none of the caller's knobs, but the machine's
    CUDA paths and its NCCL, gloo and torch settings, as ab_runs passes them (the lent GPUs keep NVLink multicast
    off through them)."""
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "PYTHONPATH", "LANG", "TMPDIR", "LD_LIBRARY_PATH", "CUDA_HOME",
                    "CUDA_VISIBLE_DEVICES") or k.startswith(ab_runs.PASS_ENV_PREFIXES)}
    env.update(OMP_NUM_THREADS=str(THREADS), PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_train(tmp_path: Path, nproc: int = 1, timeout: int = 1800, script: Path = REPO / "train_gpt.py", **env) -> str:
    """Run train_gpt.py (or a script that runs its main()) on the sample data in tmp_path; return its log
    file's text. The timeout guards against a hang only: runs are bounded by steps, and a busy machine may take
    many times an idle one's."""
    run_id = env.pop("RUN_ID", "test")
    env.setdefault("ARTIFACT_PATH", tmp_path / f"{run_id}.golf")
    if not env.get("SMOKE"):  # SMOKE=1 finds the shipped sample by itself: the tests check that it does
        env = dict(DATA_PATH=PROXY_DATA, TOKENIZER_PATH=TOKENIZER, **env)
    full_env = clean_env(RUN_ID=run_id, **env)
    full_env["OMP_NUM_THREADS"] = str(max(1, THREADS // nproc))  # more threads than cores crawls
    if nproc == 1:
        cmd = [sys.executable, str(script)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(script)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout)
    log_path = tmp_path / "logs" / f"{run_id}.txt"
    if proc.returncode != 0:
        raise AssertionError(f"train_gpt.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return log_path.read_text()


def metric(log: str, label: str, key: str = "val_bpb") -> float:
    match = re.search(rf"^{label} .*?{key}:([0-9.]+)", log, re.M)
    assert match, f"no '{label} ... {key}:' line in the log"
    return float(match.group(1))


@pytest.fixture(scope="session")
def smoke_log(tmp_path_factory) -> tuple[Path, str]:
    """One full SMOKE=1 run of the whole pipeline (train, artifact, roundtrip, TTT), shared by tests; its
    unquantized weights in models/smoke.pt (PREQUANT_PATH; the run makes the folder)."""
    tmp = tmp_path_factory.mktemp("smoke")
    return tmp, run_train(tmp, SMOKE=1, RUN_ID="smoke", PREQUANT_PATH=tmp / "models" / "smoke.pt")
