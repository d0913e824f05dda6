"""GPTQ Hessian collection time on one GPU (issue 26): ours, optional earlier copies of ours (a before/after), and
the record's own collect_hessians, each on its own model of the recipe's full size with recurrence on, over the
recipe's calibration batch count, after one warm-up batch, timed to the end of the GPU work. The record runs with
TF32 on, as its main() sets it, and its own calibration loader. Nothing is compiled: a few minutes in all.

    python scripts/bench_hessians.py --recipe 1886 --data-dir DATA_DIR [--reference RECORD.py] \
        [--before NAME=PATH/train_gpt.py] [--repeats 3]

--data-dir: the record's DATA_DIR layout for the recipe (as bench_vs_reference.py --whole). --before: another
train_gpt.py (its kernels.py beside it), e.g. main's before the change: `git show REV:train_gpt.py`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_reference as bench  # noqa: E402
import record_oracle as ro  # noqa: E402

DEVICE = "cuda"


def timed(fn, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of fn, each to the end of its GPU work."""
    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def load_script(path: Path, name: str):
    """A copy of train_gpt.py as its own module, with the kernels.py beside it."""
    saved = sys.modules.pop("kernels", None)
    sys.path.insert(0, str(path.parent))
    try:
        module = ro.load_module(path, name)
    finally:
        sys.path.remove(str(path.parent))
        if saved is not None:
            sys.modules["kernels"] = saved
    return module


def ours(tg, env: dict, repeats: int) -> tuple[int, list[float]]:
    device = torch.device(DEVICE)
    h, ctx = tg.load_hyperparameters(env), tg.DistContext(device=device)
    # for training, as a run builds it (positional: --before's older signature takes it too); the collection
    # bypasses the MLP kernel
    model = tg.build_model(h, device, True)
    model.looping = h.num_loops > 0
    loader = tg.TrainLoader(h, ctx, tg.MICRO_BATCHES)
    tg.collect_hessians(model, list(tg.calibration_batches(loader, h, ctx))[:1], ctx)  # warm-up
    return h.gptq_calibration_batches, timed(
        lambda: tg.collect_hessians(model, tg.calibration_batches(loader, h, ctx), ctx), repeats)


def record_time(script: Path, env: dict, repeats: int) -> list[float]:
    device = torch.device(DEVICE)
    record_env = ro.record_env_for(ro.tg.load_hyperparameters(env), script, base={})
    record = ro.import_record(record_env, script, name="record_hessians")
    torch.backends.cuda.matmul.allow_tf32 = True  # the record's main() settings
    torch.backends.cudnn.allow_tf32 = True
    with ro.record_env(record_env, script):
        h = record.Hyperparameters()
        model = record.GPT(h).to(device).bfloat16()
        record.restore_fp32_params(model)
        model.looping_active = h.num_loops > 0
        record.collect_hessians(model, record.ShuffledSequenceLoader(h, device), h, device, n_calibration_batches=1)
        # its serialize() builds its loader inside the timed span too
        return timed(lambda: record.collect_hessians(model, record.ShuffledSequenceLoader(h, device), h, device,
                                                     n_calibration_batches=h.gptq_calibration_batches), repeats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=tuple(ro.RECORDS), default="1886")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--reference", type=Path, help="the record's train_gpt.py (default: the recipe's, ../shared)")
    p.add_argument("--before", action="append", default=[], help="NAME=PATH of another train_gpt.py")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("error: bench_hessians.py times the GPU: run it on a machine with CUDA")
    script = (args.reference or ro.RECORDS[args.recipe]).resolve()
    if ro.reference_missing_reason(script):
        raise SystemExit(f"error: {ro.reference_missing_reason(script)}: give --reference PATH/train_gpt.py")
    bench.prepare_data(args.data_dir, *bench.recipe_layout(args.recipe))  # checked, shards decompressed
    env = {"RECIPE": args.recipe, "DATA_DIR": str(args.data_dir.resolve())}  # both scripts' paths follow from it
    scripts = [("ours", ro.tg)] + [(name, load_script(Path(path).resolve(), f"before_{name}"))
                                   for name, path in (bench._script_variant(spec) for spec in args.before)]
    rows = []
    for name, module in scripts:
        batches, seconds = ours(module, env, args.repeats)
        rows.append((name, batches, seconds))
        torch.cuda.empty_cache()
    rows.append(("record", ro.tg.load_hyperparameters(env).gptq_calibration_batches,
                 record_time(script, env, args.repeats)))
    print(f"GPTQ Hessians, RECIPE={args.recipe}, {torch.cuda.get_device_name()}, torch {torch.__version__}")
    best_record = min(rows[-1][2])
    for name, batches, seconds in rows:
        runs = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"{name:>12s}: {batches} batches, best {min(seconds):.2f} s ({runs}), {min(seconds) / best_record:.3f}x "
              "the record's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
