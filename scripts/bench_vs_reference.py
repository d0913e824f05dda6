r"""Ours (train_gpt.py) against the record's own script on the same GPUs and data: ms/step with depth
recurrence off and on, time from launch to the first step, peak memory and tokens/s, with the ratios
ours/record.

    # detached, on a 2-GPU machine: ours on GPU 0, the record on GPU 1 at the same time; returns at once
    python scripts/bench_vs_reference.py launch --reference ../shared/reference/record_1886_train_gpt.py \
        --data-dir .gpu_data/ds --workdir bench_runs/b1 --mode parallel --gpus 0,1 --steps 100 \
        --ab nofusedmlp:FUSED_MLP_ENABLED=0
    python scripts/bench_vs_reference.py report --workdir bench_runs/b1    # any time, as often as needed
    # one GPU, one run after the other, in the foreground (launch + wait + report)
    python scripts/bench_vs_reference.py run --reference ... --data-dir ... --workdir ... --mode serial --gpus 0

--data-dir is laid out as the record reads its DATA_DIR: datasets/fineweb10B_sp8192/fineweb_{train,val}_*.bin
and tokenizers/fineweb_8192_bpe.model (`.bin.xz` shards are decompressed beside themselves first). Ours gets
DATA_PATH and TOKENIZER_PATH into the same files. The record's folder goes first on its PYTHONPATH, so the
FlashAttention 3 shim there (`flash_attn_interface.py`) stands in for FA3 when the package is missing.

Schedule: --steps N (default) gives both a step-based schedule (ITERATIONS=N, MAX_WALLCLOCK_SECONDS=0: no
cap), so both switch the recurrence on at the same step (0.35 N) and run the same number of steps in each
state. --seconds S caps both by the
wallclock instead (as in a real run; they then switch at different steps). Both log every --log-every steps.

Whole runs (--whole, issue 26): the wallclock cap on (--seconds), GPTQ and the artifact included, TTT off, no
periodic validation; ours runs RECIPE=--recipe and the record (its script by default: #1886's or #2135's) gets
every setting of ours that its script reads, i.e. its logged run's configuration. --data-dir is then the
recipe's layout (#2135: datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved/ with the val byte sidecar,
tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model). The record's artifact step needs the
`pyminify` program on PATH. The record's scripts compile for 6-9 minutes before step 1: `launch` returns at once,
`report --wait S` collects later. The report (read from both logs by golflog.training_end): steps, training budget,
train stop, data-access end, Hessian time and our probe, ms/step by recurrence state over the whole run (to the
stop line), first step, peak memory; ours/record against issue 26's targets; and our projected 8xH100 steps in
600 s from the record's seed logs beside its script (the method is printed). --dry-run prints each run's command
and environment.

    python scripts/bench_vs_reference.py launch --whole --recipe 2135 --data-dir D --workdir W --seconds 300 \
        --mode parallel --gpus 0,1 --env SEED=42
    python scripts/bench_vs_reference.py report --workdir W --wait 540

--no-record runs ours and its --ab variants only, each variant's ratios against ours (no targets, no
projection): a setting's whole-run A/B on the same code without the record's 6-9 minutes of compile, e.g.
Inductor's coordinate descent tuning, which Inductor reads from the environment:

    python scripts/bench_vs_reference.py run --whole --no-record --recipe 2135 --data-dir D --workdir W \
        --seconds 300 --mode serial --gpus 0 --ab cdt:TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1

--train-only stops each whole run once it has logged its Hessians (every figure of the table is in by then): the
record right after its collection; ours logs its Hessian count after GPTQ and packing (~1 min more on one H200),
so only its evaluation is skipped. A one-GPU session fits both scripts one after the other.
--record-first runs the record before ours on a lane (serial mode: its figures are the ones not re-derivable from
our earlier runs when a session is cut short).

Each run is stopped by the bench as soon as it has logged its peak training memory (the record's
`peak memory allocated:`, ours `peak_memory_allocated:`): the evaluation, GPTQ and TTT that follow are not
measured here (and the record's artifact step needs the `pyminify` program). --full lets them run.

Runs go to GPU "lanes": --gpus lists the GPUs, --nproc GPUs per run (torchrun when > 1). --mode parallel
gives each lane its own GPUs: the record alone on the last lane, ours and the --ab variants on the others, one
after the other; --mode serial (or sequential) runs everything on the first lane in turn. --ab NAME:KEY=VALUE[,KEY=VALUE]
adds a variant of ours (for example the fused-MLP A/B: `--ab nofusedmlp:FUSED_MLP_ENABLED=0`);
--ab-script NAME=PATH adds another copy of ours, run with ours' environment (for example an earlier commit's
train_gpt.py, with its kernels.py (and ship.py) beside it, or a shipped file: a before/after on the same machine).

Every run lives in WORKDIR/<name>/: console.txt holds its output, each line prefixed by the seconds since the
run was launched (`[   12.345] ...`), status.json its state. `report` reads whatever exists, so a launch can
be collected by a later command; it says which runs are still going.

Figures (from the console lines; the record prints cumulative tokens/s, ours cumulative train time):
  ms/step off/on   the mean over the steps between two logged points in one recurrence state: off from step
                   --skip-steps to the switch, on from the switch to the last logged step
  tokens/s         train_batch_tokens / (ms/step) for each state, and over all steps
  first step       seconds from launch to the first `step 1` line (compile and warm-up included)
  peak memory      torch.cuda.max_memory_allocated after training, GiB
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import golflog  # noqa: E402
sys.path.insert(0, str(REPO))
import ship  # noqa: E402
from golflog import OURS_FORMAT, RECORD_FORMAT, LogFormat  # noqa: E402

OURS = REPO / "train_gpt.py"
RECORD_NAME = "record"
DATASET_SUBDIR = Path("datasets") / "fineweb10B_sp8192"
TOKENIZER_FILE = Path("tokenizers") / "fineweb_8192_bpe.model"
LOOP_ENABLE_FRAC = 0.35  # both scripts' default switch point (fraction of training)
WAIT_POLL_SECONDS = 5.0
STAMP = re.compile(r"^\[\s*([0-9.]+)\] ?(.*)$")
# Environment passed through to every run; everything else comes from the bench (ours rejects stray knobs).
PASS_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "OMP_NUM_THREADS", "TRITON_INTERPRET",
            "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "LD_LIBRARY_PATH", "CUDA_HOME")


# -----------------------------------------------------------------------------
# Log figures of the two scripts (their line formats: golflog.RECORD_FORMAT, golflog.OURS_FORMAT)
# -----------------------------------------------------------------------------

DEFAULT_BATCH_TOKENS = 786_432


def stamped_lines(text: str) -> list[tuple[float | None, str]]:
    """(seconds since launch or None, line) for every line of a console file."""
    out = []
    for line in text.splitlines():
        m = STAMP.match(line)
        out.append((float(m.group(1)), m.group(2)) if m else (None, line))
    return out


def parse_run(console: str, fmt: LogFormat, extra_log: str = "", skip_steps: int = 5) -> dict:
    """The training figures of one run from its stamped console (and, for config lines, its log file)."""
    lines = stamped_lines(console)
    text = "\n".join(line for _, line in lines)
    config_text = text + "\n" + extra_log
    m = fmt.batch_tokens.search(config_text)
    batch_tokens = int(m.group(1)) if m else DEFAULT_BATCH_TOKENS
    points = []  # (step, cumulative train ms)
    first_step_s = None
    for stamp, line in lines:
        m = fmt.step.match(line)
        if not m:
            continue
        step, value = int(m.group(1)), float(m.group(2))
        cum_ms = step * batch_tokens / value * 1000 if fmt.cumulative_tok_s else value
        points.append((step, cum_ms))
        if first_step_s is None and stamp is not None:
            first_step_s = stamp
    stop = fmt.stop_line.search(text)  # a capped run's end: the last point, exact
    if stop and (not points or int(stop.group(2)) > points[-1][0]):
        points.append((int(stop.group(2)), float(stop.group(1))))
    switch = fmt.switch.search(text)
    switch_step = int(switch.group(1)) if switch else None
    peak = fmt.peak.search(text)
    peak_gib = (float(peak.group(1)) / 1024 if fmt.peak_mib else float(peak.group(1))) if peak else None
    off_end = switch_step if switch_step is not None else math.inf
    off = _segment([p for p in points if skip_steps <= p[0] <= off_end])
    on = _segment([p for p in points if switch_step is not None and p[0] >= switch_step])
    last = points[-1] if points else None
    return dict(points=len(points), steps=last[0] if last else 0, switch_step=switch_step,
                ms_off=off, ms_on=on, ms_all=last[1] / last[0] if last else None,
                first_step_s=first_step_s, peak_gib=peak_gib, batch_tokens=batch_tokens)


def _segment(points: list[tuple[int, float]]) -> float | None:
    """Mean ms/step between the first and last of the points (None with fewer than two steps between)."""
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    (s0, t0), (s1, t1) = points[0], points[-1]
    return (t1 - t0) / (s1 - s0)


# -----------------------------------------------------------------------------
# Plan: which runs, with which environment, on which GPUs
# -----------------------------------------------------------------------------

def _pairs(items: list[str], flag: str) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _run_name(name: str, flag: str, spec: str, example: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in ("ours", RECORD_NAME):
        raise SystemExit(f"{flag} {spec!r}: NAME must be letters, digits, '_' or '-', not 'ours' or "
                         f"'{RECORD_NAME}' (e.g. {example})")
    return name


def _variant(spec: str) -> tuple[str, dict]:
    name, sep, body = spec.partition(":")
    if not sep:
        raise SystemExit(f"--ab {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE] (e.g. nofusedmlp:FUSED_MLP_ENABLED=0)")
    _run_name(name, "--ab", spec, "nofusedmlp:FUSED_MLP_ENABLED=0")
    return name, _pairs(body.split(","), f"--ab {name}")


def _script_variant(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    if not sep:
        raise SystemExit(f"--ab-script {spec!r}: expected NAME=PATH (e.g. before=/tmp/before/train_gpt.py)")
    _run_name(name, "--ab-script", spec, "before=/tmp/before/train_gpt.py")
    script = Path(path).resolve()
    if not script.is_file():
        raise SystemExit(f"--ab-script {name}: no such file {path}")
    shipped = script.read_bytes().startswith(ship.SHIPPED_MARK.encode())  # holds its kernels (a before may be older)
    if not shipped and not (script.parent / "kernels.py").is_file():  # else it would run without its kernels
        raise SystemExit(f"--ab-script {name}: no kernels.py beside {path}; copy the matching kernels.py there "
                         "(and ship.py, which a checkout's train_gpt.py since 2026-12-04 needs to count its code)")
    return name, script


def prepare_data(data_dir: Path, subdir: Path = DATASET_SUBDIR, tokenizer_file: Path = TOKENIZER_FILE
                 ) -> tuple[Path, Path]:
    """Check the record's DATA_DIR layout, decompress `.bin.xz` shards; return (shard folder, tokenizer)."""
    shards, tokenizer = data_dir / subdir, data_dir / tokenizer_file
    if not tokenizer.is_file():
        raise SystemExit(f"--data-dir {data_dir}: no {tokenizer_file} (the record's DATA_DIR layout)")
    for packed in sorted(shards.glob("fineweb_*.bin.xz")):
        target = packed.with_suffix("")
        if not target.exists():
            print(f"decompressing {packed}", flush=True)
            tmp = target.with_suffix(".bin.part")
            with lzma.open(packed) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 24)
            tmp.rename(target)
    for split in ("train", "val"):
        if not list(shards.glob(f"fineweb_{split}_*.bin")):
            raise SystemExit(f"--data-dir {data_dir}: no {subdir}/fineweb_{split}_*.bin")
    return shards.resolve(), tokenizer.resolve()


def recipe_layout(recipe: str) -> tuple[Path, Path]:
    """(shard folder, tokenizer) of a recipe inside DATA_DIR: our own defaults for it, which are the record's."""
    h = _record_oracle().tg.load_hyperparameters({"RECIPE": recipe})
    return Path(h.data_path).relative_to(h.data_dir), Path(h.tokenizer_path).relative_to(h.data_dir)


def _record_oracle():
    import record_oracle  # imports train_gpt and torch: only where a whole run is planned or reported
    return record_oracle


def whole_run_envs(args, shards: Path, tokenizer: Path, common: dict) -> tuple[dict, dict | None]:
    """(ours, the record's) environments of a whole run: ours is RECIPE=args.recipe with the cap on, TTT off,
    no periodic validation (a step-0 one would delay the first step); the record gets every setting of ours
    that its script reads (its logged run's configuration, as our recipe reproduces it), TTT off too; None
    with --no-record."""
    ours = {"RECIPE": args.recipe, "DATA_PATH": str(shards), "TOKENIZER_PATH": str(tokenizer), "TTT_ENABLED": "0",
            "MAX_WALLCLOCK_SECONDS": str(args.seconds), "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": str(args.log_every),
            **common}
    ours_env = {**ours, **_pairs(args.ours_env, "--ours-env")}
    if args.no_record:
        return ours_env, None
    ro = _record_oracle()
    record = ro.record_env_for(ro.tg.load_hyperparameters(ours), args.reference, base={})  # TTT off from ours
    folders = dict.fromkeys(str(d) for d in (args.reference.resolve().parent, ro.shim_dir(args.reference)))
    record.update(DATA_DIR=str(args.data_dir.resolve()), **common, **_pairs(args.ref_env, "--ref-env"),
                  PYTHONPATH=os.pathsep.join(folders))
    return ours_env, record


def check_whole_run_tools(recipe: str, dry_run: bool, record: bool) -> None:
    """The record's artifact step runs `pyminify` before its Hessians: without it there is no Hessian time."""
    if record and shutil.which("pyminify") is None:
        problem = ("the record's artifact step runs the `pyminify` program (PyPI python-minifier), not on PATH: "
                   "pip install --target DIR python-minifier, then PATH=DIR/bin:$PATH")
        if not dry_run:
            raise SystemExit(f"error: {problem}")
        print(f"warning: {problem}")
    if recipe == "2135" and shutil.which("lrzip") is None:
        print("warning: no lrzip on PATH: COMPRESSOR=pergroup falls back to brotli in ours and in the record's "
              "script (after the figures measured here)", flush=True)


def plan_runs(args) -> dict:
    if args.whole:
        shards, tokenizer = prepare_data(args.data_dir, *recipe_layout(args.recipe))
    else:
        shards, tokenizer = prepare_data(args.data_dir)
    record = None if args.no_record else args.reference.resolve()
    common = _pairs(args.env, "--env")
    schedule_ours = dict(TRAIN_LOG_EVERY=str(args.log_every))
    schedule_record = dict(TRAIN_LOG_EVERY=str(args.log_every))
    if args.seconds:
        schedule_ours["MAX_WALLCLOCK_SECONDS"] = schedule_record["MAX_WALLCLOCK_SECONDS"] = str(args.seconds)
    else:
        for schedule in (schedule_ours, schedule_record):  # 0: no cap, progress = step / ITERATIONS
            schedule.update(ITERATIONS=str(args.steps), MAX_WALLCLOCK_SECONDS="0")
    ours_env = {"DATA_PATH": str(shards), "TOKENIZER_PATH": str(tokenizer), **schedule_ours, **common,
                **_pairs(args.ours_env, "--ours-env")}
    record_env = record and {"DATA_DIR": str(args.data_dir.resolve()), "TTT_ENABLED": "0", **schedule_record,
                             **common, **_pairs(args.ref_env, "--ref-env"), "PYTHONPATH": str(record.parent)}
    if args.whole:
        ours_env, record_env = whole_run_envs(args, shards, tokenizer, common)
    runs = [dict(name="ours", script=str(args.ours_script.resolve()), env=ours_env, format="ours")]
    if record:
        runs.append(dict(name=RECORD_NAME, script=str(record), env=record_env, format="record"))
    for spec in args.ab:
        name, extra = _variant(spec)
        runs.append(dict(name=name, script=str(OURS), env={**ours_env, **extra}, format="ours"))
    for spec in args.ab_script:
        name, script = _script_variant(spec)
        runs.append(dict(name=name, script=str(script), env=dict(ours_env), format="ours"))
    if len({run["name"] for run in runs}) < len(runs):
        raise SystemExit("--ab/--ab-script: two runs share a name")
    for run in runs:
        run["env"]["RUN_ID"] = f"bench_{run['name']}"
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    lanes = [gpus[i:i + args.nproc] for i in range(0, len(gpus) - args.nproc + 1, args.nproc)]
    if not lanes:
        raise SystemExit(f"--gpus {args.gpus}: fewer GPUs than --nproc {args.nproc}")
    if args.mode in ("serial", "sequential") or len(lanes) == 1:
        lanes = lanes[:1]
        for run in runs:
            run["lane"] = 0
        if args.record_first:
            runs.sort(key=lambda run: run["format"] != "record")
    else:  # the record alone on the last lane; ours and its variants spread over the others (all, without it)
        ours_lanes = len(lanes) - (record is not None)
        for i, run in enumerate(r for r in runs if r["format"] == "ours"):
            run["lane"] = i % ours_lanes
        if record:
            runs[1]["lane"] = len(lanes) - 1
    seed_logs = sorted(record.parent.glob("*seed*.log")) if record else []
    whole = dict(recipe=args.recipe, seed_logs=[str(p) for p in seed_logs]) if args.whole else None
    if args.train_only and not args.whole:
        raise SystemExit("error: --train-only is for --whole runs (the short bench already stops after training)")
    return dict(runs=runs, lanes=lanes, nproc=args.nproc, full=args.full or args.whole, skip_steps=args.skip_steps,
                baseline="ours" if args.no_record else RECORD_NAME,
                train_only=args.train_only,
                steps=args.steps, seconds=args.seconds, mode=args.mode, created=time.time(), whole=whole)


# -----------------------------------------------------------------------------
# Running: one detached process per lane runs its runs in turn, stamping every output line
# -----------------------------------------------------------------------------

def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def run_command(script: str, nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script]


def run_stamped(run: dict, gpus: list[str], plan: dict, folder: Path) -> int:
    """Run one training script in `folder`, writing console.txt with launch-relative stamps; stop it after
    its training figures unless the plan says full. Returns its exit code (or the signal that stopped it)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k in PASS_ENV}
    env.update(PYTHONUNBUFFERED="1", NCCL_NVLS_ENABLE="0", CUDA_VISIBLE_DEVICES=",".join(gpus))
    extra_path = run["env"].get("PYTHONPATH")
    env.update({k: v for k, v in run["env"].items() if k != "PYTHONPATH"})
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, env.get("PYTHONPATH", "")]))
    fmt = RECORD_FORMAT if run["format"] == "record" else OURS_FORMAT
    stop = fmt.hessians if plan.get("train_only") else None if plan["full"] else fmt.stop
    cmd = run_command(run["script"], plan["nproc"])
    status = dict(state="running", cmd=cmd, gpus=gpus, launched=time.time())
    _write_json(folder / "status.json", status)
    t0 = time.perf_counter()
    stopped = False
    with open(folder / "console.txt", "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1, start_new_session=True)
        status["pid"] = proc.pid
        _write_json(folder / "status.json", status)
        for line in proc.stdout:
            line = line.rstrip("\n")
            out.write(f"[{time.perf_counter() - t0:9.3f}] {line}\n")
            out.flush()
            if stop is not None and not stopped and stop.match(line):
                stopped = True
                out.write(f"[{time.perf_counter() - t0:9.3f}] [bench] training figures complete: stopping\n")
                os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait()
    status.update(state="stopped_by_bench" if stopped else ("done" if code == 0 else "failed"),
                  returncode=code, seconds=time.perf_counter() - t0)
    _write_json(folder / "status.json", status)
    return code


def run_lane(workdir: Path, lane: int) -> None:
    plan = json.loads((workdir / "plan.json").read_text())
    for run in plan["runs"]:
        if run["lane"] == lane:
            print(f"[lane {lane}] {run['name']} on GPUs {plan['lanes'][lane]}", flush=True)
            run_stamped(run, plan["lanes"][lane], plan, workdir / run["name"])


def launch(args, detach: bool) -> list[subprocess.Popen]:
    if args.whole and not args.seconds:
        raise SystemExit("error: --whole needs --seconds (the wallclock cap of both runs, e.g. 300)")
    record_flags = [flag for flag, given in (("--reference", args.reference), ("--ref-env", args.ref_env),
                                             ("--record-first", args.record_first)) if given]
    if args.no_record and record_flags:
        raise SystemExit(f"error: --no-record runs no record: leave out {', '.join(record_flags)}")
    if args.whole:
        if not args.no_record:
            args.reference = args.reference or _record_oracle().RECORDS[args.recipe]
        check_whole_run_tools(args.recipe, args.dry_run, record=not args.no_record)
    if args.reference is None and not args.no_record:
        raise SystemExit("error: --reference is needed (the record's train_gpt.py), except with --whole or "
                         "--no-record")
    if args.reference and not args.reference.is_file():
        raise SystemExit(f"--reference {args.reference}: no such file")
    if args.dry_run:  # what would run: each run's lane, command and environment
        plan = plan_runs(args)
        for run in plan["runs"]:
            print(f"{run['name']} (lane {run['lane']}, GPUs {','.join(plan['lanes'][run['lane']])}): "
                  f"{' '.join(run_command(run['script'], plan['nproc']))}")
            print("  " + " ".join(f"{k}={v}" for k, v in sorted(run["env"].items())))
        return []
    args.workdir.mkdir(parents=True, exist_ok=True)
    if (args.workdir / "plan.json").exists():
        raise SystemExit(f"--workdir {args.workdir} already holds a bench (plan.json): use `report` on it or "
                         "pick a new folder")
    plan = plan_runs(args)
    for run in plan["runs"]:
        (args.workdir / run["name"]).mkdir(exist_ok=True)
        _write_json(args.workdir / run["name"] / "status.json", dict(state="waiting"))
    _write_json(args.workdir / "plan.json", plan)
    procs = []
    for lane in range(len(plan["lanes"])):
        if not any(r["lane"] == lane for r in plan["runs"]):
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "_lane", "--workdir", str(args.workdir.resolve()),
               "--lane", str(lane)]
        log = open(args.workdir / f"lane{lane}.txt", "w")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=detach))
        names = [r["name"] for r in plan["runs"] if r["lane"] == lane]
        print(f"lane {lane} (GPUs {','.join(plan['lanes'][lane])}): {', '.join(names)}  pid {procs[-1].pid}")
    print(f"logs under {args.workdir}/<run>/console.txt; figures: "
          f"python {Path(__file__).name} report --workdir {args.workdir}")
    return procs


# -----------------------------------------------------------------------------
# Report
# -----------------------------------------------------------------------------

def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def collect(workdir: Path) -> tuple[dict, dict]:
    plan = json.loads((workdir / "plan.json").read_text())
    results = {}
    for run in plan["runs"]:
        folder = workdir / run["name"]
        status = json.loads((folder / "status.json").read_text()) if (folder / "status.json").exists() else {}
        if status.get("state") == "running" and not _alive(status.get("pid")):
            status["state"] = "lost (process gone, no exit recorded)"
        console = (folder / "console.txt").read_text(errors="replace") if (folder / "console.txt").exists() else ""
        log_file = folder / "logs" / f"{run['env']['RUN_ID']}.txt"
        extra = log_file.read_text(errors="replace")[-2_000_000:] if log_file.exists() else ""
        fmt = RECORD_FORMAT if run["format"] == "record" else OURS_FORMAT
        result = parse_run(console, fmt, extra, plan["skip_steps"])
        if plan.get("whole"):
            result.update(golflog.training_end(extra or "\n".join(line for _, line in stamped_lines(console)), fmt))
        result["state"] = status.get("state", "waiting")
        result["tail"] = "\n".join(console.splitlines()[-6:])
        results[run["name"]] = result
    return plan, results


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ratio(a, b) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.3f}"


def report_text(plan: dict, results: dict) -> str:
    names = [r["name"] for r in plan["runs"]]
    base_name = plan.get("baseline", RECORD_NAME)  # each other run's ratios are against it
    base = results.get(base_name, {})

    def tok_s(r, key):
        return None if r.get(key) is None else r["batch_tokens"] / r[key] * 1000

    rows = [("state", lambda r: r["state"], None),
            ("steps logged", lambda r: str(r["steps"]), None),
            ("recurrence on at", lambda r: _fmt(r["switch_step"], "d"), None),
            ("ms/step, recurrence off", lambda r: _fmt(r["ms_off"], ".1f"), "ms_off"),
            ("ms/step, recurrence on", lambda r: _fmt(r["ms_on"], ".1f"), "ms_on"),
            ("ms/step, all steps", lambda r: _fmt(r["ms_all"], ".1f"), "ms_all"),
            ("tokens/s, off", lambda r: _fmt(tok_s(r, "ms_off"), ",.0f"), ("tok", "ms_off")),
            ("tokens/s, on", lambda r: _fmt(tok_s(r, "ms_on"), ",.0f"), ("tok", "ms_on")),
            ("first step after launch, s", lambda r: _fmt(r["first_step_s"], ".1f"), "first_step_s"),
            ("peak memory, GiB", lambda r: _fmt(r["peak_gib"], ".2f"), "peak_gib")]
    width = max(18, *(len(n) + 2 for n in names))
    head = f"{'':28s}" + "".join(f"{n:>{width}s}" for n in names)
    ratio_names = [n for n in names if n != base_name]
    ratio_width = lambda n: max(width, len(n) + len(base_name) + 3)  # noqa: E731
    head += "".join(f"{n + '/' + base_name:>{ratio_width(n)}s}" for n in ratio_names)
    lines = [head]
    for label, show, key in rows:
        line = f"{label:28s}" + "".join(f"{show(results[n]):>{width}s}" for n in names)
        for n in ratio_names:
            if key is None:
                cell = ""
            elif isinstance(key, tuple):
                cell = _ratio(tok_s(results[n], key[1]), tok_s(base, key[1]))
            else:
                cell = _ratio(results[n].get(key), base.get(key))
            line += f"{cell:>{ratio_width(n)}s}"
        lines.append(line)
    if plan.get("whole"):  # its own table: the same figures over the whole run, and more
        lines = [whole_report_text(plan, results)]
    schedule = f"--steps {plan['steps']}" if not plan["seconds"] else f"--seconds {plan['seconds']}"
    lines.append(f"mode {plan['mode']}, GPU lanes {plan['lanes']}, {schedule}; ms/step off from step "
                 f"{plan['skip_steps']} to the switch, on from the switch to the last logged step")
    later = [r["name"] for lane in range(len(plan["lanes"])) for r in [x for x in plan["runs"] if x["lane"] == lane][1:]]
    if later:
        lines.append(f"first-step times of {', '.join(later)} follow another run on their GPU: compile caches "
                     "(Inductor, Triton) may be warm for them")
    for n in names:
        if results[n]["state"] not in ("stopped_by_bench", "done"):
            lines.append(f"--- {n} ({results[n]['state']}), last lines:\n{results[n]['tail']}")
    return "\n".join(lines)


# ---- whole runs (--whole) ----

CHALLENGE_SECONDS = 600.0  # the training cap of the records' logs (8xH100)
RECORD_LOG_GPUS = 8
# issue 26's targets for ours/record: key -> (comparison, bound)
WHOLE_TARGETS = {"steps": (">=", 1.03), "ms_off": ("<=", 0.97), "ms_on": ("<=", 0.97), "first_step_s": ("<=", 0.4),
                 "peak_gib": ("<=", 1.0), "hessian_s": ("<=", 1.0)}
WHOLE_ROWS = (("state", "state", "s"), ("steps made", "steps", "d"), ("training budget, s", "budget_s", ".2f"),
              ("train stop, s", "stop_s", ".2f"), ("data-access end, s", "data_end_s", ".2f"),
              ("Hessians", "hessians", "d"), ("Hessian time, s", "hessian_s", ".2f"),
              ("Hessian probe before the clock, s", "probe_s", ".2f"), ("ms/step, recurrence off", "ms_off", ".1f"),
              ("ms/step, recurrence on", "ms_on", ".1f"), ("ms/step, whole run", "ms_all", ".1f"),
              ("first step after launch, s", "first_step_s", ".1f"), ("peak memory, GiB", "peak_gib", ".2f"))
WHOLE_NOTES = """training budget: the cap less the reserve (ours: GPTQ_RESERVE_SECONDS + factor x probe; the record: its
  logged `effective`). Data-access end: ours logs it (its Hessians are read inside the clock); the record's is
  derived, train stop + its Hessian time, its eval and serialization between them not counted: past its cap.
Hessian time: the record's `GPTQ:collected` line (its loader, the collection, the copy to the CPU); ours the
  data-access end less the train stop (EMA weights and the collection). The probe is ours' measurement before
  the clock, on the same rows; the record has none (n/a).
Peak memory: the record logs it after training (before GPTQ), ours after the Hessians."""


def _met(ratio, key) -> str:
    if ratio is None or key not in WHOLE_TARGETS:
        return ""
    op, bound = WHOLE_TARGETS[key]
    return "met" if (ratio >= bound if op == ">=" else ratio <= bound) else "NOT met"


def whole_report_text(plan: dict, results: dict) -> str:
    """The whole-run table: each run's figures, ours/record with issue 26's target, and the 8xH100 projection;
    with --no-record each variant/ours instead."""
    # ours and its variants in run order, the record last, whatever order they ran in (--record-first)
    names = sorted((r["name"] for r in plan["runs"]), key=lambda name: name == RECORD_NAME)
    ours, record = results["ours"], results.get(RECORD_NAME)
    # ours/record with issue 26's targets; --no-record: each variant/ours
    pairs = [("ours", RECORD_NAME)] if record else [(n, "ours") for n in names if n != "ours"]
    widths = {(a, b): max(13, len(a + b) + 3) for a, b in pairs}  # a ratio column: "a/b" and two spaces
    head = f"{'whole run (--seconds ' + format(plan['seconds'], 'g') + ')':36s}" + "".join(f"{n:>17s}" for n in names)
    lines = [head + "".join(f"{a + '/' + b:>{widths[a, b]}s}" for a, b in pairs)
             + (f"{'target':>9s}{'':>9s}" if record else "")]
    for label, key, spec in WHOLE_ROWS:
        cells = []
        for n in names:
            value = results[n].get(key)
            missing = "n/a" if (n == RECORD_NAME and key == "probe_s") else "not in log"
            cells.append(f"{(missing if value is None else format(value, spec)):>17s}")
        line = f"{label:36s}" + "".join(cells)
        ratios = {}
        for a, b in pairs:
            numbers = spec != "s" and results[a].get(key) is not None and results[b].get(key)
            ratios[a, b] = results[a][key] / results[b][key] if numbers else None
            line += f"{_fmt(ratios[a, b], '.3f'):>{widths[a, b]}s}"
        if record:
            op, bound = WHOLE_TARGETS.get(key, ("", None))
            target = "" if bound is None else f"{op} {bound:g}"
            derived = "  (record: derived)" if key == "data_end_s" and record.get("data_end_derived") else ""
            line += f"{target:>9s}{_met(ratios['ours', RECORD_NAME], key):>9s}" + derived
        lines.append(line)
    lines.append(WHOLE_NOTES)
    for n in names:
        r, owner = results[n], "ours'" if n == "ours" else f"{n}'s"
        if n != RECORD_NAME and r.get("hessian_s") and r.get("probe_s"):  # the record has no probe
            lines.append(f"{owner} Hessians inside the clock took {r['hessian_s'] / r['probe_s']:.3f}x the probe "
                         f"(reserve factor {r['reserve_factor']:g}, plus {r['gptq_reserve_s']:g} s)")
    lines += (projection_lines(plan, ours, record) if record
              else ["projection: none without the record's run (--no-record)"])
    return "\n".join(lines)


def steps_in(budget_s: float, ms_off: float, ms_on: float) -> float:
    """Steps in a budget whose first LOOP_ENABLE_FRAC runs at ms_off a step and the rest at ms_on."""
    return budget_s * 1000 * (LOOP_ENABLE_FRAC / ms_off + (1 - LOOP_ENABLE_FRAC) / ms_on)


def projection_lines(plan: dict, ours: dict, record: dict) -> list[str]:
    """Our steps in 600 s on 8xH100, from the record's seed logs scaled by the ratios measured here."""
    # the seed logs beside the record's script where the bench ran, else beside this checkout's copy of it
    logs = [p for p in plan["whole"]["seed_logs"] if Path(p).is_file()] or [
        str(p) for p in sorted(_record_oracle().RECORDS[plan["whole"]["recipe"]].parent.glob("*seed*.log"))]
    if any(ours.get(k) is None for k in ("ms_off", "ms_on", "probe_s", "reserve_factor", "calibration_batches")) or (
            record.get("ms_off") is None or record.get("ms_on") is None):
        return ["projection: not yet (needs both runs' ms/step in both states and ours' Hessian probe)"]
    if not logs:
        return ["projection: no record seed logs (*seed*.log) beside the record's script"]
    r_off, r_on = ours["ms_off"] / record["ms_off"], ours["ms_on"] / record["ms_on"]
    n = int(ours["calibration_batches"])
    share = math.ceil(n / RECORD_LOG_GPUS) / n  # each of 8 ranks collects its share of the batches
    reserve = ours["gptq_reserve_s"] + ours["reserve_factor"] * ours["probe_s"] * share
    lines, projected, actual = [], [], []
    for path in logs:
        text = Path(path).read_text(errors="replace")
        seed = {**parse_run(text, RECORD_FORMAT, skip_steps=plan["skip_steps"]),
                **golflog.training_end(text, RECORD_FORMAT)}
        if None in (seed["ms_off"], seed["ms_on"], seed["budget_s"], seed["steps"]):
            lines.append(f"  {Path(path).name}: no step times or stop line, left out")
            continue
        model_ratio = (steps_in(CHALLENGE_SECONDS - reserve, r_off * seed["ms_off"], r_on * seed["ms_on"])
                       / steps_in(seed["budget_s"], seed["ms_off"], seed["ms_on"]))
        projected.append(seed["steps"] * model_ratio)
        actual.append(seed["steps"])
        lines.append(f"  {Path(path).name}: record {seed['steps']} steps ({seed['ms_off']:.1f} / {seed['ms_on']:.1f} "
                     f"ms/step off / on, budget {seed['budget_s']:.1f} s) -> ours {projected[-1]:.0f}")
    if not projected:
        return ["projection: no usable record seed log"] + lines
    mean_p, mean_a = sum(projected) / len(projected), sum(actual) / len(actual)
    return [f"projected 8xH100 steps in {CHALLENGE_SECONDS:g} s: ours {mean_p:.0f}, the record's logs {mean_a:.0f} "
            f"({mean_p / mean_a:.3f}x; target >= {WHOLE_TARGETS['steps'][1]:g}x)",
            f"method: each seed log's ms/step off and on (its step lines and stop line; the switch at "
            f"{LOOP_ENABLE_FRAC} of the budget) times ours/record here ({r_off:.3f} off, {r_on:.3f} on); ours' budget "
            f"{CHALLENGE_SECONDS:g} s less its reserve on {RECORD_LOG_GPUS} GPUs ({ours['gptq_reserve_s']:g} + "
            f"{ours['reserve_factor']:g} x {ours['probe_s']:.2f} s probe x {share:.3f}, each rank's share of {n} "
            f"batches = {reserve:.2f} s), the record's its logged budget;",
            "  steps = record steps x (budget x (f / ms_off + (1 - f) / ms_on)) of ours / of the record. Assumes the "
            "one-GPU ratios (8 micro-batches a step) hold on 8 GPUs (one each) and on an H100", *lines]


def wait_for(workdir: Path, names: list[str], timeout: float) -> int:
    """0 once every named run has ended (whatever its state), 1 at the timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, results = collect(workdir)
        missing = [n for n in names if n not in results]
        if missing:
            raise SystemExit(f"--runs: no run named {', '.join(missing)} in {workdir} (runs: {', '.join(results)})")
        if all(results[n]["state"] not in ("waiting", "running") for n in names):
            print(", ".join(f"{n} {results[n]['state']}" for n in names), flush=True)
            return 0
        time.sleep(WAIT_POLL_SECONDS)
    print(f"timeout: {', '.join(n for n in names if results[n]['state'] in ('waiting', 'running'))} still going")
    return 1


# -----------------------------------------------------------------------------
# Command line
# -----------------------------------------------------------------------------

def add_launch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", type=Path, help="the record's train_gpt.py (--whole: the recipe's record)")
    p.add_argument("--data-dir", type=Path, required=True, help="the record's DATA_DIR layout (see above)")
    p.add_argument("--workdir", type=Path, required=True, help="a new folder for the runs and their logs")
    p.add_argument("--mode", choices=("parallel", "serial", "sequential"), default="parallel",
                   help="sequential is serial: one run after the other on the first GPUs")
    p.add_argument("--gpus", default="0,1", help="GPU indices, comma-separated")
    p.add_argument("--nproc", type=int, default=1, help="GPUs per run (torchrun when > 1)")
    p.add_argument("--steps", type=int, default=100, help="step-based schedule of N steps for both")
    p.add_argument("--seconds", type=float, default=0.0, help="a wallclock cap for both instead of --steps")
    p.add_argument("--log-every", type=int, default=5, help="TRAIN_LOG_EVERY for both")
    p.add_argument("--skip-steps", type=int, default=5, help="steps left out of the recurrence-off mean")
    p.add_argument("--ab", action="append", default=[], help="NAME:KEY=VALUE[,...]: a variant of ours")
    p.add_argument("--ab-script", action="append", default=[],
                   help="NAME=PATH: another copy of train_gpt.py (kernels.py beside it), run as ours is")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for every run")
    p.add_argument("--ref-env", action="append", default=[], help="KEY=VALUE for the record only")
    p.add_argument("--ours-env", action="append", default=[], help="KEY=VALUE for ours and its variants")
    p.add_argument("--ours-script", type=Path, default=OURS, help="our script to run (e.g. the shipped file that "
                   "make_record writes; default: this checkout's train_gpt.py)")
    p.add_argument("--full", action="store_true", help="let the runs finish (eval, GPTQ, ...)")
    p.add_argument("--whole", action="store_true", help="whole runs: --seconds cap, GPTQ and artifact, TTT off, "
                   "both scripts in --recipe's configuration; the report adds the whole-run figures")
    p.add_argument("--train-only", action="store_true", help="--whole: stop each run after its Hessians")
    p.add_argument("--record-first", action="store_true", help="on a shared lane, the record runs before ours")
    p.add_argument("--no-record", action="store_true", help="ours and its --ab variants only, each variant "
                   "against ours (e.g. --ab cdt:TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1)")
    p.add_argument("--recipe", choices=("1886", "2135"), default="1886",
                   help="--whole: our RECIPE and the record it is run against")
    p.add_argument("--dry-run", action="store_true", help="print each run's command and environment; start nothing")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_launch_args(sub.add_parser("launch", help="start every run detached and return"))
    add_launch_args(sub.add_parser("run", help="start every run, wait for them, report"))
    rep = sub.add_parser("report", help="figures from whatever logs exist")
    rep.add_argument("--workdir", type=Path, required=True)
    rep.add_argument("--json", action="store_true", help="print the figures as JSON too")
    rep.add_argument("--wait", type=float, default=0.0, help="first wait up to this many seconds for every "
                     "run to end (printing a state line each minute)")
    wait = sub.add_parser("wait", help="return once the named runs have ended (e.g. to use their GPU next)")
    wait.add_argument("--workdir", type=Path, required=True)
    wait.add_argument("--runs", required=True, help="run names, comma-separated (ours, record, --ab names)")
    wait.add_argument("--timeout", type=float, default=3600.0, help="give up (exit 1) after this many seconds")
    lane = sub.add_parser("_lane", help=argparse.SUPPRESS)
    lane.add_argument("--workdir", type=Path, required=True)
    lane.add_argument("--lane", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "_lane":
        run_lane(args.workdir, args.lane)
        return 0
    if args.command == "wait":
        return wait_for(args.workdir, args.runs.split(","), args.timeout)
    if args.command in ("launch", "run"):
        if args.steps and not args.seconds and args.steps * LOOP_ENABLE_FRAC < args.skip_steps + args.log_every:
            raise SystemExit(f"--steps {args.steps}: too few to log the recurrence-off state "
                             f"(switch at {LOOP_ENABLE_FRAC} x steps)")
        procs = launch(args, detach=args.command == "launch")
        if args.command == "launch" or args.dry_run:
            return 0
        for proc in procs:
            proc.wait()
    if not (args.workdir / "plan.json").exists():
        raise SystemExit(f"--workdir {args.workdir}: no plan.json (not a bench folder, or not launched)")
    plan, results = collect(args.workdir)
    deadline, polls = time.time() + getattr(args, "wait", 0.0), 0
    while any(r["state"] in ("waiting", "running") for r in results.values()) and time.time() < deadline:
        time.sleep(WAIT_POLL_SECONDS)
        plan, results = collect(args.workdir)
        polls += 1
        if polls % 12 == 0:
            print(time.strftime("%H:%M:%S"), ", ".join(f"{n} {r['state']} step {r['steps']}"
                                                       for n, r in results.items()), flush=True)
    print(report_text(plan, results))
    if getattr(args, "json", False):
        print(json.dumps({n: {k: v for k, v in r.items() if k != "tail"} for n, r in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
