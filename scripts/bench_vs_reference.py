"""Run golfrun's train_gpt.py and another training script (a record's, path given, never shipped here) on the
same GPUs, the same data and the same wallclock, one after the other, and compare them.

    python scripts/bench_vs_reference.py --reference ~/records/2026-04-29_SP8192_FusedCE/train_gpt.py \
        --seconds 300 --nproc 1 --data ./data/datasets/fineweb10B_sp8192 \
        --tokenizer ./data/tokenizers/fineweb_8192_bpe.model --env SEED=42 --ref-env TTT_ENABLED=0

Both get DATA_PATH, TOKENIZER_PATH, MAX_WALLCLOCK_SECONDS=--seconds, RUN_ID and every --env KEY=VALUE; only
the reference gets --ref-env, only ours --ours-env (our script rejects unknown knob-like variables). Each runs
in its own folder under --workdir (its logs/ and artifact land there), with the reference's folder on
PYTHONPATH so its own imports resolve. Launch: `python SCRIPT` for --nproc 1, torchrun otherwise.

From each run's output (console and logs/*.txt) it reads the last `step_avg:...ms` (ms/step), the step count,
and every `<label> ... val_bpb:X` line; tokens/s is --batch-tokens / step time (both scripts train 786,432
tokens per step by default). It prints ms/step, tokens/s, steps and the final val_bpb of each, and the ratios
ours/reference. A run that fails, or whose output has no step_avg, is an error that shows its last lines.
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = REPO / "train_gpt.py"
BPB_LINE = re.compile(r"^(\S+)\s.*?val_bpb:\s*([0-9.]+)", re.M)


def parse_output(text: str, source: str) -> dict:
    """ms/step, steps and the val_bpb lines of a parameter-golf training run's output."""
    step_avgs = re.findall(r"step_avg:\s*([0-9.]+)\s*ms", text)
    if not step_avgs:
        raise SystemExit(f"{source}: no 'step_avg:...ms' in its output: not a parameter-golf training script, "
                         f"or it stopped before its first logged step. Last lines:\n{_tail(text)}")
    steps = re.findall(r"^step:(\d+)/", text, re.M) + re.findall(r"\bsteps:(\d+)", text)
    bpb = [(label.rstrip(":"), float(value)) for label, value in BPB_LINE.findall(text)]
    return dict(ms_per_step=float(step_avgs[-1]), steps=max(int(s) for s in steps) if steps else 0, bpb=bpb)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _pairs(items: list[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def run_one(name: str, script: Path, env_extra: dict, args, workdir: Path) -> dict:
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "TMPDIR", "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(script.parent), env.get("PYTHONPATH", "")]))
    env.update(PYTHONUNBUFFERED="1", DATA_PATH=str(Path(args.data).resolve()),
               TOKENIZER_PATH=str(Path(args.tokenizer).resolve()), MAX_WALLCLOCK_SECONDS=str(args.seconds),
               RUN_ID=f"bench_{name}")
    env.update(env_extra)
    if args.nproc == 1:
        cmd = [sys.executable, str(script)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               str(script)]
    print(f"[{name}] {' '.join(cmd)}  (in {folder})", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{name}: still running after --timeout {args.timeout} s") from None
    output = proc.stdout + "\n" + proc.stderr
    (folder / "console.txt").write_text(output)
    if proc.returncode != 0:
        raise SystemExit(f"{name} ({script}) failed with exit code {proc.returncode}. Last lines:\n{_tail(output)}")
    logs = "\n".join(p.read_text(errors="replace") for p in sorted((folder / "logs").glob("*.txt"))) \
        if (folder / "logs").is_dir() else ""
    result = parse_output(output + "\n" + logs, f"{name} ({script})")
    result["tokens_per_s"] = args.batch_tokens / (result["ms_per_step"] / 1000)
    return result


def report(ours: dict, ref: dict) -> str:
    def final(r):
        return r["bpb"][-1] if r["bpb"] else ("(none)", float("nan"))
    (ours_label, ours_bpb), (ref_label, ref_bpb) = final(ours), final(ref)
    rows = [("ms/step", f"{ours['ms_per_step']:.2f}", f"{ref['ms_per_step']:.2f}",
             f"{ours['ms_per_step'] / ref['ms_per_step']:.3f}"),
            ("tokens/s", f"{ours['tokens_per_s']:,.0f}", f"{ref['tokens_per_s']:,.0f}",
             f"{ours['tokens_per_s'] / ref['tokens_per_s']:.3f}"),
            ("steps", str(ours["steps"]), str(ref["steps"]), f"{ours['steps'] / max(ref['steps'], 1):.3f}"),
            ("final val_bpb", f"{ours_bpb:.5f}", f"{ref_bpb:.5f}", f"{ours_bpb - ref_bpb:+.5f} (diff)")]
    lines = [f"{'':16s} {'ours':>14s} {'reference':>14s} {'ours/ref':>16s}"]
    lines += [f"{a:16s} {b:>14s} {c:>14s} {d:>16s}" for a, b, c, d in rows]
    lines.append(f"final val_bpb lines: ours '{ours_label}', reference '{ref_label}'")
    for name, r in (("ours", ours), ("reference", ref)):
        lines.append(f"{name} val_bpb lines: " + ", ".join(f"{label} {v:.5f}" for label, v in r["bpb"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True, help="the other training script")
    parser.add_argument("--seconds", type=float, default=300.0, help="MAX_WALLCLOCK_SECONDS for both")
    parser.add_argument("--nproc", type=int, default=1, help="GPUs (processes) per run")
    parser.add_argument("--data", default="./data/datasets/fineweb10B_sp8192", help="DATA_PATH for both")
    parser.add_argument("--tokenizer", default="./data/tokenizers/fineweb_8192_bpe.model")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for both runs")
    parser.add_argument("--ref-env", action="append", default=[], help="KEY=VALUE for the reference only")
    parser.add_argument("--ours-env", action="append", default=[], help="KEY=VALUE for ours only")
    parser.add_argument("--batch-tokens", type=int, default=786_432, help="tokens per step (for tokens/s)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run is abandoned")
    parser.add_argument("--workdir", type=Path,
                        default=Path("bench_runs") / datetime.datetime.now().strftime("%Y%m%d_%H%M%S"))
    args = parser.parse_args(argv)
    if not args.reference.is_file():
        raise SystemExit(f"--reference {args.reference}: no such file")
    for flag, path in (("--data", Path(args.data)), ("--tokenizer", Path(args.tokenizer))):
        if not path.exists():
            raise SystemExit(f"{flag} {path}: not found (download with scripts/download_data.py)")
    common = _pairs(args.env, "--env")
    ours = run_one("ours", OURS, {**common, **_pairs(args.ours_env, "--ours-env")}, args, args.workdir)
    ref = run_one("reference", args.reference.resolve(), {**common, **_pairs(args.ref_env, "--ref-env")},
                  args, args.workdir)
    print(report(ours, ref))
    return 0


if __name__ == "__main__":
    sys.exit(main())
