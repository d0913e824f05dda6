"""scripts/check_ttt_codegen.py (in a subprocess: it switches Inductor's CPU code generation to Triton): TTT's
graphs get their Triton code written, and a graph whose generation fails is named and fails the run. Whether a
given torch asserts is that torch's business: the GPU image's 2.11 did on TTT_GRAD_CHUNK_ONLY's chunk step before
its columns were static (docs/BENCHMARKS.md, twenty-third session); CI's torch does not."""

import re
import subprocess
import sys

from conftest import FEW_LAYERS, REPO, clean_env

SCRIPT = REPO / "scripts" / "check_ttt_codegen.py"
FAIL_GENERATION = ("import sys, torch._inductor.compile_fx as c\n"
                   "def fail(*args, **kwargs): raise AssertionError('injected')\n"
                   "c.compile_fx_inner = fail\n"
                   f"sys.path.insert(0, {str(SCRIPT.parent)!r})\n"
                   "import check_ttt_codegen\n"
                   "sys.exit(check_ttt_codegen.main(['--toy']))\n")


def _run(*argv: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=900, cwd=REPO,
                          env=clean_env(**env))


def test_ttt_graphs_get_their_triton_code():
    """The chunk step's forward and backward, both generated, each with the kernel launches its wrapper makes
    (Triton's and extern calls: both kinds in each); the run exits 0. TTT_GRAD_CHUNK_ONLY's five graphs, for
    which the script was written, take about twice as long on CI's CPU, so no CI test generates their code; the
    script walks any number of graphs alike (run it with TTT_GRAD_CHUNK_ONLY=1 after changing that path)."""
    run = _run(str(SCRIPT), "--toy", **FEW_LAYERS)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stdout.count("code generated") == 2 and "2 of 2 graphs generated" in run.stdout
    launches = [tuple(map(int, m)) for m in re.findall(r"(\d+) Triton launches, (\d+) extern calls", run.stdout)]
    assert len(launches) == 2 and all(triton > 0 and extern > 0 for triton, extern in launches), launches


def test_a_graph_whose_generation_fails_fails_the_run():
    run = _run("-c", FAIL_GENERATION, **FEW_LAYERS)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "FAILED AssertionError: injected" in run.stdout and "0 of 2 graphs generated" in run.stdout


def test_no_graph_is_no_check():
    run = _run(str(SCRIPT), "--toy", TORCHDYNAMO_DISABLE="1")
    assert run.returncode == 1 and "Dynamo made none" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
