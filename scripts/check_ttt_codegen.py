"""TTT's compiled graphs through Inductor's GPU (Triton) code generation, on a CPU and without compiling a kernel:
an error that Inductor raises while it writes a graph's Triton code shows up here, minutes before a GPU run would
show it. Torch 2.11's Inductor (the GPU image's) asserted in its coalescing tiling analysis on TTT_GRAD_CHUNK_ONLY's
chunk step (docs/BENCHMARKS.md, twenty-third session); the torch of CI and of this machine does not, so run it
under the GPU image's versions for its assertions:

    python -m venv V && V/bin/pip install torch==2.11.0 triton==3.6.0 numpy sentencepiece
    RECIPE=golf TTT_GRAD_CHUNK_ONLY=1 V/bin/python scripts/check_ttt_codegen.py

The settings come from the environment, as for train_gpt.py. warm_up_ttt drives the graphs, as a run does before
its eval clock: each forward and backward graph is generated, then run eagerly (random weights; batches of
TTT_BATCH_SIZE=2 documents unless set, its rows are dynamic anyway). Prints one line a graph, with the kernel
launches its generated wrapper makes a call (Triton kernels and extern calls such as cuBLAS's bmm: the host
work a GPU call pays per launch); exits 1 when one failed or none was made. --toy: a small model (tests).

A proxy of the GPU's compile, not the compile itself: AOTAutograd's default partitioner splits forward and
backward here (Inductor's own uses its min-cut one and joint-graph passes), and the graphs are a CPU's (bf16
activations as on the GPU, our Triton kernels' CPU paths), so a graph that passes here may still fail on the GPU
and its launch counts are close to the GPU's, not equal.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
import train_gpt as tg  # noqa: E402
from bench_ttt_vs_reference import TOY  # noqa: E402

DEFAULTS = {"DATA_PATH": "data", "TTT_BATCH_SIZE": "2"}  # no data is read; a batch of 1 would specialise


class NoKernel:
    """Stands in for a Triton kernel that Inductor would compile: its code was generated, nothing runs it."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def generate_only():
    """Inductor writes Triton code for CPU graphs and compiles none of it (CPU Triton has no backend)."""
    import torch._inductor.async_compile as async_compile
    import torch.utils._triton as triton_utils
    torch._inductor.config.cpu_backend = "triton"
    triton_utils.triton_hash_with_backend = lambda: "codegen-only"
    async_compile.AsyncCompile.triton = lambda self, *args, **kwargs: NoKernel()


def wrapper_launches(source: str) -> tuple[int, int]:
    """(Triton kernel launches, extern and fallback kernel calls) in the call function of Inductor's generated
    wrapper."""
    start = source.find("def call(")
    if start < 0:
        return 0, 0
    body = source[start:]
    body = body[:body.find("\ndef ", 1)] if "\ndef " in body[1:] else body
    return body.count(".run("), len(re.findall(r"(?:extern_kernels|torch\.ops)\.[\w.]+\(", body))


def codegen_backend(results: list):
    """A torch.compile backend: AOTAutograd splits forward and backward; Inductor generates each one's code
    (an error is kept in results), then the graph runs eagerly."""
    from torch._functorch.aot_autograd import aot_module_simplified, make_boxed_func
    from torch._inductor.compile_fx import compile_fx_inner
    from torch._inductor.decomposition import select_decomp_table

    def generate(gm, example_inputs):
        try:
            compiled = compile_fx_inner(gm, example_inputs)
            results.append((len(gm.graph.nodes), None, wrapper_launches(compiled.source_code)))
        except Exception as e:  # reported with its graph, then the next graph
            results.append((len(gm.graph.nodes), f"{type(e).__name__}: {str(e).strip()[:300]}", None))
        return make_boxed_func(gm.forward)
    return lambda gm, example_inputs: aot_module_simplified(gm, example_inputs, fw_compiler=generate,
                                                            bw_compiler=generate, decompositions=select_decomp_table())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--toy", action="store_true", help="a small model (the environment overrides it)")
    args = ap.parse_args(argv)
    h = tg.load_hyperparameters({**DEFAULTS, **(TOY if args.toy else {}), **os.environ})
    generate_only()
    tg.activation_dtype = lambda device: torch.bfloat16  # the GPU's residual stream, its casts in the graphs
    torch.manual_seed(h.seed)
    model = tg.GPT(h)
    model.looping = h.num_loops > 0  # the eval's layer order
    results = []
    tg.warm_up_ttt(tg.compiled_chunk_fn(codegen_backend(results)), model, h, tg.DistContext())
    for i, (nodes, error, launches) in enumerate(results):
        print(f"graph {i}: {nodes} nodes: " + (f"FAILED {error}" if error else
                                               "code generated: {} Triton launches, {} extern calls".format(*launches)))
    failed = sum(error is not None for _, error, _ in results)
    print(f"torch {torch.__version__}: {len(results) - failed} of {len(results)} graphs generated")
    if not results:
        print("no graph was compiled: Dynamo made none (TORCHDYNAMO_DISABLE set?), so nothing was checked")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
