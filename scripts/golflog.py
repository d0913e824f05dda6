"""The line formats of a train_gpt.py log (logs/<RUN_ID>.txt), read in one place for the scripts that turn
logs into records, statistics and plots. `facts` reads every fact a record needs, each with the line that
states it, so that a check can name the line that disagrees."""

import re
from dataclasses import dataclass
from pathlib import Path

FINAL_LABELS = ("final_prequant_exact", "final_roundtrip_exact", "final_ttt_exact")  # pre-quant, quantized, TTT
PER_SEED_FIELDS = {"seed", "run_id", "artifact_path", "prequant_path"}  # may differ between seeds of one config
# the phased TTT's global SGD after each phase: `ttt_global_sgd phase:1 docs:31 tokens:7751 steps:0 ...`
GLOBAL_SGD = re.compile(r"^ttt_global_sgd phase:\d+ docs:\d+ tokens:(\d+) steps:(\d+)", re.M)
NON_FINITE = re.compile(r"^(?:step:\d+/\d+ train_loss|\S*val_loss|\S*val_bpb)[^\n]*?:(?:[-+]?(?:nan|inf))\b",
                        re.M | re.I)


def read_log(path: Path) -> str:
    """The text of a log, or SystemExit naming why it cannot be one (missing, a folder, binary, not UTF-8)."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"{path}: no such file (give the logs/<RUN_ID>.txt of a train_gpt.py run)")
    if not path.is_file():
        raise SystemExit(f"{path}: not a file (give the logs/<RUN_ID>.txt of a train_gpt.py run, not a folder)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise SystemExit(f"{path}: binary data, not a train_gpt.py log (an artifact or an archive?)")
    return text


def final_score(text: str, label: str) -> tuple[float, float] | None:
    """(val_loss in nats, val_bpb) of a `<label> val_loss:... val_bpb:...` line, or None if the log has none."""
    match = re.search(rf"^{label} val_loss:([0-9.]+) val_bpb:([0-9.]+)", text, re.M)
    return (float(match.group(1)), float(match.group(2))) if match else None


def seed(text: str) -> int | None:
    match = re.search(r"^seed:(\d+)$", text, re.M)
    return int(match.group(1)) if match else None


def resolved_config(text: str) -> dict[str, str]:
    """The hyperparameters: the name:value lines logged before the model_params line (later such lines,
    like first_step_done_since_launch, are results), after the embedded sources."""
    head = run_lines(text).split("\nmodel_params:", 1)[0]
    return dict(re.findall(r"^([a-z_0-9]+):(\S*)$", head, re.M))


def config_differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """The config fields (other than the per-seed ones) whose values differ between two logs."""
    return sorted(k for k in (a.keys() | b.keys()) - PER_SEED_FIELDS if a.get(k) != b.get(k))


def embedded_sources(text: str) -> dict[str, str]:
    """{file name: source} of the code files the run logged first (`==== source of NAME ====` blocks)."""
    sources = {}
    for match in re.finditer(r"^==== source of (\S+) ====\n", text, re.M):
        name = match.group(1)
        end = text.find(f"\n==== end of {name} ====\n", match.end())
        if end >= 0 and name not in sources:
            sources[name] = text[match.end():end]
    return sources


def run_lines(text: str) -> str:
    """The log without the embedded sources: what the run itself printed."""
    for name, source in embedded_sources(text).items():
        text = text.replace(f"==== source of {name} ====\n{source}\n==== end of {name} ====\n", "", 1)
    return text


def failure(text: str) -> str | None:
    """Why a log is not a finished, healthy run (interrupted, non-finite loss, an ERROR line), or None."""
    lines = run_lines(text)
    for pattern, what in ((r"^[^\n]*\binterrupted\b[^\n]*$", "the run was interrupted"),
                          (r"^[^\n]*non-finite[^\n]*$", "the run stopped on a non-finite loss"),
                          (r"^ERROR:[^\n]*$", "the run reported an error")):
        match = re.search(pattern, lines, re.M | re.I)
        if match:
            return f"{what} ({match.group(0).strip()[:160]})"
    match = NON_FINITE.search(lines)
    if match:
        return f"a NaN or infinite value ({match.group(0).strip()[:160]})"
    return None


# ---- the run's other lines: `name:value name:value ...`, read into fields ----
UNIT = re.compile(r"^(-?[0-9.]+(?:e[-+]?\d+)?)(?:ms|s|GiB)?,?$")
STEP_LINE = re.compile(r"^step:(\d+)/(\d+) train_loss:(\S+) train_time:(\d+)ms[^\n]*", re.M)
SMI_GPU = re.compile(r"^\|\s+\d+\s+(NVIDIA [^|]*?)\s+(?:On|Off)\s+\|", re.M)
SMI_HEADER = re.compile(r"Driver Version:\s*(\S+)\s+CUDA Version:\s*(\S+)")


def line(lines: str, key: str) -> str | None:
    """The first line the run printed that starts with `key:` (or `key ` for the final-score lines)."""
    match = re.search(rf"^{re.escape(key)}[: ][^\n]*$", lines, re.M)
    return match.group(0) if match else None


def fields(text: str | None) -> dict[str, str]:
    """{name: value} of a line's `name:value` words; `device:cuda:0` is device -> cuda:0."""
    return dict(word.split(":", 1) for word in (text or "").split() if ":" in word.strip(":"))


def number(value: str | None) -> float | None:
    """A logged number without its unit (`2289ms`, `3.0s`, `1.2GiB`), or None."""
    match = UNIT.match(value or "")
    return float(match.group(1)) if match else None


def train_steps(lines: str) -> list[dict]:
    """The step lines: step, iterations, train_loss (as logged, 4 decimals), train_ms and the line."""
    return [dict(step=int(m.group(1)), iterations=int(m.group(2)), loss=m.group(3), ms=int(m.group(4)),
                 line=m.group(0)) for m in STEP_LINE.finditer(lines)]


def nvidia_smi(lines: str) -> dict | None:
    """The nvidia-smi table a GPU run logs: GPU names (one per GPU), driver and CUDA versions; None if absent."""
    header = SMI_HEADER.search(lines)
    if header is None:
        return None
    return dict(gpus=[g.strip() for g in SMI_GPU.findall(lines)], driver=header.group(1), cuda=header.group(2),
                line=header.group(0))


def facts(text: str) -> dict:
    """Every fact of a finished run that a record states, with the line that states it (`lines`)."""
    run = run_lines(text)
    keys = dict(env="python", model="model_params", train="train_time", data_end="train_data_access_end_seconds",
                bytes="artifact_model_bytes", total="artifact_total_bytes", eval="eval_time",
                ttt_timing="ttt_timing", peak="peak_memory_allocated",
                no_smi="nvidia-smi unavailable", first_step="first_step_done_since_launch", quantize="gptq",
                ttt_compile="ttt_compile_warmup_seconds", positions="ttt_position_nats")
    lines = {name: line(run, key) for name, key in keys.items()}
    scores = {}
    for label in FINAL_LABELS:
        lines[label] = line(run, label)
        if lines[label]:
            f = fields(lines[label])
            scores[label] = dict(nats=number(f.get("val_loss")), bpb=number(f.get("val_bpb")),
                                 ms=number(f.get("eval_time")))
    training = re.search(r"\(training ([0-9.]+),", lines["data_end"] or "")
    return dict(config=resolved_config(text), sources=embedded_sources(text), lines=lines, scores=scores,
                **{name: fields(lines[name]) for name in keys}, steps=train_steps(run), smi=nvidia_smi(run),
                training_seconds=float(training.group(1)) if training else None,
                global_sgd=[(int(tokens), int(steps)) for tokens, steps in GLOBAL_SGD.findall(run)])


# ---- training-run figures of ours and of the records' scripts (bench_vs_reference.py), line by line ----

@dataclass
class LogFormat:
    """One script's training lines. Groups: step -> (step, cumulative ms, or cumulative tokens/s where
    cumulative_tok_s); switch -> the step the recurrence comes on; peak -> GiB (MiB where peak_mib); stop_line ->
    (train ms, steps) at the end of training; hessians -> (count, seconds); first_step -> s since launch."""
    step: re.Pattern
    switch: re.Pattern
    peak: re.Pattern
    batch_tokens: re.Pattern
    stop: re.Pattern  # the short bench stops the run after this line (training figures complete)
    stop_line: re.Pattern
    hessians: re.Pattern
    peak_mib: bool = False
    cumulative_tok_s: bool = False


# Record: `4500/20000 train_loss: 2.8490 train_time: 9.1m tok/s: 6473906` (train_time in minutes, 0.1 m
# resolution: the cumulative time is taken from tok/s = step * batch_tokens / seconds instead).
RECORD_FORMAT = LogFormat(
    step=re.compile(r"^(\d+)/\d+ train_loss: [0-9.naif]+ train_time: [0-9.]+m tok/s: (\d+)", re.M),
    switch=re.compile(r"^layer_loop:enabled step:(\d+)", re.M),
    peak=re.compile(r"^peak memory allocated: (\d+) MiB", re.M),
    batch_tokens=re.compile(r"^\s*train_batch_tokens: (\d+)\s*$", re.M),
    stop=re.compile(r"^peak memory allocated:"),
    stop_line=re.compile(r"^stopping_early: wallclock_cap train_time: (\d+)ms step: (\d+)/", re.M),
    hessians=re.compile(r"^GPTQ:collected (\d+) Hessians in ([0-9.]+)s", re.M),
    peak_mib=True, cumulative_tok_s=True)

# Ours: `step:10/100 train_loss:5.1234 train_time:4321ms step_avg:432.10ms lr_mult:1.000`
OURS_FORMAT = LogFormat(
    step=re.compile(r"^step:(\d+)/\d+ train_loss:[0-9.naif]+ train_time:(\d+)ms", re.M),
    switch=re.compile(r"^depth_recurrence:on step:(\d+)", re.M),
    peak=re.compile(r"^peak_memory_allocated:([0-9.]+)GiB", re.M),
    batch_tokens=re.compile(r"^train_batch_tokens:(\d+)\s*$", re.M),
    # on a CPU there is no peak-memory line; the pre-quantization score is the next line after training
    stop=re.compile(r"^(peak_memory_allocated:|final_prequant_exact )"),
    stop_line=re.compile(r"^train_time:(\d+)ms steps:(\d+) ", re.M),
    hessians=re.compile(r"^gptq hessians:(\d+) ", re.M))  # count only: the time is in the data-access line

# Ours: `train_data_access_end_seconds:58.58 (training 40.79, then EMA weights and GPTQ Hessians; reserved 19.47
# = GPTQ_RESERVE_SECONDS + 1.25 x 15.18 s measured before the clock) cap:60.0s`
DATA_END = re.compile(r"^train_data_access_end_seconds:([0-9.]+) \(training ([0-9.]+),.*?reserved ([0-9.]+) = "
                      r"GPTQ_RESERVE_SECONDS \+ ([0-9.]+) x ([0-9.]+) s measured", re.M)
# The record: `gptq:reserving 0s, effective=599500ms` (its training budget)
RECORD_BUDGET = re.compile(r"^gptq:reserving [0-9.]+s, effective=(\d+)ms", re.M)


def training_end(text: str, fmt: LogFormat) -> dict:
    """How a capped run's training ended and when it last read training data, from either script's log:
    stop_s and steps (the stop line), budget_s (cap less reserve), hessians and hessian_s, data_end_s, and for
    ours the Hessian probe before the clock (probe_s, reserve_factor) and its config's gptq_reserve_s and
    calibration_batches. The record logs no data-access end: it is
    stop_s + hessian_s there (its Hessians read training data after its cap), marked data_end_derived. A field a
    log lacks is None."""
    out = dict(stop_s=None, steps=None, budget_s=None, hessians=None, hessian_s=None, data_end_s=None,
               probe_s=None, reserve_factor=None, gptq_reserve_s=None, calibration_batches=None,
               data_end_derived=False)
    stop = fmt.stop_line.search(text)
    if stop:
        out.update(stop_s=int(stop.group(1)) / 1000, steps=int(stop.group(2)))
    hessians = fmt.hessians.search(text)
    if hessians:
        out["hessians"] = int(hessians.group(1))
        if fmt is RECORD_FORMAT:
            out["hessian_s"] = float(hessians.group(2))
    if fmt is RECORD_FORMAT:
        budget = RECORD_BUDGET.search(text)
        out["budget_s"] = int(budget.group(1)) / 1000 if budget else None
        if out["stop_s"] is not None and out["hessian_s"] is not None:
            out.update(data_end_s=out["stop_s"] + out["hessian_s"], data_end_derived=True)
        return out
    end, config = DATA_END.search(text), resolved_config(text)
    cap = number(config.get("max_wallclock_seconds"))
    out.update(gptq_reserve_s=number(config.get("gptq_reserve_seconds")),
               calibration_batches=number(config.get("gptq_calibration_batches")))
    if end:
        data_end, training, reserve, factor, probe = (float(g) for g in end.groups())
        out.update(data_end_s=data_end, hessian_s=data_end - training, probe_s=probe, reserve_factor=factor,
                   budget_s=cap - reserve if cap else None)
    return out
