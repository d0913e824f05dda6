"""The line formats of a train_gpt.py log (logs/<RUN_ID>.txt), read in one place for the scripts that turn
logs into records, statistics and plots. `facts` reads every fact a record needs, each with the line that
states it, so that a check can name the line that disagrees."""

import re
from pathlib import Path

FINAL_LABELS = ("final_prequant_exact", "final_roundtrip_exact", "final_ttt_exact")  # pre-quant, quantized, TTT
PER_SEED_FIELDS = {"seed", "run_id", "artifact_path"}  # config fields that may differ between seeds of one config
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
                ttt_compile="ttt_compile_warmup_seconds")
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
                training_seconds=float(training.group(1)) if training else None)
